import itertools
import random

import pytest

from mentalglm.tasks import get_task, list_tasks, parsing
from mentalglm.tasks.layout import render_answer
from mentalglm.tasks.parsing import Parsed, parse, parse_all_modes, read_answer, register_parse_step
from mentalglm.tasks.registry import task_from_mapping

ZH_TASKS = [task for task in list_tasks("zh") if task.answer_layout == "c-imhi"]
# the declarations of the real tasks (tasks/definitions/*.yaml), one per answer layout
PARSING = {
    "c-imhi": {"strict": ["label-line"],
               "flexible": ["mentions-in-label-line", "mentions-before-reasoning", "mentions-anywhere"]},
    "imhi": {"strict": ["label-sentence"], "flexible": ["mentions-in-first-sentence", "mentions-before-reasoning"]},
}


def _toy(labels, *, layout="c-imhi", type_="single-label", parsing=None):
    return task_from_mapping(
        {
            "id": "toy", "name_zh": "玩具", "name_en": "toy", "language": "en", "type": type_, "source": "tests",
            "labels": labels, "instruction": "?", "question": "?", "official_metric": "macro_f1",
            "answer_layout": layout, "parsing": parsing or PARSING[layout],
        }
    )


def _labels(text_or_parsed):
    return text_or_parsed.labels if text_or_parsed.valid else None


# --- round trips: the strict parser reads exactly what render_answer writes ---------------------------


@pytest.mark.parametrize("task", ZH_TASKS, ids=lambda t: t.id)
@pytest.mark.parametrize("explanation", ["帖子里写道“我累了”。\n第二段理由。", None])
def test_every_label_round_trips_in_both_modes(task, explanation):
    for label in task.labels:
        answer = render_answer(task, [label.id], explanation)
        for mode in ("strict", "flexible"):
            parsed = parse(task, answer, mode)
            assert parsed == Parsed((label.id,), True, mode, explanation.strip() if explanation else None), answer


@pytest.mark.parametrize("task", [t for t in ZH_TASKS if t.is_multi_label], ids=lambda t: t.id)
def test_multi_label_combinations_round_trip(task):
    combos = [list(pair) for pair in itertools.combinations(task.label_ids, 2)]
    rng = random.Random(7)
    combos += [rng.sample(task.label_ids, k) for k in range(3, len(task.label_ids) + 1)]
    for combo in combos:
        answer = render_answer(task, combo, "理由")
        expected = tuple(i for i in task.label_ids if i in combo)
        assert parse(task, answer, "strict").labels == expected, answer
        assert parse(task, answer, "flexible").labels == expected, answer


# --- strict -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id, text, expected",
    [
        ("cognitive_distortion", "标签：读心术，以偏概全", ("overgeneralization", "mind_reading")),
        ("cognitive_distortion", "标签：读心术,以偏概全;放大；应该式/乱贴标签", (
            "overgeneralization", "mind_reading", "magnification", "should_statements", "labeling")),
        ("cognitive_distortion", "标签：读心术 以偏概全", ("overgeneralization", "mind_reading")),
        ("cognitive_distortion", "标签：mind reading、labeling", ("mind_reading", "labeling")),
        ("cognitive_distortion", "标签：读心术、读心", ("mind_reading",)),
        ("cognitive_distortion", "标签：灾难化预测", ("fortune_telling",)),
        ("suicide_risk", "标签：high", ("high",)),
        ("suicide_risk", "标签：高风险。", ("high",)),
        ("emotion", "  标签：开心  \n推理：……", ("happy",)),
    ],
)
def test_strict_accepts_the_layout_with_any_declared_name(task_id, text, expected):
    assert parse(get_task(task_id), text, "strict").labels == expected


