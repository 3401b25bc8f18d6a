"""The screen: a gate that answers "nothing evident" before the task's classifier chooses a label."""

from __future__ import annotations

import numpy as np
import pytest

from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier
from mentalglm.train.screen import CLEAR, FLAG, NO_LABEL, GatedClassifier, ScreenGate, fit_gate, threshold_for

FLAGGED = ["药已经攒够了，今晚就结束这一切", "遗书写好了，明天就从楼上跳下去", "活着好累，不想活了", "真的撑不下去了，想死"]
CLEAR_POSTS = ["周末去超市买了水果和牛奶", "今晚的球赛太精彩了，主队赢了", "这家面馆的牛肉面很好吃，推荐",
               "明天降温，大家出门多穿衣服", "新手机到了，拍照效果不错", "下午开会讨论了下个季度的计划"]


def test_threshold_flags_at_most_the_allowed_share_of_negatives() -> None:
    negatives = np.linspace(0.0, 0.99, 100)
    for share in (0.0, 0.01, 0.05, 0.2):
        t = threshold_for(negatives, share)
        assert (negatives >= t).mean() <= share
        assert (negatives >= t - 0.0101).mean() > share  # and not needlessly high: one step lower flags more


def _gate(threshold: float = 0.5) -> ScreenGate:
    tfidf = TfidfClassifier("t.screen", [CLEAR, FLAG], multi_label=False).fit(
        FLAGGED + CLEAR_POSTS, [(FLAG,)] * len(FLAGGED) + [(CLEAR,)] * len(CLEAR_POSTS))
    return ScreenGate(tfidf, None, 1.0, threshold)


def test_single_label_task_answers_its_none_label_and_probabilities_sum_to_one() -> None:
    inner = TfidfClassifier("suicide_risk", ["low", "high"], False).fit(FLAGGED, [("high",), ("high",), ("low",), ("low",)])
    gated = GatedClassifier(_gate(), inner, "none")
    assert gated.classes == ["low", "high", "none"]
    proba = gated.predict_proba(["周末去超市买了面包和鸡蛋", "药已经攒够了，今晚就走"])
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert gated.decide(proba)[0] == ("none",)
    assert gated.decide(proba)[1] == ("high",)


def test_multi_label_task_answers_an_empty_decision_with_its_own_confidence() -> None:
    inner = TfidfClassifier("cognitive_distortion", ["labeling", "fortune_telling"], True).fit(
        FLAGGED, [("labeling",), ("fortune_telling",), ("labeling",), ("fortune_telling",)])
    gated = GatedClassifier(_gate(), inner, None)
    assert gated.classes[-1] == NO_LABEL
    decided = gated.predict(["今晚的球赛主队又赢了，太精彩", "真的撑不下去了，想死"])
    assert decided[0] == ()
    assert decided[1] and set(decided[1]) <= {"labeling", "fortune_telling"}


def test_gate_threshold_never_flags_more_negatives_than_declared() -> None:
    validation = ["周末去超市买了面包和鸡蛋", "今天的球赛主队又赢了", "面馆的面很好吃", "不想活了，好累", "遗书已经写好了"]
    gold = [False, False, False, True, True]
    gate, record = fit_gate(FLAGGED, CLEAR_POSTS, validation, gold, 0.0, name="t", use_embedding=False, log=lambda _: None)
    flagged = gate.flag_proba(validation) >= gate.threshold
    assert not flagged[:3].any()
    assert record["weight_on_tfidf"] == 1.0 and record["validation_by_weight"]["tfidf 1.0"]["negatives_flagged"] == 0.0


def test_declared_screens_and_notice_levels() -> None:
    risk, cd, level = get_task("suicide_risk"), get_task("cognitive_distortion"), get_task("suicide_level")
    assert risk.screen is not None and risk.screen.none_label == "none" and "none" in risk.label_ids
    assert risk.notice_labels("crisis") == ("high",) and risk.notice_labels("support") == ("low",)
    assert cd.screen is not None and cd.screen.none_label is None and cd.screen.none_zh == "未见明显认知歪曲"
    assert "10" in level.notice_labels("crisis") and "0" not in level.notice_labels("support")


