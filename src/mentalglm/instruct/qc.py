"""Automatic quality control of generated explanations (`mentalglm qc`).

Every check returns a reason string when it rejects, so the QC report can say exactly why a
sample was dropped. The independent verifier predicts the label from the explanation alone
(as MentalLLaMA did): an explanation that does not let a reader recover the gold label does
not explain it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mentalglm.backends.copy_guard import comparable
from mentalglm.instruct.description import by_description
from mentalglm.instruct.grounding import QUOTES, STATES
from mentalglm.tasks.layout import LABEL_SEPARATOR, render_answer
from mentalglm.tasks.parsing import (
    argued_by_denial,
    cjk_share,
    claimed_labels,
    denied_own,
    find_mentions,
    parse,
)
from mentalglm.tasks.schema import Task

_QUOTE = re.compile(r"[“\"「『‘]([^”\"」』’]{2,})[”\"」』’]")
_REFUSAL = re.compile(
    r"抱歉|对不起|我无法|我不能|无法回答|无法提供|作为一个?(?:AI|人工智能|语言模型)|请寻求专业|I'?m sorry|I cannot|as an AI",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class QCConfig:
    min_chars: int = 30
    max_chars: int = 400
    min_cjk_share: float = 0.6
    # Share of the explanation that may be a verbatim run of the post before it counts as a copy.
    max_copy_share: float = 0.8
    near_duplicate_jaccard: float = 0.85
    require_evidence_quote: bool = True


class Verifier(Protocol):
    """Predicts a task's label ids from an explanation alone."""

    name: str

    def predict(self, task: Task, explanations: Sequence[str]) -> list[tuple[str, ...]]: ...


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    abstained: list[str] = field(default_factory=list)  # checks with nothing to read (the verifier on bare denials)
    read_by: dict[str, str] = field(default_factory=dict)  # check -> its reader (the verifier or DEFINITIONS)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": self.checks, "abstained": self.abstained,
                "read_by": self.read_by}


normalise = comparable  # QC and the decode-time copy guard compare text the same way


# A run this long shared with a label's definition is the prompt read back, not an explanation ("这句原话表达了失落、
# 难过、遗憾、孤独、失望或哀伤等消极情绪"); shorter shared phrases ("没有表达明确的自杀意图") are how one argues a label.
# The same bound holds for the post outside the quotation marks: prose that goes on copying the post after its quote
# ("…”，她觉得自己没用，记性越来越差，什么都能忘…") explains nothing.
MAX_DEFINITION_RUN = 16
# "不符合<what>的定义" (outside the quotation of the post) says a definition does not fit: the explanation's own label
# when <what> names it or names no label at all ("不符合描述为笼统、负面的标签的定义"), unless <what> is what the own
# label is the absence of (its ``argued_by_denying_zh``: "不符合描述具体行为或事件的定义" argues 乱贴标签) or rules
# out others ("不符合读心术的定义", "不符合其他认知歪曲的定义").
_NOT_FITTING = re.compile(r"不(?:太|完全|怎么|是很)?(?:符合|属于|满足)([^，,。；;！？]{1,24}?)的?定义")
_OTHERS = re.compile(r"其他|其它|别的|另外")
_CONTRADICTION = re.compile(r"与[^，。；]{0,12}(定义|标注|标签)(并)?不(符|一致)|(并)?不(符合|属于|支持)(该|这一|此|这个)?(标注|定义|标签|类别|判断)")


# A sentence that opens with a condition says what would change the reading ("如果帖子中提到自杀计划，标注就会变为高自杀
#风险"): the issue asks explanations for it, so it may name other labels and say the label would no longer fit. The
# checks of what an explanation asserts (other labels, contradiction, the verifier) read the other sentences.
_CONDITIONAL = re.compile(r"^(?:但是?|而且?|不过|反之|相反)?[，,]?(?:如果|假如|假设|倘若|要是|若|一旦)")
_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?\n]*")


def asserted_part(explanation: str) -> str:
    """The explanation without its conditional sentences: what it asserts about this post."""
    return "".join(s for s in _SENTENCE.findall(explanation) if not _CONDITIONAL.match(s.strip()))


