"""The C-IMHI builder with a scripted teacher: caching and resume, QC reasons, regeneration, export."""

from __future__ import annotations

import json
import re

import pytest

from mentalglm.backends.base import GenerationSettings
from mentalglm.backends.fake import FakeBackend
from mentalglm.data.records import Post
from mentalglm.data.sampling import stratified_sample
from mentalglm.instruct.generate import ResultCache, TeacherConfig, generate_explanations, teacher_messages
from mentalglm.instruct.pipeline import BuildConfig, build_task
from mentalglm.instruct.qc import QCConfig, check_sample, near_duplicates
from mentalglm.tasks import get_task

SUICIDE = get_task("suicide_risk")
POSTS = [
    Post("p:1", "药已经准备好了，今晚就结束这一切", ("high",), "fixture"),
    Post("p:2", "今天考试没考好，有点难过", ("low",), "fixture"),
    Post("p:3", "真的不想活了，已经写好了遗书", ("high",), "fixture"),
    Post("p:4", "加班好累，只想睡一觉", ("low",), "fixture"),
]


def _post_of(request) -> str:
    return re.findall(r"帖子：“(.*?)”", request.messages[-1]["content"])[-1]


def good_teacher(request) -> str:
    post = _post_of(request)
    gold = re.findall(r"专家标注：(\S+)", request.messages[-1]["content"])[-1]  # the last one: after the few-shot
    return f"帖子中“{post}”是关键证据，与{gold}的定义一致。"


def test_teacher_prompt_carries_gold_label_definition_and_post():
    messages = teacher_messages(SUICIDE, "我想消失", ["high"])
    user = messages[-1]["content"]
    assert "专家标注：高自杀风险" in user and "“我想消失”" in user
    assert SUICIDE.label("high").definition_zh in user
    assert SUICIDE.label("low").definition_zh not in user  # only the gold label's definition by default


def test_cache_makes_a_second_run_free(tmp_path):
    backend = FakeBackend("scripted", responses=good_teacher)
    settings = GenerationSettings(max_new_tokens=64)
    first = list(generate_explanations(SUICIDE, POSTS, backend, ResultCache(tmp_path / "c.jsonl"), settings=settings))
    assert backend.calls == 4 and all(d.explanation for d in first)
    again = list(generate_explanations(SUICIDE, POSTS, backend, ResultCache(tmp_path / "c.jsonl"), settings=settings))
    assert backend.calls == 4 and all(d.cached for d in again)
    assert [d.explanation for d in again] == [d.explanation for d in first]


def test_a_cut_cache_line_is_redone_not_fatal(tmp_path):
    path = tmp_path / "c.jsonl"
    backend = FakeBackend("scripted", responses=good_teacher)
    list(generate_explanations(SUICIDE, POSTS[:2], backend, ResultCache(path), settings=GenerationSettings()))
    path.write_text(path.read_text(encoding="utf-8")[:-20], encoding="utf-8")  # a kill mid-write
    list(generate_explanations(SUICIDE, POSTS[:2], backend, ResultCache(path), settings=GenerationSettings()))
    assert backend.calls == 3


def test_empty_and_overlong_posts_are_rejected_before_sending(tmp_path):
    backend = FakeBackend("scripted", responses=good_teacher)
    posts = [Post("e", "  ", ("low",), "f"), Post("l", "长" * 50, ("low",), "f")]
    drafts = list(generate_explanations(SUICIDE, posts, backend, ResultCache(tmp_path / "c.jsonl"),
                                        settings=GenerationSettings(), config=TeacherConfig(max_post_chars=20)))
    assert backend.calls == 0
    assert drafts[0].error == "empty post" and "max_post_chars" in drafts[1].error


def test_backend_failures_are_recorded_and_the_run_continues(tmp_path):
    def flaky(request):
        if "遗书" in _post_of(request):
            raise RuntimeError("HTTP 500")
        return good_teacher(request)

    drafts = list(generate_explanations(SUICIDE, POSTS, FakeBackend("scripted", responses=flaky),
                                        ResultCache(tmp_path / "c.jsonl"), settings=GenerationSettings()))
    assert sum(d.error is not None for d in drafts) == 1 and sum(d.explanation is not None for d in drafts) == 3


