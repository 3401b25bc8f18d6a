"""The batch runner: files, directories and globs of posts in, results in input order out, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tiny_analyzer import HIGH, LOW, SAMPLES, TASKS, tiny_models
from typer.testing import CliRunner

from mentalglm.analyze.artifacts import save_task_model
from mentalglm.analyze.batch import (
    RunSummary,
    analyse_rows,
    fingerprint,
    open_files,
    run_local,
)
from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.io import InputFileError, index_rows, read_posts
from mentalglm.analyze.outputs import plan_files
from mentalglm.errors import ConfigError

NEVER = 1 << 62  # one chunk a file: the local runner reads each file from where it stopped


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture()
def analyzer(models) -> Analyzer:
    return Analyzer(TASKS, "labels", models=models)


def _posts(n: int, start: int = 0) -> list[str]:
    return [SAMPLES[(start + i) % len(SAMPLES)] + f" #{start + i}" for i in range(n)]


def _inputs(folder: Path) -> Path:
    """One file of each format, a bad row in two of them."""
    folder.mkdir()
    lines = [json.dumps({"id": f"j{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(_posts(30))]
    lines[7] = "{not json"
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (folder / "b.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i, text in enumerate(_posts(25, 100)):
            writer.writerow([f"c{i}", "" if i == 3 else text + ("\n第二行" if i % 5 == 0 else "")])
    (folder / "c.txt").write_text("\n".join(_posts(12, 200)) + "\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"post_id": [f"p{i}" for i in range(40)], "content": _posts(40, 300)}),
                   folder / "d.parquet", row_group_size=7)
    return folder


def _run(spec, output: Path, analyzer: Analyzer, *, keep_going: bool = True, overwrite: bool = False,
         fmt: str = "jsonl") -> RunSummary:
    summary = RunSummary()
    pending = open_files(plan_files(spec, output, fmt), fingerprint(analyzer), summary, overwrite=overwrite,
                         keep_going=keep_going, chunk_rows=NEVER, runner="local")
    summary.rows, summary.seconds = run_local(pending, analyzer, batch_size=8, keep_going=keep_going,
                                              text_column=None, id_column=None)
    return summary


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_directory_of_mixed_formats_gives_one_output_per_input_in_input_order(tmp_path, analyzer) -> None:
    inputs = _inputs(tmp_path / "in")
    summary = _run(inputs, tmp_path / "out", analyzer)
    assert summary.rows == 30 + 25 + 12 + 40 and summary.files == 4
    for source in sorted(inputs.iterdir()):
        rows = _lines(tmp_path / "out" / f"{source.stem}.jsonl")
        expected = list(analyzer.analyze_many(read_posts(source, keep_going=True), keep_going=True))
        assert rows == [json.loads(r.model_dump_json()) for r in expected]
    a = _lines(tmp_path / "out" / "a.jsonl")
    assert a[7]["status"] == "error" and "not valid JSON" in a[7]["error"] and a[8]["id"] == "j8"
    b = _lines(tmp_path / "out" / "b.jsonl")
    assert b[3]["status"] == "error" and b[3]["id"] == "c3" and b[3]["line"] == 6  # row 0 spans lines 2-3
    assert [r["id"] for r in _lines(tmp_path / "out" / "d.jsonl")][:2] == ["p0", "p1"]
    meta = json.loads((tmp_path / "out" / "_mentalglm" / "a.jsonl.meta.json").read_text(encoding="utf-8"))
    assert meta["state"] == "done" and meta["rows"] == 30 and meta["errors"] == 1


def test_a_rerun_after_a_kill_redoes_nothing_and_duplicates_nothing(tmp_path, models, monkeypatch) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps({"id": f"x{i}", "text": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(_posts(100))), encoding="utf-8")
    reference = Analyzer(TASKS, "labels", models=models)
    _run(source, tmp_path / "reference.jsonl", reference)

    class Killed(BaseException):
        pass

    calls: list[int] = []
    limit = [40]

    class Dying(Analyzer):
        def _analyse_batch(self, rows):
            calls.append(len(rows))
            if sum(calls) > limit[0]:
                raise Killed()
            return super()._analyse_batch(rows)

    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        _run(source, out, Dying(TASKS, "labels", models=models))
    partial = tmp_path / "_mentalglm" / "out.jsonl.partial.jsonl"
    kept = partial.read_text(encoding="utf-8").count("\n")
    assert kept == 40 and not out.exists()
    with partial.open("a", encoding="utf-8") as handle:
        handle.write('{"status":"ok","id":"x40","tex')  # the kill tore the next line
    calls.clear()
    limit[0] = 1 << 30
    summary = _run(source, out, Dying(TASKS, "labels", models=models))
    assert summary.resumed_rows == 40 and sum(calls) == 60  # only the rows the killed run had not written
    assert out.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
    again = _run(source, out, reference)
    assert again.skipped_complete == 1 and again.rows == 0


def test_a_changed_input_or_another_analyzer_is_refused_not_mixed(tmp_path, models) -> None:
    source = tmp_path / "posts.txt"
    source.write_text("\n".join(HIGH + LOW) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    _run(source, out, Analyzer(TASKS, "labels", models=models))
    with pytest.raises(ConfigError, match="another analyzer"):
        _run(source, out, Analyzer(("suicide_risk",), "labels", models=models))
    source.write_text("\n".join(LOW) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the input changed"):
        _run(source, out, Analyzer(TASKS, "labels", models=models))
    summary = _run(source, out, Analyzer(TASKS, "labels", models=models), overwrite=True)
    assert summary.rows == len(LOW) and len(_lines(out)) == len(LOW)
    (tmp_path / "mine.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not written by this batch runner"):
        _run(source, tmp_path / "mine.jsonl", Analyzer(TASKS, "labels", models=models))


def test_unreadable_and_foreign_files_are_named_before_any_work(tmp_path, analyzer) -> None:
    inputs = _inputs(tmp_path / "in")
    (inputs / "e.parquet").write_bytes(b"PAR1 this is not parquet")
    (inputs / "f.jsonl").write_bytes(b"\x00\x01binary")
    with pytest.raises(InputFileError, match=r"e\.parquet.*not a readable Parquet.*f\.jsonl.*binary"):
        _run(inputs, tmp_path / "out", analyzer, keep_going=False)
    assert not (tmp_path / "out" / "a.jsonl").exists()
    summary = _run(inputs, tmp_path / "out", analyzer, keep_going=True)
    assert summary.rows == 107 and len(summary.unreadable) == 2
    (inputs / "notes.md").write_text("hello", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"notes\.md.*glob"):
        _run(inputs, tmp_path / "out2", analyzer)
    summary = _run(str(inputs / "*.csv"), tmp_path / "out3", analyzer)
    assert summary.files == 1 and (tmp_path / "out3" / "b.jsonl").exists()


def test_parquet_output_keeps_order_and_a_fixed_schema(tmp_path, analyzer) -> None:
    import pyarrow.parquet as pq

    inputs = _inputs(tmp_path / "in")
    _run(inputs, tmp_path / "out", analyzer, fmt="parquet")
    table = pq.read_table(tmp_path / "out" / "a.parquet")
    assert table.column_names == ["id", "status", "line", "error", "high_risk", "labels", "result"]
    rows = table.to_pylist()
    assert [r["id"] for r in rows][:3] == ["j0", "j1", "j2"] and rows[7]["status"] == "error"
    assert dict(rows[0]["labels"]).keys() == set(TASKS)
    assert json.loads(rows[0]["result"])["tasks"]["emotion"]["labels"]
    assert pq.read_table(tmp_path / "out").num_rows == 107  # the folder reads as one table (state dir skipped)


def test_a_post_the_analyzer_fails_on_is_one_error_record(models) -> None:
    class Fragile(Analyzer):
        def _analyse_batch(self, rows):
            if any("炸" in (r.text or "") for r in rows):
                raise ZeroDivisionError("a bug")
            return super()._analyse_batch(rows)

    rows = [InputRow("a", HIGH[0]), InputRow("b", "炸 a bug"), InputRow("c", LOW[0])]
    results = analyse_rows(Fragile(TASKS, "labels", models=models), rows)
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert "ZeroDivisionError" in results[1].error and "a bug" not in results[1].error
    with pytest.raises(ZeroDivisionError):
        analyse_rows(Fragile(TASKS, "labels", models=models), rows, keep_going=False)


def test_index_rows_lets_any_reader_start_mid_file(tmp_path) -> None:
    inputs = _inputs(tmp_path / "in")
    for source in sorted(inputs.iterdir()):
        every = list(read_posts(source, keep_going=True))
        total, seeks = index_rows(source, 6, first_row=4)
        assert total == len(every) and [s.row for s in seeks] == list(range(4, total, 6))
        for seek in seeks:
            assert next(read_posts(source, keep_going=True, start=seek)) == every[seek.row]


def test_cli_directory_to_directory_and_a_report(tmp_path, models) -> None:
    from mentalglm.cli import app

    for model in models.values():
        save_task_model(model, tmp_path / "artifacts")
    inputs = _inputs(tmp_path / "in")
    args = ["analyze", "--input", str(inputs), "--output", str(tmp_path / "out"), "--engine", "labels",
            "--tasks", ",".join(TASKS), "--artifacts-dir", str(tmp_path / "artifacts"), "--keep-going",
            "--report", str(tmp_path / "report.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["rows"] == 107 and report["files"] == 4 and report["errors"] == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl")) == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"]
    no_output = CliRunner().invoke(app, args[:3] + args[5:])
    assert no_output.exit_code != 0 and "--output DIR" in str(no_output.exception)


@pytest.mark.slow
def test_hybrid_with_a_concurrent_server_backend_gives_the_sequential_results(tmp_path, models, monkeypatch) -> None:
    pytest.importorskip("openai")
    import re

    from mentalglm.backends.stub_server import StubChatServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def quoting(messages) -> str:
        post = re.findall(r"帖子：“(.*?)”", messages[-1]["content"], re.S)[-1]
        return f"帖子中“{post[:6]}”这句话直接表达了发帖人当时的处境和感受，整体情绪和态度与所给标注的定义相符。"

    rows = [InputRow(f"p{i}", text) for i, text in enumerate(_posts(8))]
    with StubChatServer(delay_s=0.05, reply=quoting) as server:
        outputs = []
        for concurrency in (1, 8):
            analyzer = Analyzer(TASKS, "hybrid", backend="openai:stub", models=models,
                                backend_options={"base_url": server.url, "concurrency": concurrency})
            with analyzer:
                outputs.append([r.model_dump_json() for r in analyse_rows(analyzer, rows, batch_size=8)])
            if concurrency == 1:
                assert server.max_in_flight == 1
        assert server.max_in_flight == 8  # 8 posts x 2 tasks explained at once
    assert outputs[0] == outputs[1] and '"explanation":"帖子中' in outputs[0][0]


def test_the_fingerprint_changes_with_any_model_that_decides_results(models) -> None:
    from types import SimpleNamespace

    first, second = Analyzer(TASKS, "labels", models=models), Analyzer(TASKS, "labels", models=models)
    assert fingerprint(first) == fingerprint(second)
    first.pathway["cognitive_pathway"] = SimpleNamespace(card={"model": "pathway-a"})  # type: ignore[assignment]
    second.pathway["cognitive_pathway"] = SimpleNamespace(card={"model": "pathway-b"})  # type: ignore[assignment]
    assert fingerprint(first) != fingerprint(second)
    assert fingerprint(Analyzer(TASKS, "labels", models=models, explain=False)) != fingerprint(
        Analyzer(TASKS, "labels", models=models))
