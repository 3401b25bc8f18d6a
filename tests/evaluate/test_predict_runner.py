"""Prediction rows, resume, few-shot prompts and subsets, on invented posts and a scripted backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentalglm.backends.fake import FakeBackend
from mentalglm.data.records import Post
from mentalglm.data.sampling import select_posts
from mentalglm.errors import MentalGLMError
from mentalglm.evaluate.predict import (
    ROW_KEYS,
    ClassifierSystem,
    LLMSystem,
    PredictionFileError,
    meta_path,
    pick_shots,
    read_rows,
    run_predictions,
)
from mentalglm.tasks import get_task

RISK = get_task("suicide_risk")
HIGH = "标签：高自杀风险\n推理：帖子写道“不想活了”，表达了明确的自杀意图。"


def _posts() -> list[Post]:
    texts = [("我不想活了，药已经买好", "high"), ("今天有点累", "low"), ("真的不想活了", "high"), ("考试没考好", "low")]
    return [Post(f"toy:{i}", text, (label,), "toy") for i, (text, label) in enumerate(texts)]


def _backend() -> FakeBackend:
    # the high-risk posts get the trained layout; the others a free-form answer only the flexible parser reads
    return FakeBackend(responses={"不想活": HIGH}, default="我认为是低自杀风险。")


def test_rows_have_the_documented_keys_and_both_parses(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    run_predictions(RISK, "test", _posts(), LLMSystem(_backend(), "fake:scripted"), out, progress=False)
    rows = [row for _, row in read_rows(out)]
    assert all(set(ROW_KEYS) <= set(row) for row in rows) and len(rows) == 4
    high, low = rows[0], rows[1]
    assert high["pred_strict"] == ["high"] and high["valid_strict"] and "不想活了" in high["explanation"]
    assert low["valid_strict"] is False and low["pred_flexible"] == ["low"] and low["valid_flexible"] is True
    assert high["system"] == "fake:scripted zero-shot" and high["gold"] == ["high"]
    assert high["prompt"][0]["role"] == "system" and "不想活了" in high["prompt"][-1]["content"]
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta["written"] == 4 and meta["config"]["model_id"] == "fake:scripted" and meta["peak_rss_mb"] > 0


def test_resume_skips_done_ids_and_redoes_a_cut_last_line(tmp_path: Path) -> None:
    out, backend = tmp_path / "preds.jsonl", _backend()
    system = LLMSystem(backend, "fake:scripted")
    run_predictions(RISK, "test", _posts()[:2], system, out, progress=False)  # "killed" after two posts
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "toy:2", "task": "suici')  # a line cut by the kill
    run = run_predictions(RISK, "test", _posts(), system, out, progress=False)
    ids = [row["id"] for _, row in read_rows(out)]
    assert ids == ["toy:0", "toy:1", "toy:2", "toy:3"]
    assert run.skipped == 2 and run.written == 2 and backend.calls == 4
    again = run_predictions(RISK, "test", _posts(), system, out, progress=False)
    assert again.written == 0 and backend.calls == 4


def test_resume_refuses_a_file_of_another_system(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    run_predictions(RISK, "test", _posts()[:1], LLMSystem(_backend(), "fake:scripted"), out, progress=False)
    meta_path(out).unlink()  # without the meta file the rows themselves still say whose they are
    with pytest.raises(PredictionFileError, match="preds.jsonl:1: holds a row of system"):
        run_predictions(RISK, "test", _posts(), LLMSystem(_backend(), "fake:other"), out, progress=False)


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    run_predictions(RISK, "test", _posts()[:1], LLMSystem(_backend(), "fake:scripted"), out, progress=False)
    changed = LLMSystem(_backend(), "fake:scripted", with_format_hint=True)
    with pytest.raises(MentalGLMError, match="another configuration"):
        run_predictions(RISK, "test", _posts(), changed, out, progress=False)


def test_a_backend_failure_is_an_invalid_row_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    run_predictions(RISK, "test", _posts()[1:2], LLMSystem(FakeBackend(default=None), "fake:none"), out,
                    progress=False)
    (_, row), = read_rows(out)
    assert row["valid_strict"] is False and row["valid_flexible"] is False and "LookupError" in row["error"]


def test_classifier_rows_are_valid_and_carry_no_text(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    system = ClassifierSystem("always-low", lambda texts: [("low",)] * len(texts), batch_size=3)
    run_predictions(RISK, "test", _posts(), system, out, progress=False)
    rows = [row for _, row in read_rows(out)]
    assert {(tuple(r["pred_strict"]), r["valid_strict"], r["raw_output"]) for r in rows} == {(("low",), True, "")}


def test_few_shot_turns_come_before_the_post_and_the_hint_is_optional() -> None:
    shots = [Post("train:1", "好想哭", ("low",), "toy"), Post("train:2", "我准备今晚跳楼", ("high",), "toy")]
    system = LLMSystem(FakeBackend(), "fake:scripted", shots, with_format_hint=True)
    messages = system.messages(RISK, _posts()[1])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "标签：低自杀风险" and messages[4]["content"] == "标签：高自杀风险"
    assert "今天有点累" in messages[-1]["content"] and "请严格按以下格式回答" in messages[-1]["content"]
    assert system.name == "fake:scripted 2-shot"


def test_pick_shots_is_seeded_label_balanced_and_skips_long_posts() -> None:
    pool = [Post(f"p{i}", "短帖" * (1 + i % 3), ("high" if i % 5 == 0 else "low",), "toy") for i in range(50)]
    pool.append(Post("long", "长" * 400, ("high",), "toy"))
    shots = pick_shots(pool, 2, seed=1)
    assert {s.labels[0] for s in shots} == {"high", "low"} and shots == pick_shots(pool, 2, seed=1)
    assert all(s.id != "long" for s in pick_shots(pool, 20, seed=1))


def test_select_posts_keeps_split_order_and_every_label() -> None:
    posts = [Post(f"p{i}", f"帖子{i}", ("high" if i < 3 else "low",), "toy") for i in range(30)]
    chosen = select_posts(posts, 6, seed=2)
    assert len(chosen) == 6 and {p.labels[0] for p in chosen} == {"high", "low"}
    assert [p.id for p in chosen] == [p.id for p in posts if p in chosen]
    assert select_posts(posts, None) == posts
