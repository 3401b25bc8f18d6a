"""`mentalglm analyze --ray`: the batch runner as a Ray Data pipeline gives the local runner's files, and a
kill -9 in the middle of a Ray run loses and duplicates nothing. Skipped without Ray (the `ray` extra)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_analyzer import SAMPLES, TASKS, tiny_models
from typer.testing import CliRunner

from mentalglm.analyze.artifacts import save_task_model
from mentalglm.analyze.outputs import STATE_DIR
from mentalglm.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src"


def _artifacts(folder: Path) -> Path:
    for model in tiny_models().values():
        save_task_model(model, folder)
    return folder


def _inputs(folder: Path, rows: int) -> Path:
    folder.mkdir()
    for name in ("a", "b", "c"):
        lines = [json.dumps({"id": f"{name}{i}", "text": SAMPLES[i % len(SAMPLES)] + f" {i}"}, ensure_ascii=False)
                 for i in range(rows)]
        lines[5] = "{a torn row"
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _command(inputs: Path, out: Path, artifacts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mentalglm.cli", "analyze", "--input", str(inputs), "--output", str(out),
            "--engine", "labels", "--tasks", ",".join(TASKS), "--artifacts-dir", str(artifacts), "--keep-going",
            "--batch-size", "32", *extra]


def _written(out: Path) -> int:
    finished = sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl"))
    return finished + sum(p.read_bytes().count(b"\n") for p in (out / STATE_DIR).glob("*.partial.jsonl"))


def test_an_unreachable_address_is_a_clear_error(tmp_path: Path) -> None:
    from mentalglm.analyze.distributed import check_reachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+.*ray start --head"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="expected local, auto"):
        check_reachable("ray://")
    assert time.monotonic() - start < 10


def test_cli_refuses_an_unreachable_cluster_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from mentalglm.cli import app

    inputs = _inputs(tmp_path / "in", 10)
    args = _command(inputs, tmp_path / "out", _artifacts(tmp_path / "artifacts"), "--ray", "127.0.0.1:9")[3:]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "cannot reach the Ray cluster" in str(result.exception)


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_ray_run_then_rerun_gives_the_local_results(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    rows = 4000
    inputs, artifacts = _inputs(tmp_path / "in", rows), _artifacts(tmp_path / "artifacts")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    local = tmp_path / "local"
    subprocess.run(_command(inputs, local, artifacts), env=env, check=True, capture_output=True, timeout=600)

    out = tmp_path / "ray"
    ray_run = _command(inputs, out, artifacts, "--ray", "local", "--ray-actors", "2", "--chunk-rows", "500")
    # its own session, so that the Ray processes this run starts are killed with it (and only those)
    proc = subprocess.Popen(ray_run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while _written(out) < 600 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _written(out)
    assert 600 <= at_kill < 3 * rows, f"the kill must land in the middle of the run ({at_kill} rows written)"

    done = subprocess.run([*ray_run, "--report", str(tmp_path / "report.json")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["rows"] == 3 * rows - at_kill  # the rerun analysed only what the killed run had not written
    for name in ("a", "b", "c"):
        produced = (out / f"{name}.jsonl").read_bytes()
        assert produced == (local / f"{name}.jsonl").read_bytes(), f"{name}: Ray and the local runner differ"
        ids = [json.loads(line)["id"] for line in produced.splitlines()]
        assert len(ids) == rows and len(set(ids)) == rows  # nothing lost, nothing duplicated
    assert json.loads((out / STATE_DIR / "a.jsonl.meta.json").read_text(encoding="utf-8"))["runner"] == "ray"