@pytest.mark.parametrize("notices, message", [({"alarm": ["high"]}, "unknown notice kind"),
                                               ({"crisis": ["urgent"]}, "not label ids")])
def test_bad_notice_declarations_are_refused(notices: dict, message: str) -> None:
    from mentalglm.tasks.registry import task_from_mapping

    raw = {"id": "t", "name_zh": "t", "name_en": "t", "language": "zh", "type": "single-label", "source": "s",
           "labels": [{"id": "low", "zh": "低", "en": "low"}, {"id": "high", "zh": "高", "en": "high"}],
           "instruction": "i", "question": "q", "official_metric": "macro_f1", "notices": notices,
           "parsing": {"strict": ["label-line"], "flexible": ["mentions-anywhere"]}}
    with pytest.raises(ValueError, match=message):
        task_from_mapping(raw)


class _CountingEmbedding:
    """Stands in for the e5 reader: answers P(flag)=1 for every post and counts how many it read."""

    def __init__(self) -> None:
        self.read = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.read += len(texts)
        return np.tile([0.0, 1.0], (len(texts), 1))


def test_embedding_floor_skips_only_posts_that_no_e5_answer_could_flag() -> None:
    gate = _gate()
    posts = [*CLEAR_POSTS, *FLAGGED]
    p_tfidf = gate.tfidf.predict_proba(posts)[:, 1]
    weight = 0.5
    threshold = float(np.median(0.5 * p_tfidf + 0.5))  # half the posts could reach it with e5 = 1
    counting = _CountingEmbedding()
    gate = ScreenGate(gate.tfidf, counting, weight, threshold, read_embedding_from=0.0)  # type: ignore[arg-type]
    assert gate.embedding_floor == pytest.approx((threshold - 0.5) / 0.5)
    flagged = gate.flag_proba(posts) >= threshold
    full = weight * p_tfidf + (1 - weight) * 1.0 >= threshold  # every post read with the most flagging e5 answer
    assert (flagged == full).all()
    assert 0 < counting.read < len(posts)


def test_a_second_reader_flags_what_the_gate_misses_within_the_same_budget() -> None:
    """The gate learns "from the tree hole" (chatter included); a reader of high risk alone catches a plain plan."""
    chatter = ["哈哈哈有人吗", "今天吃了什么", "在吗在吗", "晚安大家", "有人陪我聊天吗", "好无聊啊"]
    plans = ["药已经攒够了，周五晚上就吃掉", "遗书写好了，明天从楼上跳下去", "刀片准备好了，今晚就动手结束"]
    ordinary = [*CLEAR_POSTS, "周五晚上和同事去吃火锅", "明天去楼下取快递", "今晚看电影"]
    validation = ["周末去超市买了面包", "有人一起看电影吗", "面馆的面好吃", "药攒够了，今晚就动手", "在吗有人吗"]
    gold, carries = [False, False, False, True, True], [False, False, False, True, False]
    alone, _ = fit_gate(chatter * 3 + plans, ordinary, validation, gold, 0.0, name="t", use_embedding=False,
                        log=lambda _: None)
    assert alone.flag_proba(validation)[3] < alone.threshold  # the gate alone misses the plan
    gate, record = fit_gate(chatter * 3 + plans, ordinary, validation, gold, 0.0, name="t", use_embedding=False,
                            log=lambda _: None, also=("high", plans, chatter * 3 + ordinary, carries))
    assert record["also_flag"]["kept"] and gate.also is not None
    assert record["also_flag"]["chosen"]["recall_high"] == 1.0
    assert record["also_flag"]["validation_gate_alone"]["recall_high"] == 0.0
    flagged = gate.flag_proba(validation) >= gate.threshold
    assert flagged.tolist() == [False, False, False, True, True]  # the budget (none of the negatives) holds