@pytest.mark.parametrize(
    ("explanation", "check"),
    [
        ("抱歉，我无法回答这个问题，请寻求专业帮助，这超出了我的能力范围，谢谢理解。", "not_refusal"),
        ("The post says it is high risk because of the words used, so the label holds.", "language"),
        ("帖子中“药已经准备好了”说明有具体方法，但整体看属于低自杀风险，因为语气平静且没有更多的细节。", "no_other_label"),
        ("发帖人表达了明确的自杀意图和具体的准备行为，时间也很明确，所以属于高自杀风险的范畴。", "evidence"),
        ("帖子中“明天就去海边”说明了具体的时间和地点安排，这是典型的自杀准备行为，风险很高。", "evidence"),
        # single quotation marks quote too: a word the post does not have is not its evidence
        ("帖子中“药已经准备好了”用了‘遗书’这样的字眼，说明已经有具体方法和准备行为，风险很高。", "evidence"),
        ("高", "length"),
    ],
)
def test_each_check_rejects_with_its_reason(explanation, check):
    verdict = check_sample(SUICIDE, ["high"], explanation, POSTS[0].text)
    assert not verdict.passed and verdict.checks[check] is False
    assert any(reason.startswith(check) for reason in verdict.reasons)


def test_a_grounded_explanation_passes():
    text = "帖子中“药已经准备好了”说明发帖人已有具体的自杀方法和准备行为，“今晚就结束这一切”给出了明确的时间。"
    assert check_sample(SUICIDE, ["high"], text, POSTS[0].text).passed


def test_a_conditional_sentence_may_name_what_would_change_the_reading():
    """"如果…就会是高自杀风险" is the counterfactual the issue asks for, not an argument for the other label."""
    base = "帖子中“药已经准备好了”说明发帖人已有具体的自杀方法和准备行为，“今晚就结束这一切”给出了明确的时间。"
    for change in ("如果帖子中没有提到药和时间，那么就不符合该标注。", "如果没有这些准备，就会是低自杀风险。"):
        assert check_sample(SUICIDE, ["high"], base + change, POSTS[0].text).passed
    asserted = base.replace("说明", "但整体属于低自杀风险，说明")
    assert not check_sample(SUICIDE, ["high"], asserted, POSTS[0].text).checks["no_other_label"]


def test_the_verifier_reads_neither_conditions_nor_denials():
    from mentalglm.instruct.qc import asserted_part, verifier_reading

    text = "判断为「低自杀风险」：帖子中写道“好累啊”，这表明作者感到疲惫，但没有表达自杀意图。如果提到自杀计划，就会是高风险。"
    assert asserted_part(text) == "判断为「低自杀风险」：帖子中写道“好累啊”，这表明作者感到疲惫，但没有表达自杀意图。"
    assert verifier_reading(text) == "判断为「低自杀风险」：帖子中写道“好累啊”，这表明作者感到疲惫，"


