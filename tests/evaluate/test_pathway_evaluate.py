"""Pathway systems through the runner: the trained classifier and a scripted LLM on the invented fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentalglm.backends.base import GenerationRequest
from mentalglm.backends.fake import FakeBackend
from mentalglm.cli import app
from mentalglm.errors import ConfigError
from mentalglm.evaluate.pathway import evaluate_predictions, read_pathway_files, run_classifier, run_llm
from mentalglm.evaluate.runner import evaluate_file
from mentalglm.tasks.parsing import parse
from mentalglm.tasks.pathway import pathway_scores
from mentalglm.train.pathway import train_pathway

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pathway"
runner = CliRunner()


@pytest.fixture(scope="module")
def files():
    return read_pathway_files(FIXTURE)


def _sentence(request: GenerationRequest) -> str:
    return re.findall(r"帖子：“(.*?)”", request.messages[-1]["content"], re.S)[-1]


# Scripted answers keyed by a word of the test sentence: strict layout, prose only the flexible parser reads,
# a child name with a slash, and nothing readable at all (INVALID in both modes).
SCRIPT = {
    "爸妈": "标签：触发性事件、人际冲突\n推理：和父母吵架。",
    "业绩": "标签：学业/工作压力\n推理：业绩没有达标。",
    "失望": "这句话体现了以偏概全的认知歪曲。",
    "敏感": "我不确定。",
}


def scripted(request: GenerationRequest) -> str:
    sentence = _sentence(request)
    return next((reply for word, reply in SCRIPT.items() if word in sentence), "标签：情绪反应\n推理：有情绪。")


def test_an_llm_is_scored_strict_and_flexible_with_invalid_counted(tmp_path: Path, files) -> None:
    backend = FakeBackend(responses=scripted)
    predictions = run_llm(backend, "fake:scripted", files, tmp_path / "llm.jsonl", progress=False)
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    by_text = {post.id: post.text for post in files.splits["test"]}
    assert len(rows) == 16 and rows[0]["task"] == "cognitive_pathway"
    first = next(r for r in rows if "业绩" in by_text[r["id"]])
    assert first["pred_strict"] == ["触发性事件##学业/工作压力"] and first["valid_strict"]
    prose = next(r for r in rows if "失望" in by_text[r["id"]])
    assert not prose["valid_strict"] and prose["pred_flexible"] == ["认知歪曲", "认知歪曲##以偏概全"]
    (results,) = evaluate_predictions(predictions, files, tmp_path / "llm.results.json", n_resamples=50)
    metrics = json.loads(results.read_text(encoding="utf-8"))["metrics"]
    assert metrics["strict"]["n_invalid"] == 2 and metrics["flexible"]["n_invalid"] == 1
    task = files.task
    for mode in ("strict", "flexible"):  # the runner's numbers are pathway_scores of the parsed replies
        pred = []
        for post in files.splits["test"]:
            parsed = parse(task, scripted(GenerationRequest([{"role": "user", "content": f"帖子：“{post.text}”"}])), mode)
            pred.append(parsed.labels if parsed.valid else None)
        expected = pathway_scores([p.labels for p in files.splits["test"]], pred, files.labels)
        for key in ("micro_f1", "macro_f1", "parent_micro_f1", "child_micro_f1", "child_macro_f1"):
            assert metrics[mode][key] == pytest.approx(expected[key]), (mode, key)
    assert metrics["headline"]["metric"] == "micro_f1" and metrics["headline"]["value"] == metrics["flexible"]["micro_f1"]
    assert set(metrics["flexible"]["per_label"]) == {"parent", "child"}


def test_few_shot_examples_come_from_train_with_parents_and_children_named(tmp_path: Path, files) -> None:
    backend = FakeBackend(responses=scripted)
    run_llm(backend, "fake:scripted", files, tmp_path / "few.jsonl", few_shot=4, limit=5, progress=False)
    assert backend.calls == 5
    messages = backend.requests[0].messages
    shots = [m for m in messages[1:-1] if m["role"] == "user"]
    answers = [m["content"] for m in messages[1:-1] if m["role"] == "assistant"]
    test_texts = {p.text for p in files.splits["test"]}
    train_texts = {p.text for p in files.splits["train"]}
    assert len(shots) == 4 and all(_sentence(GenerationRequest([s])) in train_texts - test_texts for s in shots)
    for answer in answers:  # a child is written with its parent, as the task names both levels
        labels = parse(files.task, answer, "strict").labels
        assert labels and all(label.split("##")[0] in labels for label in labels)
    assert "学业/工作压力" in messages[-1]["content"] and "可选：" in messages[-1]["content"]  # children and hint


def test_the_classifier_results_match_its_card(tmp_path: Path, files) -> None:
    _, card = train_pathway(FIXTURE, tmp_path / "m", kinds=["tfidf"], n_resamples=0, log=lambda _: None)
    predictions = run_classifier(tmp_path / "m", files, tmp_path / "clf.jsonl", progress=False)
    (results,) = evaluate_predictions(predictions, files, n_resamples=0)
    payload = json.loads(results.read_text(encoding="utf-8"))
    assert payload["metrics"]["flexible"]["micro_f1"] == pytest.approx(card["test"]["micro_f1"])
    assert payload["metrics"]["strict"]["n_invalid"] == 0 and payload["run"]["system"] == "pathway-tfidf"
    assert payload["run"]["pathway_files_sha256"] == files.files_sha256


def test_the_general_evaluate_points_to_the_pathway_command(tmp_path: Path, files) -> None:
    predictions = run_llm(FakeBackend(responses=scripted), "fake:scripted", files, tmp_path / "p.jsonl", limit=3,
                          progress=False)
    with pytest.raises(ConfigError, match="mentalglm pathway evaluate PREDICTIONS --pathway-dir DIR"):
        evaluate_file(predictions, index=files.index(), n_resamples=0, bertscore=None)


def test_cli_predict_needs_one_system_and_evaluate_prints_levels(tmp_path: Path) -> None:
    both = runner.invoke(app, ["pathway", "predict", "--pathway-dir", str(FIXTURE), "--backend", "fake:echo",
                               "--model", str(tmp_path)])
    assert isinstance(both.exception, ConfigError) and "either --backend" in str(both.exception)
    out = tmp_path / "echo.jsonl"
    made = runner.invoke(app, ["pathway", "predict", "--pathway-dir", str(FIXTURE), "--backend", "fake:echo",
                               "--limit", "4", "--out", str(out)])
    assert made.exit_code == 0, made.output
    scored = runner.invoke(app, ["pathway", "evaluate", str(out), "--pathway-dir", str(FIXTURE), "--resamples", "20"])
    assert scored.exit_code == 0, scored.output
    assert "parent micro / macro" in scored.output and "fake:echo zero-shot (strict)" in scored.output


@pytest.mark.parametrize("args", [["predict", "--task", "cognitive_pathway", "--backend", "fake:echo"],
                                  ["baseline", "tfidf", "--task", "cognitive_pathway"],
                                  ["analyze-train", "--tasks", "emotion,cognitive_pathway"]])
def test_flat_commands_name_the_pathway_command(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError) and "mentalglm pathway" in str(result.exception)
