"""The OpenAI-compatible backend with many requests in flight, against the stub server (answers after a delay)."""

from __future__ import annotations

import time

import pytest

from mentalglm.backends import GenerationRequest, create_backend
from mentalglm.backends.base import BackendUnavailableError
from mentalglm.backends.registry import cli_options
from mentalglm.backends.stub_server import Fault, StubChatServer
from mentalglm.errors import ConfigError
from mentalglm.files import JsonlAppender, cut_torn_tail

pytest.importorskip("openai")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MENTALGLM_OPENAI_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest.from_prompt(f"帖子 {i}") for i in range(n)]


def _backend(server: StubChatServer, **options):
    options.setdefault("backoff_s", 0.01)
    return create_backend("openai:stub", base_url=server.url, **options)


def test_eight_in_flight_are_faster_and_give_the_same_answers_in_order() -> None:
    with StubChatServer(delay_s=0.2) as server:
        with _backend(server, concurrency=1) as one:
            start = time.perf_counter()
            sequential = one.generate(_requests(4))
            per_request_1 = (time.perf_counter() - start) / 4
        server.max_in_flight = 0
        with _backend(server, concurrency=8) as eight:
            start = time.perf_counter()
            concurrent = eight.generate(_requests(16))
            per_request_8 = (time.perf_counter() - start) / 16
        assert server.max_in_flight == 8
    assert [r.text for r in concurrent[:4]] == [r.text for r in sequential]
    assert [r.text.split(" [")[0] for r in concurrent] == [f"帖子 {i}" for i in range(16)]
    assert per_request_1 >= 0.2 and per_request_8 < per_request_1 / 4


def test_answers_are_handed_over_as_they_arrive_while_results_stay_in_order() -> None:
    slow_first = lambda number, body: Fault.late(0.6) if "帖子 0" in str(body) else None  # noqa: E731
    with StubChatServer(delay_s=0.05, fault=slow_first) as server, _backend(server, concurrency=4) as backend:
        arrived: list[int] = []
        results = list(backend.generate_iter(_requests(6), on_result=lambda i, r: arrived.append(i)))
    assert arrived[-1] == 0 and sorted(arrived) == list(range(6))  # the others were not held back by #0
    assert [r.text.split(" [")[0] for r in results] == [f"帖子 {i}" for i in range(6)]


def test_429_is_retried_after_the_servers_retry_after() -> None:
    def busy_once(number: int, body: object) -> Fault | None:
        return Fault(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.3"}) if number == 1 else None

    with StubChatServer(delay_s=0.0, fault=busy_once) as server, _backend(server, backoff_s=5.0) as backend:
        start = time.perf_counter()
        result = backend.generate(_requests(1))[0]
        elapsed = time.perf_counter() - start
    assert result.ok and backend.retries == 1 and server.requests == 2
    assert 0.3 <= elapsed < 2.0  # the header's 0.3 s, not our 5 s backoff


def test_5xx_is_retried_and_a_timeout_is_recorded() -> None:
    flaky = lambda number, body: Fault(503) if number % 2 else None  # noqa: E731
    with StubChatServer(delay_s=0.0, fault=flaky) as server, _backend(server, concurrency=1) as backend:
        results = backend.generate(_requests(3))
    assert all(r.ok for r in results) and backend.retries == 3
    hang = lambda number, body: Fault(hang_s=1.0)  # noqa: E731
    with StubChatServer(delay_s=0.0, fault=hang) as server, _backend(server, timeout_s=0.1, max_retries=0) as backend:
        result = backend.generate(_requests(1))[0]
    assert result.error and "Timeout" in result.error


def test_a_garbling_or_dead_server_stops_the_run_with_a_clear_error() -> None:
    garbage = lambda number, body: Fault(200, b"<html>502 bad gateway</html>")  # noqa: E731
    with StubChatServer(delay_s=0.0, fault=garbage) as server:
        backend = _backend(server, concurrency=4, max_retries=0, max_consecutive_failures=5)
        seen: list[int] = []
        with pytest.raises(BackendUnavailableError, match="5 requests in a row failed") as caught:
            list(backend.generate_iter(_requests(40), on_result=lambda i, r: seen.append(i)))
        assert "not a chat completion" in str(caught.value) and "finished results are kept" in str(caught.value)
        assert len(seen) < 40
        backend.close()
    server = StubChatServer()
    url = server.url
    server.server_close()  # nothing listens there any more
    dead = create_backend("openai:stub", base_url=url, max_retries=0, max_consecutive_failures=3)
    with pytest.raises(BackendUnavailableError, match="APIConnectionError"):
        dead.generate(_requests(10))


def test_a_few_failures_among_successes_do_not_stop_the_run() -> None:
    # Chosen by the post, not by arrival order, which the two threads may swap.
    every_third = lambda number, body: Fault(400) if any(f"帖子 {i}'" in str(body) for i in (0, 3, 6, 9)) else None  # noqa: E731,E501
    with StubChatServer(delay_s=0.0, fault=every_third) as server:
        with _backend(server, concurrency=2, max_consecutive_failures=2) as backend:
            results = backend.generate(_requests(12))
    assert sum(r.ok for r in results) == 8 and all("BadRequest" in (r.error or "BadRequest") for r in results)


def test_cli_options_route_flags_to_the_engines_that_take_them() -> None:
    assert cli_options("openai:gpt-4o", n_ctx=4096, concurrency=8) == {"concurrency": 8}
    assert cli_options("llamacpp:default", n_ctx=4096) == {"n_ctx": 4096}
    assert cli_options("llamacpp:default", n_ctx=4096, concurrency=1) == {"n_ctx": 4096}
    with pytest.raises(ConfigError, match="one request at a time"):
        cli_options("llamacpp:default", concurrency=8)
    with pytest.raises(ConfigError, match=">= 1"):
        cli_options("openai:x", concurrency=0)


def test_an_appender_cuts_the_torn_line_of_a_kill_before_appending(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3', encoding="utf-8")  # killed in the middle of row 3
    with JsonlAppender(path) as out:
        assert out.size == len('{"a": 1}\n{"a": 2}\n')
        out.write([{"a": 3}, '{"a": 4}'])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n'
    path.write_text("no newline at all", encoding="utf-8")
    assert cut_torn_tail(path) == 0 and path.read_bytes() == b""
