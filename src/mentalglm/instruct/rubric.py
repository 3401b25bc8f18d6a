"""The rubric experts rate C-IMHI answers by: four scales with every point spelled out, and the rater's guide.

The wording is what raters see (dropdowns, the instructions tab); the codes are what agreement is computed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["ordinal", "nominal"]  # krippendorff's names for the two levels used here


@dataclass(frozen=True)
class Scale:
    """One rating column: the answers a rater may give, their numeric codes and the wording raters see."""

    key: str
    zh: str
    choices: tuple[tuple[str, int], ...]  # (text in the dropdown, code), in scale order
    level: Level
    rule_en: str
    rule_zh: str
    aliases: tuple[tuple[str, int], ...] = ()

    @property
    def codes(self) -> list[int]:
        return [code for _, code in self.choices]

    @property
    def allowed(self) -> str:
        return ", ".join(text for text, _ in self.choices)

    def parse(self, raw: Any) -> int | None:
        """The code of a cell; None when empty. Excel may hand back 2, 2.0 or "2" for the same choice."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        text = str(raw).strip().lower()
        lookup = {name.lower(): code for name, code in (*self.choices, *self.aliases)}
        if isinstance(raw, bool) or text not in lookup:
            raise ValueError(f"{self.key} value {raw!r} is out of range; allowed: {self.allowed}")
        return lookup[text]


def _ordinal(low: int, high: int) -> tuple[tuple[str, int], ...]:
    return tuple((str(v), v) for v in range(low, high + 1))


SCALES: tuple[Scale, ...] = (
    Scale(
        "consistency", "一致性", _ordinal(0, 2), "ordinal",
        "Does the explanation support the gold label? 0 = contradicts the label; 1 = partly supports it "
        "(relevant but incomplete or mixed); 2 = fully supports it.",
        "解释是否支持所给标签？0 = 与标签矛盾；1 = 部分支持（相关但不完整或前后不一）；2 = 完全支持。",
    ),
    Scale(
        "reliability", "可靠性", _ordinal(1, 5), "ordinal",
        "Factual grounding: are the claims grounded in the post? 1 = largely invented (facts, quotes or events "
        "the post does not contain); 2 = several claims not supported by the post, or a quote that is not in it; "
        "3 = mostly grounded, but at least one unsupported claim; 4 = grounded, with minor over-interpretation "
        "that does not change the conclusion; 5 = every claim is grounded in the post, no invented facts.",
        "事实依据：解释中的陈述是否都能在帖子中找到依据？1 = 大部分为编造（帖子中没有的事实、引文或事件）；"
        "2 = 多处陈述在帖子中没有依据，或引用了帖子中没有的原话；3 = 大体有依据，但至少有一处没有依据的陈述；"
        "4 = 有依据，仅有轻微过度解读，不影响结论；5 = 所有陈述均有帖子依据，没有编造的事实。",
    ),
    Scale(
        "professionalism", "专业性", _ordinal(1, 5), "ordinal",
        "Is the language appropriate for clinical use? 1 = stigmatising and diagnostic, or harmful (e.g. "
        "trivialises risk); 2 = contains a stigmatising term or reads as a diagnosis; 3 = acceptable but "
        "judgemental, alarmist or casual in places; 4 = appropriate, with minor wording issues; "
        "5 = appropriate clinical language, no stigmatising terms, not a diagnosis.",
        "用语是否符合临床专业要求？1 = 含污名化表述且下诊断，或有害（如轻视风险）；2 = 含污名化词语，或读起来像诊断；"
        "3 = 尚可，但部分措辞带评判、危言耸听或过于随意；4 = 恰当，仅有轻微措辞问题；"
        "5 = 临床用语恰当，无污名化词语，不构成诊断。",
    ),
    Scale(
        "accept", "是否接受", (("yes", 1), ("no", 0)), "nominal",
        "Accept this sample for training as it is? yes / no. Say no when the label is wrong, the explanation "
        "contradicts it, invents facts, stigmatises or diagnoses.",
        "该样本能否原样用于训练？yes（是）/ no（否）。标签错误、解释与标签矛盾、编造事实、含污名化表述或下诊断时请选 no。",
        aliases=(("是", 1), ("否", 0), ("y", 1), ("n", 0)),
    ),
)
SCALE_BY_KEY = {scale.key: scale for scale in SCALES}
ACCEPT = SCALE_BY_KEY["accept"]


def instructions_text(rater: str) -> list[str]:
    """The rater-facing guide, Chinese then English, with every scale point spelled out."""
    lines = [
        f"评分员 / Rater: {rater}",
        "",
        "请在 samples 表中为每一行填写 consistency、reliability、professionalism、accept 四列（下拉选择），comment 可选。",
        "不要修改 sample_id、task、post、gold_label、explanation 列，也不要增删行；导入时按 sample_id 核对。",
        "帖子中的 [姓名]、[电话]、@[用户] 等为脱敏占位符，不算编造。解释仅供专业人员参考，不构成医学诊断。",
        "",
    ]
    lines += [f"{s.key}（{s.zh}）：{s.rule_zh}" for s in SCALES]
    lines += [
        "",
        "Fill consistency, reliability, professionalism and accept (dropdowns) for every row of the samples "
        "tab; comment is optional.",
        "Do not edit sample_id, task, post, gold_label or explanation, and do not add or delete rows: the "
        "import checks every sample_id.",
        "Placeholders such as [姓名], [电话] and @[用户] come from PII scrubbing and are not invented facts. "
        "Explanations are decision support, not a diagnosis.",
        "",
    ]
    lines += [f"{s.key}: {s.rule_en}" for s in SCALES]
    return lines