def test_the_verifier_reads_the_argument_not_the_verdict_and_the_definitions_read_bare_denials():
    """The grammar writes 判断为「低自杀风险」 by construction: a bag of n-grams would read its 自杀 as high risk. An
    explanation that affirms nothing past the label, its quote and denials gives the verifier nothing to judge: the
    task's definitions read it where its denials argue one label (``argued_by_denying_zh``), else the verifier abstains."""
    from mentalglm.instruct.qc import Verdict, apply_verifier, by_definition, verifier_reading

    grounded = "判断为「低自杀风险」：帖子中写道“好累啊”，但这并不表达明确的自杀意图、计划或时间。"
    assert verifier_reading(grounded, SUICIDE) == "判断为：帖子中写道“好累啊”，"
    emotion, distortion = get_task("emotion"), get_task("cognitive_distortion")
    assert verifier_reading("判断为「悲伤」：写道“我好难过”。", emotion) == "判断为「悲伤」：写道“我好难过”。"  # distinct
    assert verifier_reading("判断为「以偏概全、罪责归己」：写道“都怪我”。", distortion) == "判断为「以偏概全」：写道“都怪我”。"
    # a denial inside the quotation is the post's, not the explanation's
    assert verifier_reading("判断为「低自杀风险」：帖子中写道“我再也不会醒来了”，作者很绝望。", SUICIDE).endswith("作者很绝望。")
    assert check_sample(SUICIDE, ["low"], grounded, "好累啊").checks["no_other_label"]  # "并不" denies, as "没有" does

    class Reads:
        name = "scripted"

        def __init__(self) -> None:
            self.read: list[str] = []

        def predict(self, task, explanations):
            self.read += explanations
            return [("high",)] * len(explanations)

    unreadable = "判断为「低自杀风险」：帖子中写道“好累啊”，但没有提到具体的时间。"  # denies nothing a label needs
    denies_high_for_high = grounded.replace("低自杀风险", "高自杀风险")
    verifier = Reads()
    bare, arguing, silent, against = Verdict(True), Verdict(True), Verdict(True), Verdict(True)
    apply_verifier(SUICIDE, verifier, [(["low"], grounded), (["low"], "判断为「低自杀风险」：帖子写了遗书。"),
                                       (["low"], unreadable), (["high"], denies_high_for_high)],
                   [bare, arguing, silent, against])
    assert verifier.read == ["判断为：帖子写了遗书。"]  # only the text that affirms something reaches the verifier
    assert bare.passed and bare.checks["verifier"] is True and not bare.abstained
    assert not arguing.passed and arguing.checks["verifier"] is False
    assert silent.passed and "verifier" not in silent.checks and silent.abstained == ["verifier"]
    assert not against.passed and against.checks["verifier"] is False
    assert any("definitions" in reason for reason in against.reasons)
    # emotion: "no evident emotion" argues neutral, for a post decided neutral and against one decided sad
    flat = "判断为「中性」：帖子中写道“今天开会”，没有明显的情绪倾向。"
    neutral, sad = Verdict(True), Verdict(True)
    apply_verifier(emotion, verifier, [(["neutral"], flat), (["sad"], flat.replace("中性", "悲伤"))], [neutral, sad])
    assert neutral.checks["verifier"] is True and sad.checks["verifier"] is False
    # multi-label: "rather than a specific behaviour" is what labeling is
    labels_self = "判断为「乱贴标签」：帖子中写道“我好没用”，而不是描述具体的行为。"
    labeling, other = Verdict(True), Verdict(True)
    apply_verifier(distortion, verifier, [(["labeling", "overgeneralization"], labels_self),
                                          (["mental_filter"], labels_self)], [labeling, other])
    assert labeling.checks["verifier"] is True and other.checks["verifier"] is False
    # a label named as not fitting is not argued by its definition ("…而不是描述具体的行为，不属于乱贴标签")
    assert by_definition(distortion, labels_self + "这不属于乱贴标签。") is None
    # single-label, denials arguing two labels: nothing to read
    assert by_definition(emotion, "判断为「中性」：帖子中写道“嗯”，没有明显的情绪倾向。") == ("neutral",)
    # a verdict records who read it
    assert bare.read_by == {"verifier": "definitions"} and arguing.read_by == {"verifier": "scripted"}
    # a denial inside the quote is the post's: it argues nothing about the labels
    quoted = "判断为「高自杀风险」：帖子中写道“我没有自杀计划了吗”，"
    apply_verifier(SUICIDE, verifier, [(["high"], quoted)], [post_denies := Verdict(True)])
    assert post_denies.abstained == ["verifier"]


def test_an_explanation_the_verifier_cannot_read_is_still_refused_when_it_asserts_another_label():
    """Where the verifier abstains, the claims check must still read what the explanation asserts: a denial cue that
    affirms ("没有任何犹豫", "并不只是想想") does not hide a plan from it."""
    post = "我不会再醒来了，药已经准备好了，明天就是最后一天"
    for asserted in ("判断为「低自杀风险」：帖子中写道“我不会再醒来了”，作者没有任何犹豫地写下了自杀计划，并不只是想想而已。",
                     "判断为「低自杀风险」：帖子中写道“我不会再醒来了”，他并不只是想想而是有明确的自杀意图。"):
        verdict = check_sample(SUICIDE, ["low"], asserted, post)
        assert not verdict.passed and not verdict.checks["no_other_label"], asserted


def test_prose_that_goes_on_copying_the_post_is_rejected():
    post = "饭饭，她觉得自己没用，记性越来越差，什么都能忘，跟闺蜜出去买衣服"
    copied = "帖子中写道“饭饭”，她觉得自己没用，记性越来越差，什么都能忘，这说明作者在贬低自己。"
    verdict = check_sample(SUICIDE, ["low"], copied, post)
    assert not verdict.checks["not_copy"] and "outside its quotation" in verdict.reasons[0]
    own_words = "帖子中写道“她觉得自己没用，记性越来越差”，作者在用一次健忘全盘否定自己，情绪低落但没有计划。"
    assert check_sample(SUICIDE, ["low"], own_words, post).checks["not_copy"]