@pytest.mark.parametrize(
    "task_id, text",
    [
        ("emotion", ""),
        ("emotion", "   \n "),
        ("emotion", None),
        ("emotion", "抱歉，作为一个AI助手，我无法对此做出判断。"),
        ("emotion", "悲伤\n推理：……"),  # no 标签： prefix
        ("emotion", "标签:悲伤"),  # half-width colon is not the layout
        ("emotion", "推理：悲伤\n标签：悲伤"),  # label line must come first
        ("emotion", "标签：开心死了"),  # unknown name
        ("emotion", "标签：高兴、悲伤"),  # two labels on a single-label task
        ("suicide_risk", "标签：高风险、低风险"),
        ("suicide_risk", "标签：中等风险"),
        ("cognitive_distortion", "标签：读心术、自卑"),  # one unknown name spoils the answer
        ("cognitive_distortion", "标签：无"),  # multi-label needs at least one label
        ("cognitive_distortion", "标签：\n推理：没有认知歪曲"),
    ],
)
def test_strict_invalid_answers(task_id, text):
    parsed = parse(get_task(task_id), text, "strict")
    assert not parsed.valid and parsed.labels == () and parsed.mode == "strict"


# --- flexible ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id, text, expected",
    [
        # negation within a short window before the mention
        ("cognitive_distortion", "帖子没有体现读心术，但体现了以偏概全。", ("overgeneralization",)),
        ("cognitive_distortion", "不存在读心术；主要是乱贴标签", ("labeling",)),
        ("cognitive_distortion", "并非读心术，而是应该式", ("should_statements",)),
        ("cognitive_distortion", "可以排除读心术，属于以偏概全", ("overgeneralization",)),
        ("cognitive_distortion", "未见读心术，存在以偏概全", ("overgeneralization",)),
        ("cognitive_distortion", "不属于读心术。", None),
        ("cognitive_distortion", "no mind reading, but labeling", ("labeling",)),
        ("suicide_risk", "没有高自杀风险，属于低自杀风险", ("low",)),
        ("suicide_risk", "不是高风险，是低风险", ("low",)),
        ("suicide_risk", "无高风险迹象，低风险", ("low",)),
        ("suicide_risk", "not high risk; low risk", ("low",)),
        ("suicide_risk", "不能排除高自杀风险", ("high",)),  # double negation asserts the risk
        ("suicide_risk", "毫无疑问是高风险", ("high",)),
        ("suicide_risk", "我无法判断是否高风险", None),
        ("emotion", "不是高兴而是悲伤", ("sad",)),
        ("emotion", "标签：不开心", None),
        ("emotion", "感到无助和悲伤", ("sad",)),
        ("emotion", "对未来感到恐惧", ("fear",)),
        ("emotion", "不禁悲伤", ("sad",)),
        # longest match first: overlapping names resolve to the specific label
        ("suicide_risk", "标签：高自杀风险", ("high",)),
        ("suicide_risk", "判断为低自杀风险", ("low",)),
        ("suicide_risk", "自杀风险高", ("high",)),
        ("suicide_risk", "风险低", ("low",)),
        ("cognitive_distortion", "体现了灾难化预测", ("fortune_telling",)),
        ("cognitive_distortion", "放大或缩小", ("magnification",)),
        ("emotion", "this post is about sadness", ("sad",)),
        ("emotion", "I enjoy the day", None),  # "joy" inside "enjoy" is no mention
        ("suicide_risk", "it is below the threshold", None),
        # single-label: first non-negated mention wins
        ("suicide_risk", "高风险，而不是低风险", ("high",)),
        ("emotion", "愤怒，夹杂着悲伤", ("angry",)),
        # multi-label: every non-negated mention, in declared order
        ("cognitive_distortion", "以偏概全和读心术", ("overgeneralization", "mind_reading")),
    ],
)
def test_flexible_mentions_and_negation(task_id, text, expected):
    assert _labels(parse(get_task(task_id), text, "flexible")) == expected


def test_flexible_prefers_the_label_line_then_the_text_before_reasoning():
    task = get_task("emotion")
    assert parse(task, "我一开始以为是悲伤。\n**标签**：高兴\n推理：……", "flexible").labels == ("happy",)
    assert parse(task, "愤怒\n推理：虽然也提到了悲伤……", "flexible").labels == ("angry",)
    fallback = parse(task, "推理：帖子表达了明显的恐惧。", "flexible")
    assert fallback.labels == ("fear",) and fallback.explanation == "帖子表达了明显的恐惧。"
    assert not parse(task, "推理：帖子表达了明显的恐惧。", "strict").valid


