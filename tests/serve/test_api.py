"""The HTTP API on tiny in-test classifiers and a fake LLM (no data directory, no weights, no network): the
contract, limits, auth, probes, OpenAI compatibility, back-pressure and logging hygiene."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.engine import Analyzer
from mentalglm.analyze.safety import NOT_A_DIAGNOSIS
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.backends import register_backend
from mentalglm.backends.base import Backend, GenerationRequest
from mentalglm.backends.fake import FakeBackend
from mentalglm.serve.app import create_app
from mentalglm.serve.batcher import BatcherClosedError, MicroBatcher
from mentalglm.serve.settings import ServeSettings
from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier

SERVED_TASKS = ("emotion", "suicide_risk")
HIGH_POST = "药已经攒够了，今晚就结束这一切"
HAPPY_POST = "今天收到礼物，太开心了哈哈"
PHONE, ID_CARD = "13812345678", "11010519491231002X"
PRIVATE_POST = f"我的电话是{PHONE}，身份证{ID_CARD}，好难过，一个人哭了一晚上"
_EXAMPLES = {
    "suicide_risk": {"high": [HIGH_POST, "遗书写好了，明天就从楼上跳下去", "刀片准备好了，今晚就割腕"],
                     "low": ["今天工作好累，但还是要加油", "考试没考好，明天继续努力", "周末去爬山放松一下"]},
    "emotion": {"happy": [HAPPY_POST, "考试通过了，太开心了哈哈"], "sad": ["我好难过，一个人哭了一晚上", "好难过，想家想得哭了"],
                "angry": ["排队两小时说卖完了，气死我了", "又被插队了，气死我了"],
                "neutral": ["今天下午三点开会", "明天下午三点开会"], "surprise": ["天哪，居然中奖了", "天哪，他居然来了"],
                "fear": ["半夜听到奇怪的声音，好害怕", "一个人走夜路好害怕"]},
}

ClientFactory = Callable[..., TestClient]


@pytest.fixture(scope="module")
def api_models() -> dict[str, TaskModel]:
    models = {}
    for task_id, by_label in _EXAMPLES.items():
        task = get_task(task_id)
        texts = [t for texts in by_label.values() for t in texts]
        labels = [(label,) for label, texts in by_label.items() for _ in texts]
        models[task_id] = TaskModel(task, TfidfClassifier.for_task(task).fit(texts, labels))
    return models


def wait_ready(client: TestClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.01)


@pytest.fixture
def api_client(api_models: dict[str, TaskModel], monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """``api_client(engine=, backend=, analyzer_options=, ready=, **settings)``: a started TestClient."""
    monkeypatch.delenv("MENTALGLM_API_KEY", raising=False)
    clients: list[TestClient] = []

    def make(*, engine: str = "labels", backend: str | Backend | None = None, analyzer_options: dict[str, Any] | None = None,
             ready: bool = True, **settings: Any) -> TestClient:
        analyzer = Analyzer(SERVED_TASKS, engine, backend or FakeBackend("echo"), models=api_models,  # type: ignore[arg-type]
                            **(analyzer_options or {}))
        client = TestClient(create_app(ServeSettings(tasks=SERVED_TASKS, engine=engine, **settings), analyzer))
        client.__enter__()
        clients.append(client)
        if ready:
            wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _quoting(request: GenerationRequest) -> str:
    """A teacher that quotes the post it was given, as the hybrid engine's QC expects."""
    post = request.messages[-1]["content"].split("帖子：“")[-1].split("”")[0]
    return f"帖子中“{post[:6]}”这句话直接表达了发帖人当时的感受，整体情绪和态度与所给标注的定义相符。"


# --- /v1/analyze ---------------------------------------------------------------------------------------


def test_analyze_one_post_as_a_plain_string(api_client):
    response = api_client().post("/v1/analyze", json={"posts": HAPPY_POST})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "labels" and body["model"]["tasks"] == list(SERVED_TASKS)
    assert response.headers["X-Request-ID"]
    [result] = body["results"]
    parsed = PostResult.model_validate(result)  # the CLI's schema, unchanged
    assert parsed.id == "post-1" and parsed.text_length == len(HAPPY_POST)
    assert [label.id for label in parsed.tasks["emotion"].labels] == ["happy"]
    assert set(parsed.tasks) == set(SERVED_TASKS)
    assert parsed.notices[0].kind == "not_a_diagnosis"
    assert HAPPY_POST not in response.text  # results never carry the post