# The verifier is a bag-of-n-grams model trained on posts: it cannot read negation, so "但没有表达明确的自杀意图" in an
# explanation of low risk reads as high risk to it (14 of 40 first drafts of the 1.5B teacher). It reads the
# explanation without the clauses that deny something.
# "并不表达…" / "尚未提到…" deny as "没有" does (the 0.5B's low-risk drafts use them).
_DENIAL = re.compile(r"没有|没什么|并未|未曾|不是|并非|不会|不再|而非|无明显|未见|不存在|不涉及|不属于|并不|尚未|"
                     r"未提及|未提到|未表达|不代表|不意味|谈不上|算不上|不足以")
_CLAUSE = re.compile(r"[^，,；;。！？!?\n]+[，,；;。！？!?\n]*")
_BRACKETED = re.compile(r"「([^」]*)」")


def undenied(text: str) -> str:
    """``text`` without the clauses whose own words (outside the quotation of the post) deny something (see _DENIAL):
    a denial inside the quote ("我再也不会醒来了") is the post's, not the explanation's."""
    return "".join(c for c in _CLAUSE.findall(text) if not _DENIAL.search(_QUOTE.sub("", c)))


_CJK_PAIR = re.compile(r"(?=([\u4e00-\u9fff]{2}))")


def _cjk_bigrams(text: str) -> set[str]:
    return set(_CJK_PAIR.findall(text))


def confusable(task: Task, name: str) -> bool:
    """A label name that shares a pair of Chinese characters with another label's name of the task (低自杀风险 /
    高自杀风险, 罪责归己 / 罪责归他, 无抑郁 / 抑郁): a bag of n-grams cannot tell the two apart."""
    label = task.label_by_any_name(name)
    return label is not None and any(_cjk_bigrams(label.zh) & _cjk_bigrams(other.zh)
                                     for other in task.labels if other.id != label.id)


def _without_confusable_names(task: Task, quote: str) -> str:
    """A verdict in corner brackets with its confusable names left out (the brackets too when none is left);
    anything else as it was."""
    if not is_verdict(task, quote):
        return f"「{quote}」"
    kept = [name for name in quote.split(LABEL_SEPARATOR) if not confusable(task, name)]
    return f"「{LABEL_SEPARATOR.join(kept)}」" if kept else ""


def verifier_reading(explanation: str, task: Task | None = None) -> str:
    """What the verifier reads: the asserted sentences without clauses that deny (see _DENIAL) and, given the task,
    without the confusable names of a verdict in corner brackets. The grounded grammar states the decided label by
    construction (判断为「低自杀风险」), and a bag of n-grams trained on posts reads the 自杀 of 低自杀风险 as high
    risk, refusing low-risk explanations for the label they were asked to state. A distinct name (「悲伤」) stays
    read: without it the emotion verifier, trained on posts where descriptive prose is neutral, read fair
    explanations ("感到非常失落和难过") as 中性 (builder, same 40 drafts: first-attempt pass 77.5 -> 55 %)."""
    reading = undenied(asserted_part(explanation))
    if task is None:
        return reading
    return _BRACKETED.sub(lambda m: _without_confusable_names(task, m.group(1)), reading)


# The words the grounded grammar writes around the quote (punctuation is left out by ``normalise``).
_TEMPLATE = re.compile(f"{STATES}|{QUOTES}")


def without_quotes(explanation: str) -> str:
    """The explanation with everything in quotation marks or corner brackets emptied (the quotations of the post and
    the stated verdict 判断为「…」): what its own words argue, for a verifier that also chose the quoted clauses (the
    builder's quote hints) and should be credited neither with the quote's reading nor with the label it was given."""
    return _QUOTE.sub("“”", explanation)


def affirms_nothing(reading: str) -> bool:
    """Whether a verifier reading holds nothing past the grammar's own words and the quotation of the post."""
    return not normalise(_TEMPLATE.sub("", _QUOTE.sub("", reading)))


def _longest_common_run(a: str, b: str) -> int:
    """Length of the longest common substring (dynamic programming; explanations are short)."""
    if not a or not b:
        return 0
    best, previous = 0, [0] * (len(b) + 1)
    for ch in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, 1):
            if ch == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def evidence_quotes(explanation: str) -> list[str]:
    return [m.group(1) for m in _QUOTE.finditer(explanation)]


def is_verdict(task: Task, quote: str) -> bool:
    """A label name, a list of them (「以偏概全、乱贴标签」) or the task's "nothing evident": the verdict, not evidence."""
    if task.screen is not None and quote == task.screen.none_zh:
        return True
    return all(task.label_by_any_name(name) is not None for name in quote.split(LABEL_SEPARATOR))