def test_near_duplicates():
    a = "帖子中“药已经准备好了”说明发帖人已有具体的自杀方法和准备行为。"
    assert near_duplicates([a, a + "。", "完全不同的一段解释文字，讲的是另一件事情和其他内容。"], 0.85) == {1}


def test_stratified_sample_keeps_every_label():
    posts = [Post(f"a{i}", f"t{i}", ("low",), "f") for i in range(90)] + [
        Post(f"b{i}", f"u{i}", ("high",), "f") for i in range(10)]
    sample = stratified_sample(posts, 20, seed=1, min_per_label=3)
    assert len(sample) == 20 and sum(p.labels == ("high",) for p in sample) >= 3
    assert stratified_sample(posts, 20, seed=1, min_per_label=3) == sample


def test_build_task_regenerates_rejected_answers_and_logs_reasons(tmp_path):
    attempts: dict[str, int] = {}

    def improving(request):  # the first answer for each post is ungrounded, the retry quotes the post
        post = _post_of(request)
        attempts[post] = attempts.get(post, 0) + 1
        if attempts[post] == 1:
            return "这个帖子的风险判断如上所述，理由是语气和内容都符合定义中的描述，没有其他需要说明的。"
        return good_teacher(request)

    config = BuildConfig(tasks=["suicide_risk"], per_task=4, verifier="none", max_attempts=2,
                         qc=QCConfig(min_chars=20))
    log: list[dict] = []
    outcome = build_task(SUICIDE, POSTS, [], FakeBackend("scripted", responses=improving),
                         ResultCache(tmp_path / "c.jsonl"), config, log)
    assert len(outcome.accepted) == 4 and dict(outcome.attempts_used) == {1: 4}
    first = [row for row in log if row["attempt"] == 0]
    assert all(not row["passed"] and any("evidence" in r for r in row["reasons"]) for row in first)
    assert all(s.answer.startswith("标签：") and "\n推理：帖子中“" in s.answer for s in outcome.accepted)
    json.dumps(log, ensure_ascii=False)  # the log is written as JSONL


def test_qc_rejects_an_explanation_that_asserts_what_defines_another_label_without_naming_it() -> None:
    from mentalglm.instruct.qc import QCConfig, check_other_labels
    from mentalglm.tasks import get_task

    task = get_task("suicide_risk")
    contradicts = "帖子中写道“觉得自己什么都做不好”，这句话中的字眼是：自己做不好，所以是自杀意图。"
    negated = "帖子中“活着好累”流露出痛苦和模糊的厌世想法，但没有表达明确的自杀意图、计划、方法或时间。"
    assert "高自杀风险" in (check_other_labels(task, ["low"], contradicts, "", QCConfig()) or "")
    assert check_other_labels(task, ["low"], negated, "", QCConfig()) is None
    assert check_other_labels(task, ["high"], contradicts, "", QCConfig()) is None


def test_grounded_drafts_ask_under_the_posts_grammar_and_pass_qc(tmp_path):
    """On a grammar-following teacher every request carries the post's grammar: the gold label stated, one of the
    post's own clauses as the only quotable text; a reply in that shape passes QC's grounding and label checks."""
    from mentalglm.instruct.grounding import label_statement

    def grounded_teacher(request) -> str:
        grammar = request.settings.grammar
        assert grammar is not None and len(request.settings.avoid_copying) > 1  # the copy guard rides along
        statement = re.search(r'root ::= "(.*?)帖子中写道“"', grammar).group(1)
        quote = re.search(r'quote ::= "(.*?)"', grammar).group(1)
        return f"{statement}帖子中写道“{quote}”，这句话直接说出了帖子作者当下的处境和打算。如果帖子只是在抱怨日常小事，判断会不同。"

    backend = FakeBackend("scripted", responses=grounded_teacher, supports_grammar=True)
    drafts = list(generate_explanations(SUICIDE, POSTS, backend, ResultCache(tmp_path / "c.jsonl"),
                                        settings=GenerationSettings(max_new_tokens=64), grounded=True))
    assert backend.calls == 4
    for draft in drafts:
        assert draft.explanation.startswith(label_statement(SUICIDE, draft.post.labels))
        assert check_sample(SUICIDE, draft.post.labels, draft.explanation, draft.post.text).passed

    def free_teacher(request) -> str:  # grounded=False (the --free-form builder): the long prompt, no grammar
        assert request.settings.grammar is None and "专家标注" in request.messages[-1]["content"]
        return good_teacher(request)

    free = FakeBackend("scripted", responses=free_teacher, supports_grammar=True)
    list(generate_explanations(SUICIDE, POSTS[:1], free, ResultCache(tmp_path / "f.jsonl"), settings=GenerationSettings()))
    assert free.calls == 1


