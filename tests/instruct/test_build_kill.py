"""kill -9 in the middle of a concurrent `mentalglm build`, then the same command again: nothing lost, nothing
asked twice, the same C-IMHI files as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from mentalglm.backends.stub_server import StubChatServer

pytest.importorskip("openai")
pytestmark = [pytest.mark.data, pytest.mark.slow]
SRC = Path(__file__).resolve().parents[2] / "src"


def teacher(messages: Sequence[Mapping[str, str]]) -> str:
    """A grounded explanation of the gold label, so that most posts pass QC at the first attempt."""
    user = messages[-1]["content"]
    post = re.findall(r"帖子：“(.*?)”", user, re.S)[-1]
    gold = re.findall(r"专家标注：(\S+)", user)[-1]
    return f"帖子中“{post[:20].strip()}”是发帖人自己的话，直接体现了其当前的状态，这与{gold}的定义一致，所以应标注为{gold}。"


def _command(data_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mentalglm.cli", "build", "--tasks", "suicide_risk", "--per-task", "120",
            "--teacher", "openai:stub", "--concurrency", "8", "--verifier", "none", "--format", "chat",
            "--data-dir", str(data_dir), "--out", str(out)]


def _complete_lines(path: Path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def _qc_log(out: Path) -> list[dict]:  # "cached" says where an answer came from, which a resumed run changes
    return [{k: v for k, v in row.items() if k != "cached"} for row in _complete_lines(out / "qc_log.jsonl")]


def test_kill_9_during_a_concurrent_build_then_rerun(data_dir: Path, tmp_path: Path) -> None:
    with StubChatServer(delay_s=0.1, reply=teacher) as server:
        env = {**os.environ, "MENTALGLM_OPENAI_BASE_URL": server.url, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        env.pop("OPENAI_API_KEY", None)
        reference = tmp_path / "reference"
        subprocess.run(_command(data_dir, reference), env=env, check=True, capture_output=True)
        asked_by_reference = server.requests

        out = tmp_path / "killed"
        cache = out / "cache" / "teacher.jsonl"
        proc = subprocess.Popen(_command(data_dir, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(_complete_lines(cache)) < 30 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        kept = {row["key"] for row in _complete_lines(cache)}
        assert 30 <= len(kept) < asked_by_reference, "the kill must land in the middle of the run"
        assert not (out / "train.chat.jsonl").exists()

        server.requests = 0
        subprocess.run(_command(data_dir, out), env=env, check=True, capture_output=True)
        asked_by_rerun = server.requests

    rows = _complete_lines(cache)
    keys = [row["key"] for row in rows]
    reference_keys = {row["key"] for row in _complete_lines(reference / "cache" / "teacher.jsonl")}
    assert len(keys) == len(set(keys)), "an answer was cached twice"
    ref_rows = _complete_lines(reference / "cache" / "teacher.jsonl")
    differing = [(side, {k: row.get(k) for k in ("post_id", "attempt", "error", "text")})
                 for side, rows_of, other in (("rerun", rows, reference_keys), ("reference", ref_rows, set(keys)))
                 for row in rows_of if row["key"] not in other]
    # the rows that differ, with their attempt and error, so that a failure says why (seen once under heavy load)
    assert not differing, f"an answer is missing or one was asked that the reference never asked: {differing[:6]}"
    assert asked_by_rerun == asked_by_reference - len(kept), "the rerun asked again for an answer it had"
    assert (out / "train.chat.jsonl").read_bytes() == (reference / "train.chat.jsonl").read_bytes()
    assert _qc_log(out) == _qc_log(reference)
    assert len(_complete_lines(out / "train.chat.jsonl")) > 100
