"""ROUGE-L and BLEU-4 against values computed by hand; reference-free scores on an invented SOS-4K-like post."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from mentalglm.data.records import Post
from mentalglm.evaluate.explanations import (
    ExplainedAnswer,
    cjk_share,
    corpus_bleu,
    explanation_scores,
    rouge_l,
    tokenize,
)
from mentalglm.tasks import Task, get_task

HYP = ["我", "今天", "很", "开心"]
REF = ["我", "今天", "非常", "开心"]


def test_rouge_l_by_hand() -> None:
    assert rouge_l(HYP, REF) == pytest.approx(0.75)  # LCS 我 今天 开心 = 3; P = R = 3/4
    assert rouge_l(["我", "开心"], REF) == pytest.approx(2 / 3)  # LCS 2; P = 1, R = 1/2
    assert rouge_l(["你"], REF) == 0.0


def test_bleu4_by_hand() -> None:
    # 1-grams 3/4, 2-grams 1/3 (我今天); 3- and 4-grams have no match: exp smoothing gives 1/(2*2) and 1/(4*1)
    assert corpus_bleu([HYP], [REF]) == pytest.approx((3 / 4 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25)
    assert corpus_bleu([REF], [REF]) == pytest.approx(1.0)
    # a 4-token hypothesis against a 5-token reference: brevity penalty exp(1 - 5/4), precisions all 1
    assert corpus_bleu([HYP], [[*HYP, "啊"]]) == pytest.approx(math.exp(1 - 5 / 4))
    assert corpus_bleu([["我"]], [REF]) == 0.0  # no 4-grams at all


def test_bleu_sums_counts_over_the_corpus() -> None:
    # two sentences scored together are not the mean of their sentence scores
    together = corpus_bleu([HYP, REF], [REF, REF])
    assert together == pytest.approx(((3 + 4) / 8 * (1 + 3) / 6 * 2 / 4 * 1 / 2) ** 0.25)


def test_tokenize_drops_punctuation_and_space() -> None:
    assert tokenize("我 今天，很开心！") == ["我", "今天", "很", "开心"]
    assert cjk_share("abc中文") == pytest.approx(2 / 5) and cjk_share("……") == 0.0


class ReadsHigh:
    name = "stub"

    def predict(self, task: Task, explanations: Sequence[str]) -> list[tuple[str, ...]]:
        return [("high",) if "计划" in text else ("low",) for text in explanations]


def test_explanation_scores_on_a_tiny_example() -> None:
    task = get_task("suicide_level")
    post = Post("sos4k:1", "我已经计划好了，周五晚上就走。", ("9",), "toy",
                meta={"explanation": "帖子提到“计划好了”，并给出时间，风险很高。"})
    answers = [
        ExplainedAnswer("帖子提到“计划好了”，风险很高。", post.text, ("9",), post.meta["explanation"]),
        ExplainedAnswer("作者说“我想去旅行”。", post.text, ("2",), None),
        ExplainedAnswer("", post.text, ("9",), None),  # no explanation: not counted
    ]
    scores = explanation_scores(task, answers)
    assert scores["n_explained"] == 2 and scores["n_referenced"] == 1
    assert scores["quoting_share"] == 1.0 and scores["grounded_share"] == pytest.approx(0.5)
    hyp, ref = tokenize(answers[0].explanation), tokenize(post.meta["explanation"])
    assert scores["rouge_l_f"] == pytest.approx(rouge_l(hyp, ref)) and 0 < scores["rouge_l_f"] < 1
    assert scores["mean_chars"] == pytest.approx((len(answers[0].explanation) + len(answers[1].explanation)) / 2)


def test_label_consistency_compares_with_the_answer_own_label() -> None:
    task = get_task("suicide_risk")
    answers = [ExplainedAnswer("作者有明确计划", "p", ("high",)), ExplainedAnswer("作者有计划", "p", ("low",))]
    scores = explanation_scores(task, answers, ReadsHigh())
    assert scores["label_consistency"] == pytest.approx(0.5) and scores["verifier"] == "stub"
    assert scores["verifier_abstained"] == 0


def test_label_consistency_reads_as_qc_reads() -> None:
    """Evaluation reads an explanation as QC does: a bare denial of a plan argues low by the task's definitions
    (not the verifier's reading of an empty text), and an explanation with nothing to read is counted apart."""
    task = get_task("suicide_risk")
    denies = "判断为「低自杀风险」：帖子中写道“好累”，但没有明确表达自杀意图。"
    answers = [ExplainedAnswer(denies, "好累", ("low",)), ExplainedAnswer("判断为「低自杀风险」：帖子中写道“好累”。", "好累", ("low",))]
    scores = explanation_scores(task, answers, ReadsHigh())
    assert scores["label_consistency"] == pytest.approx(1.0) and scores["verifier_abstained"] == 1