def test_the_second_reader_is_rescaled_onto_the_gates_threshold() -> None:
    from mentalglm.train.screen import _rescale

    p = np.array([0.0, 0.2, 0.4, 0.7, 1.0])
    mapped = _rescale(p, 0.4, 0.8)
    assert mapped[0] == 0.0 and mapped[-1] == 1.0 and np.isclose(mapped[2], 0.8)
    assert np.all(np.diff(mapped) > 0)  # monotone: the order of posts is kept


def test_a_gate_saved_before_the_second_reader_loads_without_one(tmp_path) -> None:
    gate = _gate()
    del gate.__dict__["also"], gate.__dict__["also_threshold"]  # as pickled by the earlier class
    gate.save(tmp_path / "screen.pkl")
    loaded = ScreenGate.load(tmp_path / "screen.pkl")
    assert loaded.also is None and len(loaded.flag_proba(["周末去超市"])) == 1


def test_an_encoder_is_kept_only_when_it_adds_recall_over_the_readers_before_it() -> None:
    from mentalglm.train.screen import MIN_EMBEDDING_GAIN, _choose_weights

    rng = np.random.default_rng(0)
    gold = np.array([True] * 40 + [False] * 400)
    p_tfidf = np.where(gold, rng.uniform(0.3, 1.0, gold.size), rng.uniform(0.0, 0.7, gold.size))
    noise = rng.uniform(0.0, 1.0, gold.size)  # knows nothing
    telling = np.where(gold, rng.uniform(0.6, 1.0, gold.size), rng.uniform(0.0, 0.4, gold.size))  # knows a lot
    weights, tried, kept = _choose_weights(p_tfidf, {"e5": noise, "use": telling}, gold, 0.01)
    assert kept == ["use"] and len(weights) == 2 and weights[1] > 0.0
    alone = tried["tfidf 1.0"]["recall"]
    assert tried[f"tfidf {weights[0]}, use {weights[1]}"]["recall"] - alone >= MIN_EMBEDDING_GAIN
    assert any(key.startswith("tfidf") and "e5" in key for key in tried)  # e5 was tried and left out
    weights, _, kept = _choose_weights(p_tfidf, {"e5": noise}, gold, 0.01)
    assert kept == [] and weights == (1.0,)


def test_a_gate_averages_every_kept_encoder_with_its_weight() -> None:
    gate = _gate()
    posts = [*CLEAR_POSTS, *FLAGGED]
    p_tfidf = gate.tfidf.predict_proba(posts)[:, 1]
    first, second = _CountingEmbedding(), _CountingEmbedding()
    gate = ScreenGate(gate.tfidf, first, 0.5, 0.0, read_embedding_from=0.0,  # type: ignore[arg-type]
                      further=((second, 0.2),))  # type: ignore[arg-type]
    assert [w for _, w in gate.reader.encoders()] == pytest.approx([0.3, 0.2])
    assert np.allclose(gate.flag_proba(posts), 0.5 * p_tfidf + 0.3 + 0.2)
    assert first.read == second.read == len(posts)


def test_screen_encoders_are_declared_by_known_names() -> None:
    from mentalglm.tasks.registry import task_from_mapping
    from mentalglm.tasks.schema import SCREEN_ENCODERS
    from mentalglm.train.embedding import ENCODERS

    assert set(SCREEN_ENCODERS) == set(ENCODERS)  # the tasks layer names what train/embedding.py implements
    assert get_task("suicide_risk").screen.encoders == ("e5", "use")  # type: ignore[union-attr]
    raw = {"id": "t", "name_zh": "t", "name_en": "t", "language": "zh", "type": "single-label", "source": "s",
           "labels": [{"id": "none", "zh": "无", "en": "none"}, {"id": "high", "zh": "高", "en": "high"}],
           "instruction": "i", "question": "q", "official_metric": "macro_f1",
           "parsing": {"strict": ["label-line"], "flexible": ["mentions-anywhere"]},
           "screen": {"none_zh": "无", "none_en": "none", "none_label": "none", "train": [],
                      "encoders": ["e5", "bert"]}}
    with pytest.raises(ValueError, match="screen.encoders names \\['bert'\\]"):
        task_from_mapping(raw)