def test_analyze_many_keeps_order_ids_and_crisis_notice(api_client):
    posts = [{"id": "a", "text": HAPPY_POST}, {"text": HIGH_POST}, {"id": "c", "text": "我好难过，一个人哭了一晚上"}]
    results = api_client().post("/v1/analyze", json={"posts": posts}).json()["results"]
    assert [r["id"] for r in results] == ["a", "post-2", "c"]
    assert [r["high_risk"] for r in results] == [False, True, False]
    crisis = [n for n in results[1]["notices"] if n["kind"] == "crisis"]
    assert crisis and {"12356", "120", "110"} <= {r["contact"] for r in crisis[0]["resources"]}
    english = api_client().post("/v1/analyze", json={"posts": HIGH_POST, "locale": "en"}).json()["results"][0]
    assert "hotline" in next(n for n in english["notices"] if n["kind"] == "crisis")["resources"][0]["name"]


def test_task_selection_and_unknown_tasks(api_client):
    client = api_client()
    [result] = client.post("/v1/analyze", json={"posts": HIGH_POST, "tasks": ["suicide_risk"]}).json()["results"]
    assert list(result["tasks"]) == ["suicide_risk"] and result["high_risk"]
    [result] = client.post("/v1/analyze", json={"posts": HAPPY_POST, "tasks": ["emotion"]}).json()["results"]
    assert list(result["tasks"]) == ["emotion"]
    for tasks in (["emotoin"], ["cognitive_distortion"]):  # a typo; a real task this server does not analyse
        response = client.post("/v1/analyze", json={"posts": HAPPY_POST, "tasks": tasks})
        assert response.status_code == 422 and "emotion, suicide_risk" in response.json()["detail"]


def test_bad_posts_become_error_records_in_place(api_client):
    client = api_client(analyzer_options={"max_chars": 40})
    posts = [{"id": "ok", "text": HAPPY_POST}, {"id": "empty", "text": "  "}, {"id": "long", "text": "难" * 41},
             {"id": "ok2", "text": HIGH_POST}]
    response = client.post("/v1/analyze", json={"posts": posts})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["id"], r["status"]) for r in results] == [("ok", "ok"), ("empty", "error"), ("long", "error"),
                                                         ("ok2", "ok")]
    empty, long = (ErrorRecord.model_validate(r) for r in results[1:3])
    assert "empty" in empty.error and "more than the maximum 40" in long.error


def test_explain_per_request_on_the_hybrid_engine(api_client):
    backend = FakeBackend(responses=_quoting)
    client = api_client(engine="hybrid", backend=backend)
    calls = backend.calls
    quiet = client.post("/v1/analyze", json={"posts": HAPPY_POST, "explain": False}).json()["results"][0]
    assert backend.calls == calls and quiet["tasks"]["emotion"]["explanation"] is None
    explained = client.post("/v1/analyze", json={"posts": HAPPY_POST, "tasks": ["emotion"]}).json()["results"][0]
    assert backend.calls > calls and explained["tasks"]["emotion"]["explanation"]
    span = explained["tasks"]["emotion"]["evidence"][0]
    assert HAPPY_POST[span["start"]:span["end"]] == span["quote"]


