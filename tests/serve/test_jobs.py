"""Durable batch jobs: results equal the analyzer's, a crash (simulated, then a real kill -9) loses nothing and
duplicates nothing. Tiny TF-IDF models and the labels engine: no data directory, no LLM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _tiny_app import create_app, tiny_analyzer
from fastapi.testclient import TestClient
from tiny_analyzer import SAMPLES, tiny_models

from mentalglm.analyze.engine import InputRow
from mentalglm.serve.jobs import JobStore, recover_results

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def _posts(n: int) -> list[dict[str, str]]:
    return [{"id": f"p{i:03d}", "text": f"{SAMPLES[i % len(SAMPLES)]}（第{i}条）"} for i in range(n)]


def _expected(analyzer, rows: list[InputRow]) -> bytes:
    return b"".join((r.model_dump_json() + "\n").encode() for r in analyzer.analyze_many(rows, keep_going=True))


def _rows(posts: list[dict[str, str]]) -> list[InputRow]:
    return [InputRow(p["id"], p["text"], i) for i, p in enumerate(posts, 1)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _client(tmp_path: Path, models, batch_size: int = 4, **kwargs) -> tuple[TestClient, JobStore]:
    analyzer = tiny_analyzer(models=models)
    store = JobStore(tmp_path / "jobs", analyzer, batch_size=batch_size, **kwargs)
    return TestClient(create_app(analyzer, store)), store


def test_job_completes_and_results_equal_the_analyzer(tmp_path, models):
    posts = _posts(37) + [{"id": "empty", "text": "   "}]
    client, store = _client(tmp_path, models)
    with client:
        created = client.post("/v1/jobs", json={"posts": posts})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/jobs/{job_id}"
        store.wait(job_id)
        status = client.get(f"/v1/jobs/{job_id}").json()
        assert (status["state"], status["total"], status["done"], status["errors"]) == ("done", 38, 38, 1)
        body = client.get(f"/v1/jobs/{job_id}/results")
        assert body.headers["content-type"].startswith("application/x-ndjson")
        assert body.content == _expected(tiny_analyzer(models=models), _rows(posts))
        last = [json.loads(line) for line in body.text.splitlines()][-1]
        assert last == {**last, "status": "error", "id": "empty"} and "empty post" in last["error"]
        assert status["high_risk"] == sum(json.loads(line).get("high_risk", False) for line in body.text.splitlines())
        tail = client.get(f"/v1/jobs/{job_id}/results", params={"start": 36}).text.splitlines()
        assert [json.loads(line)["id"] for line in tail] == ["p036", "empty"]
    directory = tmp_path / "jobs" / job_id
    assert not (directory / "input.jsonl").exists(), "the posts must not outlive the job"
    assert _mode(directory) == 0o700 and _mode(directory / "results.jsonl") == 0o600
    assert json.loads((directory / "job.json").read_text())["done"] == 38


def test_keep_input_tasks_and_explain_options(tmp_path, models):
    client, store = _client(tmp_path, models)
    with client:
        job_id = client.post("/v1/jobs", params={"keep_input": True},
                             json={"posts": _posts(5), "tasks": ["emotion"], "explain": False}).json()["id"]
        store.wait(job_id)
        results = [json.loads(line) for line in client.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
    assert [list(r["tasks"]) for r in results] == [["emotion"]] * 5
    kept = tmp_path / "jobs" / job_id / "input.jsonl"
    assert _mode(kept) == 0o600
    assert [json.loads(line)["text"] for line in kept.read_text(encoding="utf-8").splitlines()] == \
        [p["text"] for p in _posts(5)]


def test_file_uploads_use_the_cli_readers(tmp_path, models):
    client, store = _client(tmp_path, models)
    csv_text = "id,text\na1,今天收到礼物，太开心了哈哈\na2,\n"
    with client:
        csv_job = client.post("/v1/jobs", content=csv_text.encode(), headers={"content-type": "text/csv"}).json()
        txt_job = client.post("/v1/jobs", params={"filename": "weibo.txt"},
                              content="我好难过\n药已经攒够了，今晚就结束这一切\n".encode()).json()
        jsonl = "\n".join(json.dumps(p, ensure_ascii=False) for p in _posts(3)) + "\n{broken\n"
        jsonl_job = client.post("/v1/jobs", params={"format": "jsonl"}, content=jsonl.encode(),
                                headers={"content-type": "application/octet-stream"}).json()
        ids = {}
        for job in (csv_job, txt_job, jsonl_job):
            store.wait(job["id"])
            ids[job["source"]] = [(r["id"], r["status"]) for r in map(
                json.loads, client.get(f"/v1/jobs/{job['id']}/results").text.splitlines())]
    assert ids == {"posts.csv": [("a1", "ok"), ("a2", "error")],
                   "weibo.txt": [("weibo.txt:1", "ok"), ("weibo.txt:2", "ok")],
                   "posts.jsonl": [("p000", "ok"), ("p001", "ok"), ("p002", "ok"), ("posts.jsonl:4", "error")]}


def test_multipart_upload(tmp_path, models):
    pytest.importorskip("python_multipart", reason="multipart uploads need python-multipart")
    client, store = _client(tmp_path, models)
    with client:
        job = client.post("/v1/jobs", files={"file": ("my posts.csv", "text\n我好难过\n".encode(), "text/csv")},
                          data={"tasks": "suicide_risk"}).json()
        store.wait(job["id"])
        result = json.loads(client.get(f"/v1/jobs/{job['id']}/results").text)
    assert job["source"] == "my_posts.csv" and job["tasks"] == ["suicide_risk"]
    assert result["id"] == "my_posts.csv:2" and list(result["tasks"]) == ["suicide_risk"]


def test_bad_requests_are_refused_with_the_reason(tmp_path, models):
    client, _ = _client(tmp_path, models, max_posts=10)
    with client:
        assert client.post("/v1/jobs", json=[]).status_code == 400
        unknown = client.post("/v1/jobs", json={"posts": _posts(1), "tasks": ["nope"]})
        assert unknown.status_code == 422 and "emotion" in unknown.text
        assert client.post("/v1/jobs", json={"posts": [{"id": "x"}]}).status_code == 422
        assert client.post("/v1/jobs", json=_posts(11)).status_code == 413
        binary = client.post("/v1/jobs", params={"format": "csv"}, content=b"text\n\x00\x01")
        assert binary.status_code == 400 and "binary" in binary.text and str(tmp_path) not in binary.text
        no_column = client.post("/v1/jobs", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
        assert no_column.status_code == 400 and "text column" in no_column.text
        assert client.post("/v1/jobs", content=b"x", headers={"content-type": "image/png"}).status_code == 415
        assert client.get("/v1/jobs/0123").status_code == 404
        assert client.get("/v1/jobs/../../etc/passwd").status_code == 404
        assert client.get(f"/v1/jobs/{'a' * 32}/results").status_code == 404
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [], "refused jobs leave nothing behind"


def test_delete_removes_the_job_and_its_files(tmp_path, models):
    client, store = _client(tmp_path, models)
    with client:
        job_id = client.post("/v1/jobs", json=_posts(3)).json()["id"]
        store.wait(job_id)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert not (tmp_path / "jobs" / job_id).exists()


def test_jobs_in_the_service_app_share_its_analyzer_key_and_lock(tmp_path, models, monkeypatch):
    from mentalglm.serve.app import create_app as create_service_app
    from mentalglm.serve.settings import ServeSettings

    monkeypatch.setenv("MENTALGLM_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("MENTALGLM_API_KEY", "sesame")
    analyzer = tiny_analyzer(models=models)
    app = create_service_app(ServeSettings(engine="labels", tasks=("emotion", "suicide_risk"), max_body_bytes=1024),
                             analyzer)
    posts = _posts(60)  # a body larger than max_body_bytes: job uploads have their own limit
    with TestClient(app) as client:
        assert client.post("/v1/jobs", json=posts).status_code == 401
        auth = {"X-API-Key": "sesame"}
        created = client.post("/v1/jobs", json=posts, headers=auth)
        assert created.status_code == 202, created.text
        store = app.state.job_store
        assert store.root == tmp_path / "jobs" and store._analyzer_lock is app.state.analyzer_lock
        store.wait(created.json()["id"])
        body = client.get(f"/v1/jobs/{created.json()['id']}/results", headers=auth).content
    assert body == _expected(tiny_analyzer(models=models), _rows(posts))


def _half_done_job(root: Path, models, posts, done: int, torn: int) -> tuple[str, bytes]:
    """A job as a kill leaves it: state running, ``done`` complete lines, then ``torn`` bytes of the next."""
    store = JobStore(root, tiny_analyzer(models=models))  # never started: it only writes the job
    job = store.create(_rows(posts))
    expected = _expected(tiny_analyzer(models=models), _rows(posts))
    lines = expected.splitlines(keepends=True)
    (root / job.id / "results.jsonl").write_bytes(b"".join(lines[:done]) + lines[done][:torn])
    job.state = "running"
    store._save(job)
    return job.id, expected


def test_resume_after_a_torn_write_recomputes_nothing_and_duplicates_nothing(tmp_path, models):
    posts = _posts(30)
    root = tmp_path / "jobs"
    torn_id, expected = _half_done_job(root, models, posts, done=11, torn=25)
    complete_id, _ = _half_done_job(root, models, posts, done=29, torn=10**6)  # every line, state not yet saved
    before = (root / torn_id / "results.jsonl").read_bytes()
    (root / ".upload-0f").mkdir()  # a kill while an upload was parsed
    (root / ("b" * 32)).mkdir()  # a kill before job.json was written: the job was never accepted
    (root / ("c" * 32)).mkdir()
    (root / ("c" * 32) / "job.json").write_text("{not json")  # unreadable: skipped, the rest still resume
    analyzer = tiny_analyzer(models=models)
    store = JobStore(root, analyzer, batch_size=4)
    store.start()
    try:
        for job_id in (torn_id, complete_id):
            job = store.wait(job_id)
            assert (job.state, job.done, job.total) == ("done", 30, 30)
            assert (root / job_id / "results.jsonl").read_bytes() == expected
            assert not (root / job_id / "input.jsonl").exists()
    finally:
        store.stop()
    assert expected.startswith(before[:before.rindex(b"\n") + 1])
    assert sorted(p.name for p in root.iterdir()) == sorted([torn_id, complete_id, "c" * 32])
    assert analyzer.analysed == 30 - 11, "only the posts without a complete result line are analysed again"


def test_a_job_never_mixes_results_of_two_analyzers(tmp_path, models):
    root = tmp_path / "jobs"
    job_id, _ = _half_done_job(root, models, _posts(8), done=3, torn=0)
    meta = root / job_id / "job.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "analyzer": "0123456789abcdef"}))
    before = (root / job_id / "results.jsonl").read_bytes()
    client, store = _client(tmp_path, models)
    with client:
        time.sleep(0.3)
        status = client.get(f"/v1/jobs/{job_id}").json()
        other = client.post("/v1/jobs", json=_posts(2)).json()["id"]
        assert store.wait(other).state == "done", "a blocked job does not hold up the others"
    assert status["state"] == "queued" and "another analyzer" in status["blocked"]
    assert (root / job_id / "results.jsonl").read_bytes() == before


def test_recover_results_cuts_from_the_first_unreadable_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": "a", "status": "ok", "high_risk": true}\n{"id": "b", "status": "error"}\n'
                     b'{"id": "c", "sta\n{"id": "d"}\n{"id": "e"')
    assert recover_results(path) == (2, 1, 1, len(path.read_bytes()))
    assert path.read_bytes().endswith(b'"error"}\n')
    assert recover_results(tmp_path / "none.jsonl") == (0, 0, 0, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "_tiny_app:create_app", "--app-dir", str(HERE),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start in 30 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_kill_9_mid_job_then_restart_loses_and_duplicates_nothing(tmp_path):
    jobs = tmp_path / "jobs"
    env = {**os.environ, "MENTALGLM_JOBS_DIR": str(jobs), "MENTALGLM_TEST_BATCH_DELAY": "0.05",
           "MENTALGLM_TEST_BATCH_SIZE": "5", "MENTALGLM_TEST_STUB_MODELS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    posts = _posts(200)
    log = tmp_path / "server.log"
    proc, url = _serve(env, log)
    try:
        created = httpx.post(f"{url}/v1/jobs", json={"posts": posts}, timeout=10)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/v1/jobs/{job_id}", timeout=5).json()["done"] < 40:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        _stop(proc)
    results = jobs / job_id / "results.jsonl"
    before = results.read_bytes()
    complete = before[:before.rindex(b"\n") + 1]
    assert 40 <= complete.count(b"\n") < 200, "the kill must land in the middle of the job"
    assert json.loads((jobs / job_id / "job.json").read_text())["state"] == "running"

    proc, url = _serve(env, log)
    try:
        deadline = time.monotonic() + 30
        while (status := httpx.get(f"{url}/v1/jobs/{job_id}", timeout=5).json())["state"] != "done":
            assert status["state"] == "running" or status["state"] == "queued", status
            assert time.monotonic() < deadline, f"not done after restart: {status}"
            time.sleep(0.05)
        served = httpx.get(f"{url}/v1/jobs/{job_id}/results", timeout=10).content
    finally:
        _stop(proc)
    after = results.read_bytes()
    assert served == after
    assert after.startswith(complete), "lines finished before the kill are kept byte for byte"
    ids = [json.loads(line)["id"] for line in after.splitlines()]
    assert ids == [p["id"] for p in posts], "every post exactly once, in input order"
    assert (status["done"], status["errors"]) == (200, 0)
    assert not (jobs / job_id / "input.jsonl").exists()