def grounded_share(explanation: str, post: str, task: Task | None = None) -> float | None:
    """Share of quoted evidence that occurs in the post (None when nothing is quoted).

    Quoted label names (“愤怒”, or a screened task's 「未见明显认知歪曲」) are the verdict, not evidence, and are left out.
    """
    quotes = evidence_quotes(explanation)
    if task is not None:
        quotes = [q for q in quotes if not is_verdict(task, q) and q not in task.question]
    if not quotes:
        return None
    post_norm = normalise(post)
    return sum(normalise(q) in post_norm for q in quotes if normalise(q)) / len(quotes)


# Each check: (name, function(task, labels, explanation, post, config) -> reason or None).
CheckFn = Callable[[Task, Sequence[str], str, str, QCConfig], str | None]


def check_layout(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    parsed = parse(task, render_answer(task, labels, explanation), mode="strict")
    if not parsed.valid or set(parsed.labels) != set(labels):
        return "answer layout does not parse back to the gold label"
    return None


def check_language(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    share = cjk_share(explanation)
    return None if share >= config.min_cjk_share else f"not Chinese enough (CJK share {share:.2f})"


def check_length(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    n = len(explanation)
    if n < config.min_chars:
        return f"too short ({n} < {config.min_chars} characters)"
    if n > config.max_chars:
        return f"too long ({n} > {config.max_chars} characters)"
    return None


def check_refusal(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    match = _REFUSAL.search(explanation)
    return f"refusal or disclaimer instead of an explanation ({match.group(0)!r})" if match else None


def check_copy(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    expl, src = normalise(explanation), normalise(post)
    if expl and _longest_common_run(expl, src) / len(expl) > config.max_copy_share:
        return "copies the post instead of explaining it"
    if _longest_common_run(normalise(_QUOTE.sub("", explanation)), src) >= MAX_DEFINITION_RUN:
        return f"copies {MAX_DEFINITION_RUN}+ characters of the post outside its quotation instead of explaining"
    for label in task.labels:  # copying a definition from the prompt is not an explanation either
        definition = normalise(label.definition_zh)
        if definition and len(definition) >= 15 and definition in expl and len(expl) < 1.3 * len(definition):
            return "copies a label definition from the prompt"
        if definition and _longest_common_run(expl, definition) >= MAX_DEFINITION_RUN:
            return f"repeats {MAX_DEFINITION_RUN}+ characters of the definition of {label.zh} instead of explaining"
    return None


def check_contradiction(task: Task, labels: Sequence[str], explanation: str, post: str,
                        config: QCConfig) -> str | None:
    """An explanation must not say that its own label does not fit ("…这与自杀风险的定义不符", written by the 0.5B
    for a post it was asked to explain as low risk), nor deny what the label says of the post ("…但并没有表达任何情绪"
    of a post explained as 悲伤: the label's ``contradicted_by_denying_zh``, written by the tuned explainer)."""
    asserted = asserted_part(explanation)
    match = _CONTRADICTION.search(asserted)
    if match:
        return f"says the label does not fit ({match.group(0)!r})"
    own_words = _QUOTE.sub("", asserted)  # what the explanation says, not what it quotes of the post
    denied_for_gold = [p for label in labels for p in task.label(label).argued_by_denying_zh]
    for match in _NOT_FITTING.finditer(own_words):
        what = match.group(1)
        named = {m.label_id for m in find_mentions(task, what)}
        rules_out_others = bool(named - set(labels)) or bool(_OTHERS.search(what))
        if named & set(labels) or not (rules_out_others or any(p in what for p in denied_for_gold)):
            return f"says the label does not fit ({match.group(0)!r})"
    denied = denied_own(task, own_words) & set(labels)
    if denied:
        return "denies what its label says of the post (" + "、".join(task.label(d).zh for d in sorted(denied)) + ")"
    return None


def check_other_labels(task: Task, labels: Sequence[str], explanation: str, post: str,
                       config: QCConfig) -> str | None:
    """The explanation must not assert a label the gold answer does not have, by name or by what defines it
    (the label's ``claims_zh``: "所以是自杀意图" argues for high risk without naming it). A conditional sentence
    ("如果帖子中提到自杀计划，就会是高自杀风险") names what would change the reading and asserts nothing."""
    explanation = asserted_part(explanation)
    named = {m.label_id for m in find_mentions(task, explanation) if not m.negated} - set(labels)
    claimed = claimed_labels(task, explanation) - set(labels) - named
    if named or claimed:
        return "argues for another label: " + "、".join(
            [task.label(o).zh for o in sorted(named)] + [f"{task.label(o).zh}（{'、'.join(task.label(o).claims_zh)}）"
                                                         for o in sorted(claimed)])
    return None


def check_evidence(task: Task, labels: Sequence[str], explanation: str, post: str, config: QCConfig) -> str | None:
    if not config.require_evidence_quote:
        return None
    share = grounded_share(explanation, post, task)
    if share is None:
        return "quotes no evidence from the post"
    if share < 1:  # one quote the post lacks is a fabrication, whatever else is quoted right
        return "quoted evidence does not occur in the post" if share == 0 else \
            "part of the quoted evidence does not occur in the post"
    return None


CHECKS: dict[str, CheckFn] = {
    "layout": check_layout,
    "language": check_language,
    "length": check_length,
    "not_refusal": check_refusal,
    "not_copy": check_copy,
    "no_other_label": check_other_labels,
    "not_contradicting": check_contradiction,
    "evidence": check_evidence,
}


def check_sample(task: Task, labels: Sequence[str], explanation: str | None, post: str,
                 config: QCConfig = QCConfig()) -> Verdict:
    if not explanation:
        return Verdict(False, ["no explanation"], {"generated": False})
    verdict = Verdict(True)
    for name, fn in CHECKS.items():
        reason = fn(task, labels, explanation, post, config)
        verdict.checks[name] = reason is None
        if reason:
            verdict.passed = False
            verdict.reasons.append(f"{name}: {reason}")
    return verdict


DEFINITIONS = "definitions"  # the reader of an explanation that argues only by denial (``by_definition``)
DESCRIPTIONS = "descriptions"  # the reader of the task's label descriptions (instruct/description.py)


def by_definition(task: Task, explanation: str) -> tuple[str, ...] | None:
    """The labels an explanation argues only by denying (outside the quotation of the post) what the task declares
    a label to be the absence of (``argued_by_denying_zh``; what counts as a denial: tasks/parsing.py): "…但没有
    明确表达自杀意图、计划、方法或时间" argues low risk, distress without a plan (and argues against high for a post
    decided high); "没有明显的情绪倾向" neutral; "而不是描述具体的行为" labeling. A label the explanation names
    negated ("不属于乱贴标签") is not argued. None where the denials argue no label the classifier decides between
    (or, single-label, more than one)."""
    text = _QUOTE.sub("", asserted_part(explanation))
    named_negated = {m.label_id for m in find_mentions(task, text) if m.negated}
    argued = (argued_by_denial(task, text) - named_negated) & set(task.classifier_labels)
    if not argued or (len(argued) > 1 and not task.is_multi_label):
        return None
    return tuple(label for label in task.classifier_labels if label in argued)


@dataclass(frozen=True)
class Reading:
    """The labels an explanation argues and who read them (the verifier, or ``DEFINITIONS``); ``described``: what
    the task's descriptions read (instruct/description.py), for a task that declares them."""

    labels: tuple[str, ...]
    reader: str
    described: tuple[str, ...] | None = None

    def agreeing_reader(self, task: Task, gold: Sequence[str]) -> str | None:
        """Who reads the gold label(s) in the explanation: the first reader, else the descriptions, else None."""
        if agrees(task, self.labels, gold):
            return self.reader
        if self.described is not None and agrees(task, self.described, gold):
            return DESCRIPTIONS
        return None

    def agrees(self, task: Task, gold: Sequence[str]) -> bool:
        return self.agreeing_reader(task, gold) is not None


def read_verdicts(task: Task, verifier: Verifier, explanations: Sequence[str]) -> list[Reading | None]:
    """What each explanation argues, or None where there is nothing to read (the verifier abstains).

    The verifier reads what the explanation asserts (``verifier_reading``). One that affirms nothing but the label,
    the quote and denials gives it an empty text, whose reading is the training prior (SOS-HL: P(high) 0.6), not the
    explanation's argument: there the task's definitions read the denials (``by_definition``), else abstain. A task
    whose labels declare ``cues_zh`` is also read by its descriptions (``by_description``): an explanation passes
    when either reader reads its label, since each refuses fair explanations the other reads (a classifier trained on
    posts does not know "推及所有事情"; a description does not know the posts' words)."""
    readings = [verifier_reading(explanation, task) for explanation in explanations]
    judged = {i for i, reading in enumerate(readings) if not affirms_nothing(reading)}
    predicted = iter(verifier.predict(task, [readings[i] for i in sorted(judged)]) if judged else [])
    described = by_description(task, readings)
    read: list[Reading | None] = []
    for i, explanation in enumerate(explanations):
        if i in judged:  # the predictions come in index order
            read.append(Reading(tuple(next(predicted)), verifier.name, described[i]))
            continue
        labels = by_definition(task, explanation)
        read.append(Reading(labels, DEFINITIONS, described[i]) if labels is not None else None)
    return read


def agrees(task: Task, read: Sequence[str], gold: Sequence[str]) -> bool:
    """QC's rule: the same label; multi-label, some overlap and nothing the gold lacks."""
    if task.is_multi_label:
        return bool(set(read) & set(gold)) and not set(read) - set(gold)
    return tuple(read) == tuple(gold)


def apply_verifier(task: Task, verifier: Verifier, items: Sequence[tuple[Sequence[str], str]],
                   verdicts: Sequence[Verdict]) -> None:
    """Add the verifier's check: the labels read from the explanation alone (``read_verdicts``) must agree with the
    gold (``agrees``); where nothing can be read it abstains, and the rule checks (no_other_label, contradiction)
    still apply. A verdict records who read it (``Verdict.read_by``)."""
    if not items:
        return
    read = read_verdicts(task, verifier, [explanation for _, explanation in items])
    for (gold, _), verdict, reading in zip(items, verdicts, read, strict=True):
        if reading is None:
            verdict.abstained.append("verifier")
            continue
        agreeing = reading.agreeing_reader(task, gold)
        ok = agreeing is not None
        verdict.checks["verifier"] = ok
        verdict.read_by["verifier"] = agreeing or reading.reader
        if not ok:
            verdict.passed = False
            shown = "、".join(task.label(p).zh for p in reading.labels) or "无"
            reader = "the task's definitions (what its denials argue)" if reading.reader == DEFINITIONS else reading.reader
            also = "" if reading.described is None else \
                f" (its descriptions read {'、'.join(task.label(p).zh for p in reading.described)})"
            verdict.reasons.append(f"verifier: {reader} reads the explanation as {shown}{also}")


def _shingles(text: str, n: int = 5) -> set[str]:
    norm = normalise(text)
    return {norm[i:i + n] for i in range(max(1, len(norm) - n + 1))}


def near_duplicates(explanations: Sequence[str], threshold: float) -> set[int]:
    """Indexes of explanations that nearly repeat an earlier one (character 5-gram Jaccard)."""
    seen: list[set[str]] = []
    duplicates: set[int] = set()
    for i, text in enumerate(explanations):
        grams = _shingles(text)
        if any(len(grams & other) / max(1, len(grams | other)) >= threshold for other in seen):
            duplicates.add(i)
        else:
            seen.append(grams)
    return duplicates


def summarise(rows: Sequence[tuple[str, Verdict]]) -> dict[str, Any]:
    """Pass rates per check and per task, and the most common rejection reasons."""
    per_task: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for task_id, verdict in rows:
        counter = per_task[task_id]
        counter["n"] += 1
        counter["passed"] += verdict.passed
        for name, ok in verdict.checks.items():
            counter[f"checked:{name}"] += 1
            counter[f"ok:{name}"] += ok
        counter.update(f"abstained:{name}" for name in verdict.abstained)
        reasons.update(r.split(":", 1)[0] for r in verdict.reasons)
    out: dict[str, Any] = {"tasks": {}, "rejections_by_check": dict(reasons.most_common())}
    for task_id, counter in sorted(per_task.items()):
        checks = {name.split(":", 1)[1]: round(counter[f"ok:{name.split(':', 1)[1]}"] / counter[name], 4)
                  for name in counter if name.startswith("checked:")}
        out["tasks"][task_id] = {"n": counter["n"], "passed": counter["passed"],
                                 "pass_rate": round(counter["passed"] / counter["n"], 4), "check_pass_rates": checks,
                                 "abstained": {name.split(":", 1)[1]: counter[name] for name in counter
                                               if name.startswith("abstained:")}}
    total = sum(c["n"] for c in per_task.values())
    out["overall"] = {"n": total, "passed": sum(c["passed"] for c in per_task.values()),
                      "pass_rate": round(sum(c["passed"] for c in per_task.values()) / total, 4) if total else None}
    return out
