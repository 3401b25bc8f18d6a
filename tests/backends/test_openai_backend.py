from __future__ import annotations

import pytest

from mentalglm.backends import GenerationRequest, GenerationSettings, create_backend
from mentalglm.errors import ConfigError

pytest.importorskip("openai")

SECRET = "sk-test-secret-0123456789"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MENTALGLM_OPENAI_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _backend(url: str, **options):
    return create_backend("openai:test-model", base_url=url, backoff_s=0.01, **options)


def _request(text: str = "你好", **settings) -> GenerationRequest:
    return GenerationRequest.from_prompt(text, settings=GenerationSettings(**settings))


def test_success_passes_settings_and_usage(chat_server) -> None:
    backend = _backend(chat_server.url("ok"))
    result = backend.generate([_request("我很难过", max_new_tokens=9, seed=3, stop=["\n"])])[0]
    assert result.ok and result.text == "echo: 我很难过"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    sent = chat_server.seen_bodies[0]
    assert sent["max_tokens"] == 9 and sent["seed"] == 3 and sent["stop"] == ["\n"] and sent["temperature"] == 0


def test_one_500_then_success_is_retried(chat_server) -> None:
    backend = _backend(chat_server.url("flaky"))
    result = backend.generate([_request()])[0]
    assert result.ok, result.error
    assert chat_server.hits["flaky"] == 2 and backend.retries == 1


def test_garbage_response_is_a_recorded_failure(chat_server) -> None:
    results = _backend(chat_server.url("garbage"), max_retries=1).generate([_request(), _request("b")])
    assert [r.finish_reason for r in results] == ["error", "error"]
    assert all(r.error and r.text == "" for r in results)


def test_client_error_is_not_retried(chat_server) -> None:
    result = _backend(chat_server.url("bad")).generate([_request()])[0]
    assert "BadRequestError" in (result.error or "")
    assert chat_server.hits["bad"] == 1


def test_timeout_is_recorded(chat_server) -> None:
    result = _backend(chat_server.url("slow"), timeout_s=0.05, max_retries=0).generate([_request()])[0]
    assert result.error and "Timeout" in result.error


def test_concurrency_limit_keeps_order(chat_server) -> None:
    backend = _backend(chat_server.url("slow"), concurrency=3)
    results = backend.generate([_request(str(i)) for i in range(6)])
    assert [r.text for r in results] == [f"echo: {i}" for i in range(6)]
    assert 1 < chat_server.max_in_flight <= 3


def test_key_comes_from_env_and_is_never_shown(chat_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("MENTALGLM_OPENAI_BASE_URL", chat_server.url("auth"))
    backend = create_backend("openai:test-model", backoff_s=0.01)
    assert backend.base_url == chat_server.url("auth")
    assert SECRET not in repr(backend)
    result = backend.generate([_request()])[0]
    assert result.error and "AuthenticationError" in result.error
    assert SECRET not in result.error and "***" in result.error


def test_remote_url_without_key_fails_early() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_backend("openai:gpt-4o", base_url="https://api.example.com/v1")
