"""Read labels back from model answers: named parse steps, chained as each task declares.

As in lm-evaluation-harness (a task's ``filter_list`` names functions from a filter registry), every task
names under ``parsing`` in its YAML the steps of two filters that are reported side by side: ``strict``
accepts only the answer layout the model was trained to write (so it measures format compliance too) and
``flexible`` looks for label names anywhere it reasonably can (so it measures what the model meant). A filter
tries its steps in order; the first step that reads any label decides, then the task's cardinality applies.
Neither filter ever maps an unreadable answer to a default class: such answers come back ``valid=False`` and
are scored as wrong.

The steps registered here read the C-IMHI layout ("标签：…\\n推理：…", see ``tasks.layout``) and the IMHI
layout ("<label sentence>. Reasoning: …"); the explanation is always the text after the reasoning marker.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal

from mentalglm.tasks.layout import LABEL_PREFIX
from mentalglm.tasks.schema import Label, Task

Mode = Literal["strict", "flexible"]
MODES: tuple[Mode, ...] = ("strict", "flexible")


@dataclass(frozen=True)
class Parsed:
    """Label ids read from one answer; ``valid=False`` is an explicit INVALID, never a default class."""

    labels: tuple[str, ...]
    valid: bool
    mode: str
    explanation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}


ParseStep = Callable[[Task, str], Sequence[str]]
"""The label ids one step reads from an answer; empty when it reads none (the filter's next step is tried)."""
_STEPS: dict[str, ParseStep] = {}


def register_parse_step(name: str) -> Callable[[ParseStep], ParseStep]:
    """Plug in a step that task YAMLs can name under ``parsing``."""

    def decorate(fn: ParseStep) -> ParseStep:
        if name in _STEPS:
            raise ValueError(f"a parse step named {name!r} is already registered")
        _STEPS[name] = fn
        return fn

    return decorate


def parse_step(name: str) -> ParseStep:
    """The registered step ``name``, or a KeyError that suggests the closest name."""
    step = _STEPS.get(name)
    if step is None:
        close = difflib.get_close_matches(name, list(_STEPS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no parse step named {name!r}.{hint} Registered steps: {', '.join(sorted(_STEPS))}")
    return step


def check_parsing(parsing: dict[str, tuple[str, ...]], origin: str) -> None:
    """A declaration names both filters, each with at least one registered step (raises ValueError naming the fix)."""
    if set(parsing) != set(MODES):
        raise ValueError(f"{origin}: parsing must name the steps of exactly the filters {', '.join(MODES)} "
                         f"(got {', '.join(parsing) or 'none'}); registered steps: {', '.join(sorted(_STEPS))}")
    for mode, steps in parsing.items():
        if not steps:
            raise ValueError(f"{origin}: parsing.{mode} names no step; registered steps: {', '.join(sorted(_STEPS))}")
        for name in steps:
            try:
                parse_step(name)
            except KeyError as exc:
                raise ValueError(f"{origin}: parsing.{mode}: {exc.args[0]}") from None


def parse(task: Task, text: str | None, mode: Mode = "strict") -> Parsed:
    """Labels of ``task`` in a model answer, read by the steps the task declares for filter ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown parsing mode {mode!r}; modes: {', '.join(MODES)}")
    steps = [parse_step(name) for name in task.parsing[mode]]
    if text is None or not text.strip():
        return invalid(mode)
    explanation = split_reasoning(text)[1]
    for step in steps:
        label_ids = step(task, text)
        if label_ids:
            return accept(task, list(label_ids), mode, explanation)
    return invalid(mode, explanation)


def parse_all_modes(task: Task, text: str | None) -> dict[str, Parsed]:
    """Both filters at once, so every evaluation reports them side by side."""
    return {mode: parse(task, text, mode) for mode in MODES}


def read_answer(task: Task, text: str | None) -> Parsed:
    """One reading for a consumer that needs a single answer (the analyzer's ``llm`` engine): the first
    filter, in the order of MODES, that reads a valid answer, else the last filter's INVALID."""
    parsed = invalid(MODES[0])
    for mode in MODES:
        parsed = parse(task, text, mode)
        if parsed.valid:
            break
    return parsed


def invalid(mode: str, explanation: str | None = None) -> Parsed:
    return Parsed(labels=(), valid=False, mode=mode, explanation=explanation)


def accept(task: Task, label_ids: list[str], mode: str, explanation: str | None) -> Parsed:
    """Apply the task's cardinality: one label for single-label/binary tasks, at least one otherwise."""
    unique = set(label_ids)
    if not unique or (not task.is_multi_label and len(unique) != 1):
        return invalid(mode, explanation)
    ordered = tuple(label_id for label_id in task.label_ids if label_id in unique)
    return Parsed(labels=ordered, valid=True, mode=mode, explanation=explanation)


# --- explanation ------------------------------------------------------------------------------------

_REASON_MARKER = re.compile(r"推理\s*[：:]|reasoning\s*:", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(text before the first reasoning marker, the explanation after it or None)."""
    match = _REASON_MARKER.search(text)
    if match is None:
        return text, None
    return text[: match.start()], text[match.end() :].strip() or None


# --- label mentions -----------------------------------------------------------------------------------

_ASCII = "A-Za-z0-9"
_WORD_GAP = r"[\s_\-]+"


@dataclass(frozen=True)
class Mention:
    label_id: str
    start: int
    end: int
    negated: bool


@cache
def _form_patterns(labels: tuple[Label, ...]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """One pattern per surface form; a form shared by two labels is ambiguous and dropped.

    Latin forms need word boundaries ("low" must not fire in "below", "joy" in "enjoy") and
    accept space, hyphen or underscore between words ("mind_reading", "mind-reading").
    """
    owners: dict[str, set[str]] = {}
    for label in labels:
        for form in label.surface_forms:
            owners.setdefault(form.lower(), set()).add(label.id)
    patterns = []
    for form, ids in owners.items():
        if len(ids) != 1:
            continue
        body = _WORD_GAP.join(re.escape(word) for word in re.split(_WORD_GAP, form) if word)
        head = f"(?<![{_ASCII}])" if re.match(f"[{_ASCII}]", form) else ""
        tail = f"(?![{_ASCII}])" if re.search(f"[{_ASCII}]$", form) else ""
        patterns.append((re.compile(head + body + tail, re.IGNORECASE), ids.pop()))
    return tuple(patterns)


# Negation (NegEx-style windows): a cue negates a mention when it sits in the same clause, after the
# previous mention, at most ``gap`` characters before it; one-character cues at most one character
# before it. Windows can over-reach ("没有人理解我的悲伤"), which is why the label line is read first.
_NEGATION_CUES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile("不存在|没有|并非|不是|不属于|排除|不符合|不涉及|不包括|不包含|并无|否认|是否|并不|并未|尚未|未提及|未提到|"
                "未表达|不代表|不意味|谈不上|算不上|不足以"), 6),
    (re.compile("[无未没不]"), 1),
    (re.compile(r"\b(?:not|no|never|without|none\s+of|\w+n['’]t)\b", re.IGNORECASE), 24),
)
# Words that contain a cue but do not negate what follows ("不能排除高风险" asserts the risk).
_NOT_NEGATIONS = re.compile(
    "不能排除|无法排除|不可排除|难以排除|不排除|毫无疑问|无疑|无一不|无不|无论|无比|无法|无助|无奈|无聊|无力|无望|无数|无限|"
    "未来|未知|不仅|不只|不止|不禁|不断|不停|不少|不由|不得不|不安|"
    r"\bnot\s+only\b|\bnot\s+just\b|\bno\s+doubt\b",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(r"[，,。.;；！!？?：:\n]")


def _mask_non_negations(text: str) -> str:
    return _NOT_NEGATIONS.sub(lambda m: "\x00" * len(m.group()), text)


def find_mentions(task: Task, text: str) -> list[Mention]:
    """Non-overlapping label mentions in reading order, longest match first.

    Taking the longest candidates first, over the whole text, keeps "高自杀风险" from also being
    read as a shorter form inside it, and a synonym from firing inside a longer form of another label.
    """
    candidates = [
        (m.start(), m.end(), label_id)
        for pattern, label_id in _form_patterns(task.labels)
        for m in pattern.finditer(text)
    ]
    candidates.sort(key=lambda c: (c[0] - c[1], c[0]))
    chosen: list[tuple[int, int, str]] = []
    for start, end, label_id in candidates:
        if all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, label_id))
    chosen.sort()
    cue_text = _mask_non_negations(text)
    mentions, previous_end = [], 0
    for start, end, label_id in chosen:
        mentions.append(Mention(label_id, start, end, _negated(cue_text, previous_end, start)))
        previous_end = end
    return mentions


# A declared phrase (a label's ``claims_zh`` or ``argued_by_denying_zh``) is denied only by a cue in its clause with
# nothing but these words between them ("没有[明确表达]自杀意图", "并未[提及任何具体的]自杀计划", "没有[发现他有]自杀计划"):
# other words change what is denied ("没有[放弃]自杀计划", "没有[人知道他的]自杀计划", "没有[隐藏任何]情绪"), so those
# phrases stand asserted (and QC's claims check refuses them in an explanation of another label).
_DENIAL_FILLER = re.compile(
    "(?:明确|明显|清楚|清晰|直接|具体|任何|什么|关于|有关|迹象|证据|表明|表达|表现|表示|流露|透露|提到|提及|提出|说出|说明|"
    "显示|显露|描述|给出|涉及|体现|反映|看出|看到|发现|出现|制定|形成|作出|做出|真正|实际|强烈|足够|太多|想要|要|想|"
    # what a text carries ("不带任何情绪色彩", "不含任何情感")
    "带有|带|含有|含|夹杂|"
    "出|有|的|地|过|了|到|其|中|里|"
    # who: the writer, as explanations name them
    "帖子|发帖人|作者|楼主|本人|自己|他们|她们|他|她|"
    # the other items of a denied list ("没有明确的计划、自杀意图或方法", "没有表达自杀意图或自杀计划")
    "自杀|轻生|计划|方法|时间|意图|打算|想法|念头|准备|手段|地点|行为|以及|或者|或|和|及|与|也|"
    "[、\\s])*")
_STRONG_CUE = re.compile("不存在|没有|并非|不是|并无|并不|并未|尚未|未提及|未提到|未表达|未见|未曾|无明显|不涉及|毫无|缺乏|缺少|"
                         "不会|[无未没不]")
# Right before a cue, these cancel it: double negatives and hedges affirm or leave open ("不是没有自杀计划", "并非没有
# 自杀意图", "未必没有", "不代表没有", "有不明确的自杀计划").
_CANCELS = re.compile("(?:不是|并非|并不是|绝非|不能说|不可能|不会|并不会|未必|不见得|不一定|很难说|难说|难免|不代表|"
                      "并不代表|不意味着|不等于|有)$")


def _denied(text: str, cue_text: str, start: int) -> bool:
    """Whether the declared phrase at ``start`` is denied (see _DENIAL_FILLER and _CANCELS); ``cue_text`` is ``text``
    with its non-negations masked (``_mask_non_negations``)."""
    clause_ends = list(_CLAUSE_END.finditer(cue_text, 0, start))
    window_start = clause_ends[-1].end() if clause_ends else 0
    for cue in _STRONG_CUE.finditer(cue_text, window_start, start):
        if _DENIAL_FILLER.fullmatch(text, cue.end(), start) and not _CANCELS.search(text[:cue.start()]):
            return True
    return False


def _declared(task: Task, text: str, field: str, denied: bool,
              keep: Callable[[str, re.Match[str]], bool] | None = None) -> set[str]:
    cue_text = _mask_non_negations(text)
    return {label.id for label in task.labels for phrase in getattr(label, field)
            for m in re.finditer(re.escape(phrase), text)
            if _denied(text, cue_text, m.start()) is denied and (keep is None or keep(text, m))}


def claimed_labels(task: Task, text: str) -> set[str]:
    """Labels one of whose declared ``claims_zh`` phrases occurs in ``text`` not denied (see _DENIAL_FILLER)."""
    return _declared(task, text, "claims_zh", denied=False)


def argued_by_denial(task: Task, text: str) -> set[str]:
    """Labels one of whose ``argued_by_denying_zh`` phrases occurs in ``text`` denied ("没有明确表达自杀意图" for
    low risk): by the task's own definitions, the text argues for them."""
    return _declared(task, text, "argued_by_denying_zh", denied=True)


# After a declared feeling phrase, these make it another noun ("明显的情绪词", "任何情绪准备", "情绪起伏"): not the feeling.
_FEELING_GOES_ON = re.compile("[词语汇化起伏波动准备管控]")
# A denial conceded before an argument ("虽然没有直接表达任何情绪，但字里行间透露出失落") does not deny the label.
_CONCESSIVE = re.compile("虽然|虽|尽管|即使|即便|哪怕")


def _plainly_denied(text: str, match: re.Match[str]) -> bool:
    if _FEELING_GOES_ON.match(text, match.end()):
        return False
    clause_ends = list(_CLAUSE_END.finditer(text, 0, match.start()))
    return not _CONCESSIVE.search(text, clause_ends[-1].end() if clause_ends else 0, match.start())


def denied_own(task: Task, text: str) -> set[str]:
    """Labels one of whose ``contradicted_by_denying_zh`` phrases occurs in ``text`` plainly denied ("但并没有表达任何
    情绪" for 悲伤; not a concession before an argument, not "情绪词"): a text that says so of a post contradicts them."""
    return _declared(task, text, "contradicted_by_denying_zh", denied=True, keep=_plainly_denied)


def _negated(cue_text: str, window_start: int, start: int) -> bool:
    clause_ends = list(_CLAUSE_END.finditer(cue_text, window_start, start))
    if clause_ends:
        window_start = clause_ends[-1].end()
    for pattern, gap in _NEGATION_CUES:
        if any(start - m.end() <= gap for m in pattern.finditer(cue_text, window_start, start)):
            return True
    return False


def _asserted(task: Task, text: str) -> list[str]:
    """Label ids mentioned without negation; for single-label tasks only the first one.

    Single-label answers name the verdict first ("高风险，而不是低风险…"); later mentions are
    comparisons or explanation, so the first non-negated mention is the answer (the
    ``take_first`` filter of lm-evaluation-harness). Conflicting answers are therefore not
    INVALID in flexible mode; strict mode rejects them.
    """
    ids = [m.label_id for m in find_mentions(task, text) if not m.negated]
    return ids[:1] if not task.is_multi_label else ids


# --- C-IMHI: "标签：<names>\n推理：<explanation>" ------------------------------------------------------

_NAME_SEPARATORS = re.compile(r"[、，,;；]+")
_WORD_SEPARATORS = re.compile(r"[\s/]+")
_LABEL_LINE = re.compile(r"^[\s*#>【\[\-]*(?:标签|labels?)[\s*】\]]*[：:](.*)$", re.IGNORECASE | re.MULTILINE)


def _read_names(task: Task, body: str) -> list[str] | None:
    """Label ids of a separated name list, or None as soon as one name is unknown.

    Spaces and slashes separate names too, but a piece is first tried whole so that English names
    with spaces ("mind reading") and names with a slash (pathway children such as "学业/工作压力")
    are still read.
    """
    ids: list[str] = []
    for piece in filter(None, (p.strip() for p in _NAME_SEPARATORS.split(body))):
        whole = task.label_by_any_name(piece)
        labels = [whole] if whole else [task.label_by_any_name(w) for w in _WORD_SEPARATORS.split(piece) if w]
        if not labels or None in labels:
            return None
        ids.extend(label.id for label in labels if label is not None)
    return ids


@register_parse_step("label-line")
def label_line(task: Task, text: str) -> list[str]:
    """Strict C-IMHI: the first line is "标签：" and a list of declared names, every one of them known."""
    first_line = text.strip().splitlines()[0].strip()
    if not first_line.startswith(LABEL_PREFIX):
        return []
    return _read_names(task, first_line[len(LABEL_PREFIX) :].rstrip("。.")) or []


@register_parse_step("mentions-in-label-line")
def mentions_in_label_line(task: Task, text: str) -> list[str]:
    """Labels asserted on a line that looks like a label line anywhere ("**标签**：高兴", "Label: sad")."""
    line = _LABEL_LINE.search(text)
    return _asserted(task, split_reasoning(line.group(1))[0]) if line else []


@register_parse_step("mentions-before-reasoning")
def mentions_before_reasoning(task: Task, text: str) -> list[str]:
    """Labels asserted before the reasoning marker (the whole answer when it has none)."""
    return _asserted(task, split_reasoning(text)[0])


@register_parse_step("mentions-anywhere")
def mentions_anywhere(task: Task, text: str) -> list[str]:
    """Labels asserted anywhere, the explanation included ("推理：帖子表达了明显的恐惧。")."""
    return _asserted(task, text)


# --- IMHI (English MentalLLaMA): "<label sentence>. Reasoning: <explanation>" ----------------------

_SENTENCE_END = re.compile(r"[.!?\n]")


def _first_sentence(text: str) -> str:
    return _SENTENCE_END.split(split_reasoning(text)[0].strip(), maxsplit=1)[0].strip()


@register_parse_step("label-sentence")
def label_sentence(task: Task, text: str) -> list[str]:
    """Strict IMHI: the first sentence names exactly one label, and ends with it."""
    sentence = _first_sentence(text)
    mentions = find_mentions(task, sentence)
    if len({m.label_id for m in mentions}) != 1 or mentions[-1].end != len(sentence):
        return []
    return [mentions[-1].label_id]


@register_parse_step("mentions-in-first-sentence")
def mentions_in_first_sentence(task: Task, text: str) -> list[str]:
    """Labels asserted in the first sentence before the reasoning marker."""
    return _asserted(task, _first_sentence(text))


_ANY_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ANY_LETTER = re.compile(r"[^\W\d_]")


def cjk_share(text: str) -> float:
    """Share of a text's letters (any script; digits and punctuation are not letters) that are Chinese characters;
    0 for text without letters. The one letter-by-letter measure of "is this Chinese" (the analyzer's out-of-domain
    flag, QC's language check, the explanation scores; the chat endpoint weighs words: ``chinese_share_by_words``)."""
    letters = _ANY_LETTER.findall(text)
    return len(_ANY_CJK.findall(text)) / len(letters) if letters else 0.0


# What a message carries besides its words: links, @handles and Weibo #topics# (or #tags), left out when weighing
# how Chinese a chat message is.
_NOT_WORDS = re.compile(r"https?://\S+|www\.\S+|@[\w\-.]+|#[^#\s]{1,40}#|#\w+")
_OTHER_WORD = re.compile(r"[^\W\d_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def chinese_share_by_words(text: str) -> float:
    """Chinese characters against runs of other letters (a Latin word counts once, as a character does), links,
    @handles and #topics# left out: how Chinese a message reads. "emo了 to be honest I can't take it 活着好累" is
    0.36 by this and 0.17 by ``cjk_share``; "I want to kill myself tonight" is 0. 0 for text with neither."""
    kept = _NOT_WORDS.sub(" ", text)
    chinese, other = len(_ANY_CJK.findall(kept)), len(_OTHER_WORD.findall(kept))
    return chinese / (chinese + other) if chinese + other else 0.0