# --- limits and validation ------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_json_declared_or_streamed(api_client):
    client = api_client(max_body_bytes=2048, max_posts=2)
    big = json.dumps({"posts": "难" * 1000}).encode()
    declared = client.post("/v1/analyze", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["type"] == "request_too_large"
    streamed = client.post("/v1/analyze", content=iter([big[:1000], big[1000:]]),
                           headers={"Content-Type": "application/json"})  # chunked: no Content-Length
    assert streamed.status_code == 413 and "2048" in streamed.json()["detail"]
    too_many = client.post("/v1/analyze", json={"posts": [{"text": HAPPY_POST}] * 3})
    assert too_many.status_code == 413 and "2 allowed" in too_many.json()["detail"]
    assert client.post("/v1/analyze", json={"posts": [{"text": HAPPY_POST}] * 2}).status_code == 200


@pytest.mark.parametrize("body", [
    {}, {"posts": []}, {"posts": 5}, {"posts": [{"id": "x"}]}, {"posts": [{"text": None}]},
    {"posts": [{"content": "好难过"}]}, {"posts": "好难过", "locale": "fr"}, {"posts": "好难过", "tasks": []},
    {"posts": "好难过", "explain": "maybe"}, {"posts": "好难过", "task": ["emotion"]},
])
def test_invalid_requests_are_422(api_client, body):
    response = api_client().post("/v1/analyze", json=body)
    assert response.status_code == 422, body
    detail = response.json()["detail"]
    assert isinstance(detail, str) and '{"posts": ["帖子一", "帖子二"]}' in detail  # one sentence: what to send
    assert response.json()["error"]["type"] == "invalid_request_error" and response.json()["errors"]


def test_a_list_of_strings_is_a_list_of_posts(api_client):
    response = api_client().post("/v1/analyze", json={"posts": [HIGH_POST, HAPPY_POST]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["post-1", "post-2"] and results[0]["high_risk"] and not results[1]["high_risk"]


# --- auth, probes, task list, docs --------------------------------------------------------------------


def test_api_key_is_required_when_set(api_client, monkeypatch):
    assert api_client().post("/v1/analyze", json={"posts": HAPPY_POST}).status_code == 200  # no key: open
    monkeypatch.setenv("MENTALGLM_API_KEY", "s3cret")
    client = api_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic s3cret"}):
        response = client.post("/v1/analyze", json={"posts": HAPPY_POST}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/tasks").status_code == 401
    assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 401
    for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
        assert client.post("/v1/analyze", json={"posts": HAPPY_POST}, headers=headers).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_readyz_is_503_until_the_llm_is_loaded(api_client, api_models):
    loaded = threading.Event()

    def slow_backend(model: str) -> FakeBackend:
        loaded.wait(10)
        return FakeBackend(model, responses=_quoting)

    register_backend("slowtest", slow_backend)
    client = api_client(engine="hybrid", backend="slowtest:teacher", ready=False)
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "loading" and response.headers["Retry-After"]
    assert client.post("/v1/analyze", json={"posts": HAPPY_POST}).status_code == 503
    loaded.set()
    wait_ready(client)
    model = client.get("/readyz").json()["model"]
    assert model["llm"] == "fake:teacher" and model["engine"] == "hybrid" and model["tasks"] == list(SERVED_TASKS)


def test_missing_classifiers_make_readyz_say_which_command_builds_them(tmp_path, monkeypatch):
    settings = ServeSettings(engine="labels", tasks=("emotion",), artifacts_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while (body := client.get("/readyz").json())["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert body["status"] == "error" and "analyze-train" in body["error"]
        assert client.post("/v1/analyze", json={"posts": HAPPY_POST}).status_code == 503


def test_serve_command_fails_in_one_line_without_classifiers(tmp_path, monkeypatch, capsys):
    from mentalglm import cli

    monkeypatch.setattr("sys.argv", ["mentalglm", "serve", "--engine", "labels", "--tasks", "emotion",
                                     "--artifacts-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "analyze-train" in err and str(tmp_path) in err


def test_task_list_and_openapi(api_client):
    client = api_client()
    tasks = {t["id"]: t for t in client.get("/v1/tasks").json()["tasks"]}
    assert list(tasks) == list(SERVED_TASKS)
    assert tasks["emotion"]["multi_label"] is False and tasks["emotion"]["name_zh"]
    assert {"id": "happy", "name_en": "happy"}.items() <= next(
        label for label in tasks["emotion"]["labels"] if label["id"] == "happy").items()
    assert [label["id"] for label in tasks["suicide_risk"]["labels"] if label["positive"]] == ["high"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/analyze", "/v1/tasks", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] or page.status_code == 307


# --- OpenAI compatibility -------------------------------------------------------------------------------


def test_openai_client_gets_mentalglm_analysis_with_crisis_resources(api_client):
    openai = pytest.importorskip("openai")
    client = api_client(analyzer_options={"max_chars": 200})
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    assert [m.id for m in api.models.list().data] == ["mentalglm"]  # the raw base model is off by default
    reply = api.chat.completions.create(model="mentalglm", messages=[
        {"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": HIGH_POST}])
    text = reply.choices[0].message.content
    assert reply.model == "mentalglm" and reply.choices[0].finish_reason == "stop"
    risk = get_task("suicide_risk")
    assert f"【{risk.name_zh}】\n标签：{risk.label('high').zh}" in text  # the C-IMHI layout, one block a task
    assert "【" + get_task("emotion").name_zh + "】" in text
    assert "12356" in text and NOT_A_DIAGNOSIS in text
    assert text.index("12356") < text.index(NOT_A_DIAGNOSIS)  # crisis resources come first
    chunks = api.chat.completions.create(model="mentalglm", messages=[{"role": "user", "content": HIGH_POST}],
                                         stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="llamacpp:default", messages=[{"role": "user", "content": "心情不好"}])
    with pytest.raises(openai.BadRequestError, match="no user message"):
        api.chat.completions.create(model="mentalglm", messages=[{"role": "system", "content": "你好"}])
    with pytest.raises(openai.BadRequestError, match="empty"):
        api.chat.completions.create(model="mentalglm", messages=[{"role": "user", "content": "  "}])
    with pytest.raises(openai.APIStatusError, match="maximum") as too_long:
        api.chat.completions.create(model="mentalglm", messages=[{"role": "user", "content": "好" * 201}])
    assert too_long.value.status_code == 413


def test_chat_refuses_text_that_is_not_chinese_and_still_says_where_help_is(api_client):
    """The analyzer's models only learned Chinese posts: an English suicide note would read as "no evident risk"."""
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=api_client(), max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError, match="Chinese posts only") as refused:
        api.chat.completions.create(model="mentalglm", messages=[
            {"role": "user", "content": "I cannot go on any more, goodbye everyone."}])
    assert "12356" in str(refused.value) and "120" in str(refused.value)
    with pytest.raises(openai.UnprocessableEntityError):  # 自杀 is read from "kill myself": still mostly English
        api.chat.completions.create(model="mentalglm", messages=[
            {"role": "user", "content": "I want to kill myself tonight, the pills are ready."}])
    for mixed in ("I want to die 我不想活了", "hhhh 笑死", "wo xiang zisha", "yyds 绝绝子 xswl hhhh",
                  "好难过 https://www.xiaohongshu.com/explore/abc123", "@xiaoming_official @momo 我好累",
                  "#depression# #emo# 好想哭", "emo了 to be honest I can't take it 活着好累"):  # Weibo mixes scripts
        reply = api.chat.completions.create(model="mentalglm", messages=[{"role": "user", "content": mixed}])
        assert "【" in reply.choices[0].message.content, mixed


def test_raw_model_is_served_only_when_turned_on_and_still_gets_crisis_resources(api_client, monkeypatch):
    openai = pytest.importorskip("openai")
    monkeypatch.setenv("MENTALGLM_API_KEY", "k")
    backend = FakeBackend("echo")
    client = api_client(backend=backend, chat_raw_model=True)
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=client, max_retries=0)
    assert [m.id for m in api.models.list().data] == ["mentalglm", "llamacpp:default"]
    reply = api.chat.completions.create(model="llamacpp:default", messages=[
        {"role": "system", "content": "你是一个倾听者。"}, {"role": "user", "content": PRIVATE_POST}], max_tokens=200)
    text = reply.choices[0].message.content
    assert "[电话]" in text and PHONE not in text and ID_CARD not in text
    assert reply.model == "llamacpp:default" and reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens
    sent = json.dumps([r.messages for r in backend.requests], ensure_ascii=False)
    assert PHONE not in sent and ID_CARD not in sent and "你是一个倾听者。" in sent
    assert "12356" not in text  # no crisis wording where the analyzer reads no high risk
    risky = api.chat.completions.create(model="llamacpp:default", messages=[{"role": "user", "content": HIGH_POST}])
    assert risky.choices[0].message.content.startswith(HIGH_POST) and "12356" in risky.choices[0].message.content
    chunks = api.chat.completions.create(model="llamacpp:default", messages=[{"role": "user", "content": "心情不好"}],
                                         stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "心情不好"
    short = api.chat.completions.create(model="llamacpp:default", messages=[{"role": "user", "content": "一二三四五"}],
                                        max_tokens=2)
    assert short.choices[0].message.content == "一二" and short.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError, match="allows"):
        api.chat.completions.create(model="llamacpp:default", messages=[{"role": "user", "content": "hi"}],
                                    max_tokens=100_000)


def test_failures_are_json_errors_and_keep_the_text_out_of_the_log(api_client, api_models, caplog, monkeypatch):
    client = api_client(backend=FakeBackend(default=None), chat_raw_model=True)  # no scripted reply: every request fails
    response = client.post("/v1/chat/completions", json={"model": "llamacpp:default",
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502 and response.json()["error"]["type"] == "backend_error"

    def broken(texts):
        raise RuntimeError(f"cannot read {texts}")  # a message quoting the post, as third-party errors may

    monkeypatch.setattr(api_models["emotion"], "predict", broken)
    caplog.set_level(logging.INFO, logger="mentalglm.serve")
    failed = client.post("/v1/analyze", json={"posts": PRIVATE_POST})
    assert failed.status_code == 500 and "RuntimeError" in failed.json()["detail"]
    assert "RuntimeError" in caplog.text and PHONE not in caplog.text and PHONE not in failed.text
    assert client.post("/v1/analyze", json={"posts": HAPPY_POST, "tasks": ["suicide_risk"]}).status_code == 200


# --- back-pressure, micro-batching, shutdown -------------------------------------------------------------


def test_full_queue_answers_503_with_retry_after(api_client):
    release = threading.Event()

    def blocking(request: GenerationRequest) -> str:
        release.wait(10)
        return _quoting(request)

    client = api_client(engine="hybrid", backend=FakeBackend(responses=blocking), max_queue=1, max_posts=1,
                        retry_after_s=3)
    service = client.app.state.service
    first: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: first.setdefault("r", client.post("/v1/analyze", json={"posts": HAPPY_POST})))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not service.batcher.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = client.post("/v1/analyze", json={"posts": HIGH_POST})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "3"
        assert refused.json()["error"]["type"] == "service_unavailable"
    finally:
        release.set()
        worker.join(10)
    assert first["r"].status_code == 200 and service.batcher.pending == 0


def test_micro_batcher_groups_requests_and_refuses_after_close():
    calls: list[tuple[object, list[int]]] = []

    def run(key: object, payloads: list[int]) -> list[int]:
        calls.append((key, payloads))
        return [p * 10 for p in payloads]

    async def scenario() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=10, max_wait_s=0.2, max_queue=10)
        batcher.start()
        results = await asyncio.gather(batcher.submit("a", [1, 2]), batcher.submit("b", [3]), batcher.submit("a", [4]))
        assert results == [[10, 20], [30], [40]]
        assert calls == [("a", [1, 2, 4]), ("b", [3])]  # one model call per key, in arrival order
        assert await batcher.close(1.0) and batcher.pending == 0
        with pytest.raises(BatcherClosedError):
            await batcher.submit("a", [5])

    asyncio.run(scenario())


def test_shutdown_closes_the_analyzer(api_client, api_models):
    closed: list[bool] = []
    analyzer = Analyzer(SERVED_TASKS, "labels", FakeBackend("echo"), models=api_models)
    analyzer.close = lambda: closed.append(True)  # type: ignore[method-assign]
    with TestClient(create_app(ServeSettings(tasks=SERVED_TASKS, engine="labels"), analyzer)) as client:
        assert client.post("/v1/analyze", json={"posts": HAPPY_POST}).status_code == 200
        service = client.app.state.service
    assert closed == [True] and service.batcher.closed


# --- logging hygiene ----------------------------------------------------------------------------------------


def test_logs_carry_ids_and_lengths_never_the_text(api_client, caplog):
    caplog.set_level(logging.INFO, logger="mentalglm.serve")
    client = api_client()
    client.post("/v1/analyze", json={"posts": [{"id": "p1", "text": PRIVATE_POST}]})
    client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PRIVATE_POST}]})
    assert "analyze request=" in caplog.text and "p1" in caplog.text and str(len(PRIVATE_POST)) in caplog.text
    assert "chat request=" in caplog.text
    for secret in (PHONE, ID_CARD, "一个人哭了一晚上"):
        assert secret not in caplog.text
    caplog.clear()
    api_client(log_posts=True).post("/v1/analyze", json={"posts": [{"id": "p1", "text": PRIVATE_POST}]})
    assert "一个人哭了一晚上" in caplog.text  # --log-posts is the only way text reaches the log


# --- batch jobs, when the jobs module is installed ------------------------------------------------------------


def test_jobs_router_is_mounted_behind_the_same_key(api_client, monkeypatch, tmp_path):
    pytest.importorskip("mentalglm.serve.jobs")
    monkeypatch.setenv("MENTALGLM_API_KEY", "k")
    client = api_client(max_body_bytes=2048)
    assert client.post("/v1/jobs", json={"posts": [{"text": HAPPY_POST}]}).status_code == 401
    posts = [{"id": str(i), "text": HAPPY_POST} for i in range(60)]  # over max_body_bytes: jobs have their own limit
    created = client.post("/v1/jobs", json={"posts": posts}, headers={"X-API-Key": "k"})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 10
    while client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": "k"}).json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    lines = client.get(f"/v1/jobs/{job_id}/results", headers={"X-API-Key": "k"}).text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(i) for i in range(60)]