def test_a_synonym_does_not_fire_inside_a_longer_name_of_another_label():
    task = _toy([{"id": "calm", "zh": "不担心", "en": "calm"}, {"id": "fear", "zh": "担心", "en": "fear"}])
    assert parse(task, "我不担心", "flexible").labels == ("calm",)
    assert parse(task, "我很担心", "flexible").labels == ("fear",)


@pytest.mark.parametrize("text", ["", "抱歉，我不能回答这个问题。", "As an AI, I cannot help with that.", "标签：无"])
def test_flexible_invalid_when_nothing_is_asserted(text):
    for task_id in ("emotion", "suicide_risk", "cognitive_distortion"):
        parsed = parse(get_task(task_id), text, "flexible")
        assert not parsed.valid and parsed.labels == ()


def test_explanation_is_the_text_after_the_reasoning_marker():
    task = get_task("emotion")
    assert parse(task, "标签：悲伤\n推理：  因为……  ", "strict").explanation == "因为……"
    assert parse(task, "sad. Reasoning: because", "flexible").explanation == "because"
    assert parse(task, "标签：悲伤", "strict").explanation is None
    assert parse(task, "标签：未知\n推理：因为", "strict") == Parsed((), False, "strict", "因为")


def test_both_modes_side_by_side():
    both = parse_all_modes(get_task("emotion"), "我觉得是悲伤")
    assert not both["strict"].valid and both["flexible"].labels == ("sad",)
    assert both["flexible"].to_dict() == {"labels": ["sad"], "valid": True, "mode": "flexible", "explanation": None}


# --- IMHI layout and parser dispatch ------------------------------------------------------------------

CAMS = [
    {"id": "no_reason", "zh": "无原因", "en": "no reason"},
    {"id": "bias_or_abuse", "zh": "偏见或虐待", "en": "bias or abuse"},
    {"id": "jobs_and_career", "zh": "工作与职业", "en": "jobs and career"},
    {"id": "medication", "zh": "药物", "en": "medication"},
    {"id": "relationship", "zh": "人际关系", "en": "relationship"},
    {"id": "alienation", "zh": "疏离", "en": "alienation"},
]


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("medication. Reasoning: The post mentions pills.", ("medication",), ("medication",)),
        ("no reason. Reasoning: nothing specific.", ("no_reason",), ("no_reason",)),
        ("The cause is jobs and career. Reasoning: work.", ("jobs_and_career",), ("jobs_and_career",)),
        ("Relationship. Reasoning: partner.", ("relationship",), ("relationship",)),
        ("medication or relationship. Reasoning: both.", None, ("medication",)),
        ("Medication seems to be the cause. Reasoning: pills.", None, ("medication",)),
        ("Not medication, but alienation. Reasoning: lonely.", None, ("alienation",)),
        ("I cannot determine the cause. Reasoning: the post mentions medication.", None, None),
        ("Reasoning: medication.", None, None),
    ],
)
def test_imhi_layout(text, strict, flexible):
    task = _toy(CAMS, layout="imhi")
    assert _labels(parse(task, text, "strict")) == strict
    assert _labels(parse(task, text, "flexible")) == flexible


@pytest.mark.parametrize("task", [t for t in list_tasks() if t.answer_layout == "imhi"], ids=lambda t: t.id)
def test_every_declared_imhi_name_is_read_back(task):
    for label in task.labels:
        for form in label.surface_forms:
            for mode in ("strict", "flexible"):
                assert parse(task, f" {form}. Reasoning: because.", mode).labels == (label.id,), (form, mode)


def test_imhi_binary_yes_no():
    task = _toy([{"id": "no", "zh": "否", "en": "no"}, {"id": "yes", "zh": "是", "en": "yes"}], layout="imhi")
    assert parse(task, "no. Reasoning: The post does not show stress.", "strict").labels == ("no",)
    assert parse(task, "Yes. Reasoning: deadlines.", "strict").labels == ("yes",)
    assert parse(task, "No, the poster is not stressed. Reasoning: calm.", "flexible").labels == ("no",)


@pytest.mark.parametrize("task", list_tasks(), ids=lambda t: t.id)
def test_every_task_declares_the_steps_of_its_answer_layout(task):
    assert {mode: list(steps) for mode, steps in task.parsing.items()} == PARSING[task.answer_layout]


