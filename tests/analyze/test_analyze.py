"""The analyzer on invented posts, tiny classifiers and a scripted LLM: no data directory, no model weights."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from tiny_analyzer import TASKS, tiny_models
from typer.testing import CliRunner

from mentalglm.analyze.artifacts import TaskModel, save_task_model
from mentalglm.analyze.calibration import Calibration, brier, choose_calibration, ece
from mentalglm.analyze.engine import Analyzer, InputRow, InputTextError
from mentalglm.analyze.engines import evidence_spans
from mentalglm.analyze.io import InputFileError, read_posts
from mentalglm.analyze.safety import NOT_A_DIAGNOSIS
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.backends.base import GenerationRequest
from mentalglm.backends.fake import FakeBackend
from mentalglm.errors import ConfigError
from mentalglm.tasks import get_task


@pytest.fixture(scope="module")
def models() -> dict[str, TaskModel]:
    return tiny_models()


def _post_in(request: GenerationRequest) -> str:
    user = request.messages[-1]["content"]
    return re.findall(r"帖子：“(.*?)”", user, re.S)[-1]


def quoting(request: GenerationRequest) -> str:
    """A teacher that quotes the first six characters of the post it was given."""
    post = _post_in(request)
    return f"帖子中“{post[:6]}”这句话直接表达了发帖人当时的处境和感受，结合上下文来看，整体情绪和态度与所给标注的定义相符。"


def labels_analyzer(models: dict[str, TaskModel], **kwargs) -> Analyzer:
    return Analyzer(TASKS, "labels", models=models, **kwargs)


def test_result_schema_and_not_a_diagnosis_notice(models):
    result = labels_analyzer(models).analyze("今天收到礼物，太开心了哈哈")
    assert isinstance(result, PostResult)
    assert result.text_length == len("今天收到礼物，太开心了哈哈") and not result.out_of_domain
    emotion = result.tasks["emotion"]
    assert emotion.engine == "labels" and emotion.valid and emotion.explanation is None
    assert [label.id for label in emotion.labels] == ["happy"]
    assert emotion.labels[0].name_zh == get_task("emotion").label("happy").zh
    assert set(emotion.confidences) == set(get_task("emotion").label_ids)
    assert abs(sum(emotion.confidences.values()) - 1) < 1e-3
    assert [n.text for n in result.notices if n.kind == "not_a_diagnosis"] == [NOT_A_DIAGNOSIS]
    assert json.loads(result.model_dump_json())["tasks"]["suicide_risk"]["labels"]


def test_crisis_notice_only_on_high_risk(models):
    analyzer = labels_analyzer(models)
    high = analyzer.analyze("药已经攒够了，今晚就结束这一切")
    low = analyzer.analyze("今天工作好累，但还是要加油")
    assert high.high_risk and any(n.kind == "crisis" for n in high.notices)
    crisis = next(n for n in high.notices if n.kind == "crisis")
    assert {"12356", "120", "110"} <= {r.contact for r in crisis.resources}
    assert not low.high_risk and [n.kind for n in low.notices] == ["not_a_diagnosis", "support"]
    ordinary = analyzer.analyze("周末去超市买了水果和牛奶")
    assert ordinary.tasks["suicide_risk"].labels[0].id == "none" and ordinary.tasks["suicide_risk"].nothing_evident
    assert [n.kind for n in ordinary.notices] == ["not_a_diagnosis"]
    english = labels_analyzer(models, locale="en").analyze("药已经攒够了，今晚就结束这一切")
    assert "hotline" in next(n for n in english.notices if n.kind == "crisis").resources[0].name


def test_hybrid_explains_with_evidence_offsets_into_the_original_post(models):
    backend = FakeBackend(responses=quoting)
    analyzer = Analyzer(TASKS, "hybrid", backend=backend, models=models)
    text = "我好难过，一个人哭了一晚上"
    result = analyzer.analyze(text)
    for task_result in result.tasks.values():
        assert task_result.explanation and task_result.model == "fake:scripted"
        assert task_result.evidence, task_result
        for span in task_result.evidence:
            assert text[span.start:span.end] == span.quote
        assert task_result.verifier_agrees in (True, False)
    assert [n.kind for n in result.notices][0] == "not_a_diagnosis"


def test_redraws_then_shows_the_attribution_when_the_explanation_argues_for_another_label(models):
    from mentalglm.analyze.engine import REDRAWS

    backend = FakeBackend(responses=lambda r: "帖子中“今天收到礼物”说明发帖人非常愤怒，符合愤怒的定义，整体情绪是愤怒和不满。")
    result = Analyzer(["emotion"], "hybrid", backend=backend, models=models).analyze("今天收到礼物，太开心了哈哈")
    task_result = result.tasks["emotion"]
    assert REDRAWS == 2 and backend.calls == 1 + REDRAWS and task_result.attempts == 1 + REDRAWS
    assert task_result.explanation_source == "attribution_fallback"
    assert "no_other_label" in (task_result.fallback_reason or "") and "愤怒" not in (task_result.explanation or "")
    assert task_result.explanation and task_result.explanation.startswith("判定为「高兴」")


def test_a_grammar_backend_gets_a_grounded_request_and_its_reply_is_kept(models):
    """On a backend that follows grammars the request carries one naming the decided label and the post's
    clauses; a reply in that shape which passes the checks is shown as llm_grounded, followed by what the
    classifier decides without the quoted clause (measured, not written by the LLM)."""
    post = "今天收到礼物，太开心了哈哈"

    def reply(request):
        assert request.settings.grammar is not None
        # the quote alternatives: the clause the tiny classifier relied on for 高兴; no 如果-sentence to write
        assert request.settings.grammar.splitlines()[:2] == [
            'root ::= "判断为「高兴」：帖子中写道“" quote "”，" reason "。"', 'quote ::= "太开心了哈哈"']
        # and the copy guard: no long run of a definition, nor of the post outside the quote
        assert request.settings.avoid_copying[-1] == post
        assert get_task("emotion").label("happy").definition_zh in request.settings.avoid_copying
        return "判断为「高兴」：帖子中写道“太开心了哈哈”，直接表达了收到礼物后的喜悦和快乐。"

    backend = FakeBackend(responses=reply, supports_grammar=True)
    analyzer = Analyzer(["emotion"], "hybrid", backend=backend, models=models)
    result = analyzer.analyze(post).tasks["emotion"]
    assert backend.calls == 1 and result.explanation_source == "llm_grounded" and result.qc_passed
    assert [span.quote for span in result.evidence] == ["太开心了哈哈"]
    without = Analyzer(["emotion"], "labels", models=models).analyze("今天收到礼物").tasks["emotion"]
    decided = "、".join(label.name_zh for label in without.labels)
    ending = result.explanation.removeprefix(reply(backend.requests[0]))
    assert ending == (f"如果去掉这句，分类器会改判为「{decided}」。" if decided != "高兴"
                      else "即使去掉这句，分类器仍判为「高兴」：帖子的其他内容也支持这一判断。")


def test_a_backend_without_grammars_refuses_a_grammar_request_instead_of_ignoring_it():
    from mentalglm.backends import GenerationRequest, GenerationSettings

    backend = FakeBackend(default="任何回答")
    result = backend.generate([GenerationRequest.from_prompt("你好", settings=GenerationSettings(grammar='root ::= "好"'))])[0]
    assert not result.ok and "grammar" in (result.error or "") and backend.calls == 0


def test_pii_is_scrubbed_before_the_backend_and_not_echoed(models):
    backend = FakeBackend(responses=lambda r: "帖子中“" + _post_in(r)[:20] + "”表达了发帖人强烈的情绪，电话13912345678，符合标注。")
    text = "@李小明 我的电话是13812345678，好难过，一个人哭了一晚上"
    result = Analyzer(TASKS, "hybrid", backend=backend, models=models).analyze(text)
    sent = json.dumps([r.messages for r in backend.requests], ensure_ascii=False)
    assert "13812345678" not in sent and "@李小明" not in sent and backend.requests
    exported = result.model_dump_json()
    assert "13812345678" not in exported and "13912345678" not in exported
    assert result.pii_scrubbed.get("phone") == 1


@pytest.mark.parametrize("text, message", [("", "empty"), ("   \n ", "empty"), ("难" * 2001, "more than the maximum")])
def test_bad_text_is_a_clear_error_or_an_error_record(models, text, message):
    analyzer = labels_analyzer(models)
    with pytest.raises(InputTextError, match=message):
        analyzer.analyze(text)
    records = list(analyzer.analyze_many(["好难过", text, "太开心了"], keep_going=True))
    assert [r.status for r in records] == ["ok", "error", "ok"]
    assert isinstance(records[1], ErrorRecord) and message in records[1].error


def test_out_of_domain_flag_on_english(models):
    result = labels_analyzer(models).analyze("I feel so tired of everything and nobody understands me")
    assert result.out_of_domain and result.tasks["emotion"].labels


def test_llm_engine_reports_invalid_explicitly(models):
    backend = FakeBackend(responses={"帖子：“今天": "标签：高兴\n推理：帖子中“今天收到礼物”表达了喜悦。"},
                          default="我不知道。")
    analyzer = Analyzer(["emotion"], "llm", backend=backend, models=models)
    ok, bad = list(analyzer.analyze_many(["今天收到礼物，太开心了哈哈", "随便说点什么吧"]))
    assert ok.tasks["emotion"].valid and [label.id for label in ok.tasks["emotion"].labels] == ["happy"]
    assert ok.tasks["emotion"].evidence[0].quote == "今天收到礼物"
    assert not bad.tasks["emotion"].valid and bad.tasks["emotion"].labels == []
    assert "INVALID" in bad.tasks["emotion"].error


def test_evidence_spans_tolerate_width_and_punctuation():
    post = "ＡＢＣ，我真的、好累啊！！"
    spans = evidence_spans("帖子中“abc我真的好累”说明……", post)
    assert len(spans) == 1 and post[spans[0].start:spans[0].end] == spans[0].quote == "ＡＢＣ，我真的、好累"
    assert evidence_spans("“不在帖子里的话”", post) == []


def test_streaming_is_lazy(models):
    consumed = 0

    def rows() -> Iterator[str]:
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield "好难过"

    stream = labels_analyzer(models).analyze_many(rows(), batch_size=8)
    next(stream)
    assert consumed <= 9


def test_file_reader_streams_a_1000_line_file(tmp_path, models):
    path = tmp_path / "posts.txt"
    path.write_text("\n".join(["好难过"] * 1000) + "\n", encoding="utf-8")
    rows = read_posts(path)
    assert next(rows).text == "好难过"  # a generator: nothing else has been read
    results = labels_analyzer(models).analyze_many(read_posts(path), batch_size=32)
    assert sum(1 for _ in results) == 1000


def test_bad_files(tmp_path, models):
    binary = tmp_path / "posts.txt"
    binary.write_bytes(b"\x89PNG\x00\x00\x01")
    with pytest.raises(InputFileError, match="binary"):
        list(read_posts(binary))
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("好难过\n".encode() + "今天很开心\n".encode("gbk"))
    analyzer = labels_analyzer(models)
    records = list(analyzer.analyze_many(read_posts(gbk), keep_going=True))
    assert [r.status for r in records] == ["ok", "error"] and "UTF-8" in records[1].error
    with pytest.raises(InputTextError, match="line 2 is not valid UTF-8"):
        list(analyzer.analyze_many(read_posts(gbk)))
    no_text = tmp_path / "posts.csv"
    no_text.write_text("id,body\n1,好难过\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="no text column.*--text-column"):
        list(read_posts(no_text))
    records = list(analyzer.analyze_many(read_posts(no_text, keep_going=True), keep_going=True))
    assert [r.status for r in records] == ["error"] and records[0].id == "1"
    assert [r.text for r in read_posts(no_text, text_column="body")] == ["好难过"]
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text('{"id": "a", "text": "好难过"}\nnot json\n{"id": "c"}\n', encoding="utf-8")
    records = list(analyzer.analyze_many(read_posts(jsonl), keep_going=True))
    assert [(r.id, r.status) for r in records] == [("a", "ok"), ("posts.jsonl:2", "error"), ("c", "error")]
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(InputFileError, match="unknown input format"):
        list(read_posts(tmp_path / "x.docx"))


def test_cli_streams_a_csv_to_jsonl(tmp_path, models):
    from mentalglm.cli import app

    for model in models.values():
        save_task_model(model, tmp_path / "artifacts")
    posts = tmp_path / "posts.csv"
    posts.write_text('id,text\n1,"药已经攒够了，今晚就结束这一切"\n2,\n3,今天收到礼物，太开心了哈哈\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["analyze", "--input", str(posts), "--output", str(out), "--engine", "labels", "--tasks", ",".join(TASKS),
            "--artifacts-dir", str(tmp_path / "artifacts")]
    result = CliRunner().invoke(app, [*args, "--keep-going"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in rows] == ["ok", "error", "ok"] and rows[0]["high_risk"]
    assert "text" not in rows[0]  # exports never carry the post
    again = CliRunner().invoke(app, args)  # a complete output is not redone
    assert again.exit_code == 0 and "1 file(s), 1 already complete" in again.output
    failed = CliRunner().invoke(app, [*args, "--overwrite"])
    assert failed.exit_code != 0 and isinstance(failed.exception, InputTextError)
    pretty = CliRunner().invoke(app, ["analyze", "药已经攒够了，今晚就结束这一切", "--engine", "labels",
                                      "--tasks", ",".join(TASKS), "--artifacts-dir", str(tmp_path / "artifacts")])
    assert pretty.exit_code == 0 and "12356" in pretty.output and "并非诊断" in pretty.output


def test_calibration_measures():
    import numpy as np

    rng = np.random.default_rng(0)
    y_index = rng.integers(0, 2, 400)
    y = np.eye(2)[y_index]
    overconfident = np.clip(y * 0.98 + 0.01 + rng.normal(0, 0.01, y.shape), 0.01, 0.99)
    overconfident[:100] = overconfident[:100, ::-1]  # a quarter confidently wrong
    overconfident /= overconfident.sum(axis=1, keepdims=True)
    calibration, measured = choose_calibration(overconfident, y, multi_label=False)
    assert measured["temperature_2fold"]["brier"] < measured["raw"]["brier"] and calibration.method == "temperature"
    assert calibration.temperature > 1  # overconfident: the probabilities are softened
    assert ece(calibration.apply(overconfident), y, False) < ece(overconfident, y, False)
    assert brier(Calibration().apply(y), y, False) == 0
    multi, measured = choose_calibration(overconfident, y, multi_label=True)  # per label: Platt
    assert multi.method == "platt" and "platt_2fold" in measured


def test_single_label_calibration_never_changes_the_decided_label():
    """The label shown must be the most confident label shown: a temperature keeps the order of every row."""
    import numpy as np

    rng = np.random.default_rng(1)
    truth = rng.dirichlet(np.full(6, 1.0), size=500)
    y = np.eye(6)[[rng.choice(6, p=row) for row in truth]]  # labels drawn from `truth`
    proba = truth**3 / (truth**3).sum(axis=1, keepdims=True)  # a model that is sure of itself
    calibration, _ = choose_calibration(proba, y, multi_label=False)
    calibrated = calibration.apply(proba)
    assert calibration.method == "temperature"
    assert (calibrated.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert np.allclose(calibrated.sum(axis=1), 1)
    # cards written before (renormalised per-label Platt) still load and apply as they did
    old = Calibration.from_dict({"method": "platt", "coef": [[2.0, 1.0], [2.0, -1.0]], "normalise": True})
    assert old.method == "platt" and np.allclose(old.apply(proba[:, :2]).sum(axis=1), 1)
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_missing_artifacts_name_the_fix(tmp_path):
    from mentalglm.errors import MissingDataError

    with pytest.raises(MissingDataError, match="analyze-train"):
        Analyzer(["suicide_risk"], "labels", artifacts_dir=tmp_path)


def test_lazy_top_level_export():
    import mentalglm

    assert mentalglm.Analyzer is Analyzer


def test_input_row_error_is_reported(models):
    records = list(labels_analyzer(models).analyze_many([InputRow("x", None, 3, "broken")], keep_going=True))
    assert records == [ErrorRecord(id="x", line=3, error="broken")]


class _KeywordClassifier:
    """A classifier with no TF-IDF inside (as an encoder alone): P(sad) rises with the word 难过."""

    classes = ["angry", "happy", "neutral", "sad", "surprise", "fear"]
    multi_label = False

    def predict_proba(self, texts):
        import numpy as np

        sad = np.array([[0.9 if "难过" in t else 0.02] for t in texts])
        return np.hstack([np.full((len(texts), 3), (1 - sad) / 5), sad, np.full((len(texts), 2), (1 - sad) / 5)])

    def decide(self, proba):
        return [(self.classes[int(i)],) for i in proba.argmax(axis=1)]

    def predict(self, texts):
        return self.decide(self.predict_proba(texts))


def test_any_classifier_runs_every_engine_and_only_a_tfidf_one_is_saved(tmp_path):
    from mentalglm.train.classical import tfidf_part

    model = TaskModel(get_task("emotion"), _KeywordClassifier())
    assert model.tfidf is None and tfidf_part(tiny_models()["suicide_risk"].classifier) is not None
    text = "我好难过，一个人哭了一晚上"
    for engine in ("labels", "attribution"):
        result = Analyzer(["emotion"], engine, models={"emotion": model}).analyze(text).tasks["emotion"]
        assert [label.id for label in result.labels] == ["sad"]
    hybrid = Analyzer(["emotion"], "hybrid", backend=FakeBackend(responses=quoting), models={"emotion": model})
    assert hybrid.analyze(text).tasks["emotion"].verifier_agrees is None  # no TF-IDF to verify with
    with pytest.raises(ConfigError, match="no TF-IDF base"):
        save_task_model(model, tmp_path)


def test_saved_parts_load_back_and_stale_ones_are_removed(tmp_path):
    from mentalglm.analyze.artifacts import load_task_model, screen_path
    from mentalglm.train.screen import GatedClassifier

    screened = tiny_models()["suicide_risk"]
    save_task_model(screened, tmp_path)
    loaded = load_task_model("suicide_risk", tmp_path)
    assert isinstance(loaded.classifier, GatedClassifier) and loaded.tfidf is not None
    texts = ["药已经攒够了，今晚就结束这一切", "周末去超市买了水果和牛奶"]
    assert loaded.predict(texts) == screened.predict(texts)
    save_task_model(replace(screened, classifier=screened.classifier.inner, card={}), tmp_path)  # without a screen
    assert not screen_path(tmp_path, "suicide_risk").exists()


def test_an_explanation_quoting_the_whole_post_gets_no_sentence_about_the_rest(models):
    """A one-clause post less its quoted clause is empty: no classifier reading of "the rest" is reported."""
    post = "太开心了哈哈"

    def reply(request):
        assert 'quote ::= "太开心了哈哈"' in request.settings.grammar.splitlines()
        return "判断为「高兴」：帖子中写道“太开心了哈哈”，直接表达了收到礼物后的喜悦和快乐。"

    backend = FakeBackend(responses=reply, supports_grammar=True)
    result = Analyzer(["emotion"], "hybrid", backend=backend, models=models).analyze(post).tasks["emotion"]
    assert result.explanation_source == "llm_grounded"
    assert result.explanation == reply(backend.requests[0])


def test_an_analyzer_whose_backbone_carries_an_explainer_explains_with_it_by_default(models, tmp_path):
    """One base decides and explains: `llamacpp:default` means the backbone's explainer GGUF (named by the adapter it
    came from, so a resumed batch notices another one); a named model is kept; engines without an LLM never look."""
    import hashlib
    import json

    backbone = tmp_path / "backbone"
    (backbone / "adapter").mkdir(parents=True)
    (backbone / "adapter" / "adapter_model.safetensors").write_bytes(b"heads' adapter")
    gguf = backbone / "explainer-q8_0.gguf"
    gguf.write_bytes(b"GGUF" * 10)
    meta = {"tasks": {}, "base": "embedded:qwen2.5-0.5b", "hidden": 8,
            "explainer": {"file": gguf.name, "bytes": 40, "adapter_sha256": "a" * 64,
                          "trained_above": hashlib.sha256(b"heads' adapter").hexdigest()}}
    (backbone / "backbone.json").write_text(json.dumps(meta), encoding="utf-8")
    own = Analyzer(["emotion"], "hybrid", artifacts_dir=tmp_path, models=models)
    assert own._backend_spec == f"llamacpp:{gguf.resolve()}"
    assert own.describe()["llm"] == "backbone explainer explainer-q8_0.gguf (adapter aaaaaaaaaaaaaaaa)"
    named = Analyzer(["emotion"], "hybrid", "llamacpp:qwen2.5-0.5b", artifacts_dir=tmp_path, models=models)
    assert named.describe()["llm"] == "llamacpp:qwen2.5-0.5b"
    plain = Analyzer(["emotion"], "hybrid", artifacts_dir=tmp_path / "none", models=models)
    assert plain.describe()["llm"] == "llamacpp:default"
    gguf.write_bytes(b"GGUF")
    Analyzer(["emotion"], "labels", artifacts_dir=tmp_path, models=models)  # no LLM: the explainer is not read
    with pytest.raises(Exception, match="cut copy"):  # never the untuned model in its place
        Analyzer(["emotion"], "hybrid", artifacts_dir=tmp_path, models=models)
    gguf.write_bytes(b"GGUF" * 10)
    (backbone / "adapter" / "adapter_model.safetensors").write_bytes(b"retrained heads")
    with pytest.raises(Exception, match="trained above another adapter"):
        Analyzer(["emotion"], "hybrid", artifacts_dir=tmp_path, models=models)