def test_grounded_drafts_carry_the_engines_prompt_and_export_it_as_the_explainers_rows(tmp_path):
    """The explainer learns what the hybrid engine asks (its prompt: no 如果-request) answered as the teacher did up to
    the 如果-sentence, which the engine measures instead; only accepted samples become rows."""
    from mentalglm.instruct.export import export_explainer_rows
    from mentalglm.instruct.grounding import without_change

    def teacher(request) -> str:
        statement = re.search(r'root ::= "(.*?)帖子中写道“"', request.settings.grammar).group(1)
        quote = re.search(r'quote ::= "(.*?)"', request.settings.grammar).group(1)
        return f"{statement}帖子中写道“{quote}”，这句话说出了作者当下的打算。如果帖子只是抱怨小事，判断会不同。"

    backend = FakeBackend("scripted", responses=teacher, supports_grammar=True)
    drafts = list(generate_explanations(SUICIDE, POSTS[:2], backend, ResultCache(tmp_path / "c.jsonl"),
                                        settings=GenerationSettings(max_new_tokens=64), grounded=True))
    for draft in drafts:
        prompt = draft.meta["engine_prompt"]
        assert prompt == teacher_messages(SUICIDE, draft.post.text, draft.post.labels, grounded=True,
                                          ask_change=False)
        assert "如果" not in prompt[-1]["content"]
    from mentalglm.data.instructions import make_instruction

    samples = [make_instruction(SUICIDE, d.post, d.explanation) for d in drafts[:1]]
    path = export_explainer_rows(samples, {("suicide_risk", d.post.id): d.meta["engine_prompt"] for d in drafts},
                                 tmp_path, "train")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == ["p:1"]
    assert rows[0]["messages"][:-1] == drafts[0].meta["engine_prompt"]
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": without_change(drafts[0].explanation)}
    assert rows[0]["messages"][-1]["content"].endswith("打算。") and "如果" not in rows[0]["messages"][-1]["content"]
    # a long post's merged clause may hold "。如果": the cut is looked for after the quotation
    merged = "判断为「高自杀风险」：帖子中写道“我受够了。如果明天还这样我就走了”，这说出了打算。如果只是抱怨，判断会不同。"
    assert without_change(merged) == "判断为「高自杀风险」：帖子中写道“我受够了。如果明天还这样我就走了”，这说出了打算。"
    # another task's prompt for the same post id is not this sample's
    other = export_explainer_rows(samples, {("emotion", "p:1"): drafts[0].meta["engine_prompt"]}, tmp_path, "x")
    assert other.read_text(encoding="utf-8") == ""


def test_a_grounded_teacher_sees_the_example_of_each_label_it_explains_and_may_not_copy_it():
    from mentalglm.instruct.grounding import grounded_settings

    task = get_task("cognitive_distortion")
    labeling, blaming = task.label("labeling"), task.label("blaming")
    user = teacher_messages(task, "我就是个没用的人", ["labeling"], grounded=True, hints=["我就是个没用的人"])[1]
    assert labeling.example_zh and labeling.example_zh in user["content"]
    assert blaming.example_zh not in user["content"]
    settings = grounded_settings(GenerationSettings(), task, 'root ::= "x"', "我就是个没用的人")
    assert labeling.example_zh in settings.avoid_copying and blaming.example_zh in settings.avoid_copying
    # a task without examples asks as before
    assert "写法示范" not in teacher_messages(SUICIDE, "加班好累", ["low"], grounded=True)[1]["content"]