def test_parse_runs_the_steps_the_task_declares_in_order(monkeypatch):
    monkeypatch.setitem(parsing._STEPS, "upper", lambda t, text: [text.lower()] if text.isupper() else [])
    task = _toy(CAMS, parsing={"strict": ["upper"], "flexible": ["upper", "mentions-anywhere"]})
    assert parse(task, "MEDICATION", "strict") == Parsed(("medication",), True, "strict")
    assert not parse(task, "medication", "strict").valid
    assert parse(task, "medication", "flexible") == Parsed(("medication",), True, "flexible")
    with pytest.raises(ValueError, match="already registered"):
        register_parse_step("label-line")(lambda t, text: [])
    with pytest.raises(ValueError, match="unknown parsing mode"):
        parse(task, "x", "lenient")


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"strict": ["label-line"]}, "exactly the filters strict, flexible"),
        ({"strict": ["label-line"], "flexible": []}, "parsing.flexible names no step"),
        ({"strict": ["label-lines"], "flexible": ["mentions-anywhere"]}, "Did you mean 'label-line'"),
        (None, "exactly the filters"),
    ],
)
def test_bad_parsing_declarations_are_refused_with_the_fix(declared, message):
    raw = {"id": "toy", "name_zh": "玩具", "name_en": "toy", "language": "zh", "type": "single-label",
           "source": "tests", "labels": CAMS, "instruction": "?", "question": "?", "official_metric": "macro_f1"}
    if declared is not None:
        raw["parsing"] = declared
    with pytest.raises(ValueError, match=message):
        task_from_mapping(raw, origin="toy.yaml")


def test_read_answer_takes_strict_then_flexible():
    task = get_task("emotion")
    assert read_answer(task, "标签：悲伤\n推理：因为") == Parsed(("sad",), True, "strict", "因为")
    assert read_answer(task, "我觉得是悲伤") == Parsed(("sad",), True, "flexible")
    assert read_answer(task, "抱歉") == Parsed((), False, "flexible")


@pytest.mark.parametrize("text", [
    "但没有明确表达自杀意图、计划、方法或时间", "但这并不表达明确的自杀意图", "没有迹象表明有自杀计划",
    "并未提及任何具体的自杀计划", "没有明确的计划、自杀意图或方法", "没有发现他有自杀计划", "没有制定自杀计划",
    "帖子没有表达自杀意图或自杀计划", "没有任何迹象表明发帖人有自杀计划", "缺乏明确的自杀意图", "并未表现出自杀的意图",
    "没有透露自己的自杀计划",
])
def test_a_declared_phrase_is_denied_by_a_cue_with_only_filler_between(text):
    """Denials of high risk's phrases argue low (argued_by_denying_zh) and assert nothing (claims_zh)."""
    from mentalglm.tasks.parsing import argued_by_denial, claimed_labels

    task = get_task("suicide_risk")
    assert argued_by_denial(task, text) == {"low"} and claimed_labels(task, text) == set()


@pytest.mark.parametrize("text", [
    "他并没有放弃自杀计划", "没有人知道他的自杀计划", "不是没有自杀计划", "并非没有自杀意图", "他从来没有放弃过自杀的计划",
    "作者没有任何犹豫地写下了自杀计划", "他并不只是想想而是有明确的自杀意图", "有明确的自杀计划",
    "未必没有自杀计划", "不代表没有自杀计划", "很难说没有自杀计划", "无一不表明其自杀意图", "有不明确的自杀计划",
    "没有隐瞒自杀计划",
])
def test_other_words_between_cue_and_phrase_or_a_double_negative_leave_it_asserted(text):
    from mentalglm.tasks.parsing import argued_by_denial, claimed_labels

    task = get_task("suicide_risk")
    assert argued_by_denial(task, text) == set() and claimed_labels(task, text) == {"high"}


def test_denials_that_deny_something_else_argue_nothing():
    from mentalglm.tasks.parsing import argued_by_denial

    emotion = get_task("emotion")
    assert argued_by_denial(emotion, "没有明显的情绪倾向") == {"neutral"}
    assert argued_by_denial(emotion, "她没有隐藏任何情绪") == set()
    assert argued_by_denial(emotion, "没有人能体会她明显的情绪") == set()