def test_a_quote_reader_offers_only_the_clauses_that_carry_the_gold_label(tmp_path):
    """With a classifier to ask (the build's verifier), the grammar offers the clauses whose removal lowers the gold
    label's probability most, and the prompt names them; where no clause carries it, every clause stays quotable."""
    import numpy as np

    from mentalglm.instruct.generate import supporting_quotes

    class Reader:
        classes = ["low", "high"]

        def predict_proba(self, texts):
            high = np.array([0.9 if "药已经准备好了" in t else 0.2 for t in texts])
            return np.column_stack([1 - high, high])

    post = Post("p", "今天下雨了，药已经准备好了，晚饭吃面", ("high",), "fixture")
    assert supporting_quotes(Reader(), post.text, ["high"]) == ["药已经准备好了"]
    assert supporting_quotes(Reader(), post.text, ["low"]) == []  # removing a clause never lowers P(low) here
    seen = []

    def teacher(request) -> str:
        seen.append(request)
        return "判断为「高自杀风险」：帖子中写道“药已经准备好了”，作者已经备好了药。"

    backend = FakeBackend("scripted", responses=teacher, supports_grammar=True)
    list(generate_explanations(SUICIDE, [post], backend, ResultCache(tmp_path / "c.jsonl"),
                               settings=GenerationSettings(max_new_tokens=64), grounded=True, quote_reader=Reader()))
    grammar = seen[0].settings.grammar
    assert "药已经准备好了" in grammar and "今天下雨了" not in grammar and "晚饭吃面" not in grammar
    assert "“药已经准备好了”" in seen[0].messages[-1]["content"]


def test_prose_alone_credits_the_verifier_only_with_what_the_explanation_itself_says():
    """With quote hints the verifier's own classifier chose the quote, so the report reads the accepted explanations
    again with their quotes emptied."""
    from mentalglm.data.instructions import make_instruction
    from mentalglm.instruct.pipeline import prose_alone

    class ReadsPlans:
        name = "scripted"

        def predict(self, task, explanations):
            return [("high",) if "准备" in e else ("low",) for e in explanations]

    quoting = make_instruction(SUICIDE, POSTS[0], "判断为「高自杀风险」：帖子中写道“药已经准备好了”，作者很难过。")
    arguing = make_instruction(SUICIDE, POSTS[2], "判断为「高自杀风险」：帖子中写道“已经写好了遗书”，说明作者已做好准备。")
    assert prose_alone(SUICIDE, ReadsPlans(), [quoting, arguing]) == {"agrees": 1, "read": 2, "abstained": 0}


def test_the_task_descriptions_read_what_the_verifier_trained_on_posts_cannot():
    """A classifier trained on posts reads "一次失败就推及所有事情" as nothing in particular; the task's descriptions
    (definitions and ``cues_zh``) read it as overgeneralisation. Either reader reading the gold label passes; the
    stated verdict is read by neither, so the same prose under another label is still refused."""
    from mentalglm.instruct.description import by_description
    from mentalglm.instruct.qc import DESCRIPTIONS, Verdict, apply_verifier

    distortion, emotion = get_task("cognitive_distortion"), get_task("emotion")
    # nothing but the label's own names, the quotation or a verdict in other brackets: nothing argued, nothing read
    assert by_description(distortion, ["判断为「应该式」：帖子中写道“今天又下雨了”，这是典型的应该式思维。",
                                       "判断为「应该式」：帖子中写道“我应该更努力”，作者心情很好。",
                                       "判断为【应该式】：作者很开心。", "作者今天很累。"]) == [None] * 4
    prose = "帖子中写道“这次又搞砸了”，作者凭一次失败就认定自己每次都会失败，把一件事推及所有事情。"
    assert by_description(distortion, [f"判断为「以偏概全」：{prose}", f"判断为「应该式」：{prose}"]) == \
        [("overgeneralization",), ("overgeneralization",)]
    assert by_description(distortion, ["判断为「应该式」：帖子中写道“”，"]) == [None]  # nothing but the layout
    assert by_description(SUICIDE, [prose]) == [None]  # a task that declares no cues takes no part

    class ReadsLabeling:
        name = "posts"

        def predict(self, task, explanations):
            return [("labeling",)] * len(explanations)

    fits, swapped, labeling = Verdict(True), Verdict(True), Verdict(True)
    apply_verifier(distortion, ReadsLabeling(), [(["overgeneralization"], f"判断为「以偏概全」：{prose}"),
                                                 (["should_statements"], f"判断为「应该式」：{prose}"),
                                                 (["labeling"], f"判断为「乱贴标签」：{prose}")],
                   [fits, swapped, labeling])
    assert fits.passed and fits.read_by == {"verifier": DESCRIPTIONS}
    assert not swapped.passed and "its descriptions read 以偏概全" in swapped.reasons[0]
    assert labeling.passed and labeling.read_by == {"verifier": "posts"}
    happy = "判断为「高兴」：帖子中写道“终于拿到offer了”，作者为得到工作而开心，充满期待。"
    assert by_description(emotion, [happy]) == [("happy",)]


def test_a_bad_cue_pattern_fails_when_the_task_is_loaded():
    from mentalglm.tasks.registry import task_from_mapping

    raw = {"id": "t", "name_zh": "测", "name_en": "t", "language": "zh", "type": "single-label", "instruction": "请判断",
           "question": "?", "labels": [{"id": "a", "zh": "甲", "en": "a", "cues_zh": ["(未闭合"]},
                                      {"id": "b", "zh": "乙", "en": "b"}]}
    with pytest.raises(ValueError, match="label 'a': cues_zh pattern"):
        task_from_mapping(raw)


@pytest.mark.parametrize(("explanation", "fits"), [
    ("判断为「乱贴标签」：帖子中写道“我就是个垃圾”，这是在用笼统的负面标签定义自己，不符合描述具体行为或事件的定义。", True),
    ("判断为「乱贴标签」：帖子中写道“我就是个垃圾”，作者用负面标签定义自己，不符合读心术的定义。", True),
    ("判断为「乱贴标签」：帖子中写道“心如刀绞”，作者感到极度痛苦，不符合描述为笼统、负面的标签的定义。", False),
    ("判断为「乱贴标签」：帖子中写道“我就是个垃圾”，作者用负面标签定义自己，不符合其他认知歪曲的定义。", True),
    ("判断为「乱贴标签」：帖子中写道“我永远不符合爸妈的定义”，作者用负面标签定义自己。", True),  # the post's words
    ("判断为「乱贴标签」：帖子中写道“我就是个垃圾”，作者很难过，不符合乱贴标签或读心术的定义。", False),
    ("判断为「乱贴标签」：帖子中写道“我就是个垃圾”，作者很难过，不太符合乱贴标签的定义。", False),
])
def test_saying_a_definition_does_not_fit_contradicts_the_label_unless_it_rules_out_another(explanation, fits):
    verdict = check_sample(get_task("cognitive_distortion"), ["labeling"], explanation, "我就是个垃圾，心如刀绞")
    assert verdict.checks["not_contradicting"] is fits, verdict.reasons


@pytest.mark.parametrize(("label", "reason", "fits"), [
    ("sad", "作者经历了困难和痛苦，但并没有表现出任何消极情绪", False),  # what the tuned explainer wrote
    ("happy", "作者感到非常高兴，但并没有明确表达任何情绪或感受", False),
    ("angry", "作者在抱怨，却没有明显的情绪", False),
    ("happy", "作者表达了喜悦，没有任何消极情绪", True),  # another polarity denied: no contradiction
    ("sad", "作者没有任何积极情绪，只有失落", True),
    ("sad", "虽然没有直接说难过，但失眠透露出低落", True),  # not saying the word is not denying the feeling
    ("neutral", "只是陈述事实，没有表达任何情绪或倾向", True),  # 中性 is argued by exactly this denial
    ("sad", "作者很失落。如果帖子没有表达任何情绪，就会是中性", True),  # a conditional sentence asserts nothing
    ("sad", "虽然没有直接表达任何情绪，但字里行间透露出失落", True),  # conceded, then argued
    ("sad", "虽然没有明显的情绪词，但失眠透露出低落", True),  # 情绪词: words, not the feeling
    ("surprise", "作者没有任何情绪准备，消息来得太突然", True),
    ("sad", "作者很痛苦，却没有表现出任何情绪", False),  # 却 is no concession
    ("sad", "作者只是不带任何情绪色彩地叙述了失眠", False),  # denied by 不带, as the tuned explainer wrote it
    ("sad", "作者的话不含任何情感，只是记录", False),
])
def test_an_emotion_explanation_may_not_deny_that_the_post_shows_its_feeling(label, reason, fits):
    task = get_task("emotion")
    explanation = f"判断为「{task.label(label).zh}」：帖子中写道“最近总是睡不着”，{reason}。"
    verdict = check_sample(task, [label], explanation, "最近总是睡不着，很开心")
    assert verdict.checks["not_contradicting"] is fits, verdict.reasons
