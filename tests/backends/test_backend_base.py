from __future__ import annotations

import pytest

from mentalglm.backends import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    cache_key,
)
from mentalglm.backends.base import apply_stop
from mentalglm.backends.fake import FakeBackend

MESSAGES = [{"role": "system", "content": "你是心理咨询助手"}, {"role": "user", "content": "我最近总是失眠"}]


def test_cache_key_is_pinned() -> None:
    # Cached generations outlive a release: a change here must bump CACHE_KEY_VERSION on purpose.
    assert cache_key(MESSAGES, "fake:x", GenerationSettings()) == (
        "5a6e5c2d6dd447005e8d5ed90afb13c2db6a36bc0a85649690641604e6a93065"
    )


def test_cache_key_ignores_representation_but_not_content() -> None:
    base = cache_key(MESSAGES, "m", GenerationSettings(temperature=0, stop=["a"]))
    assert base == cache_key([dict(m) for m in MESSAGES], "m", GenerationSettings(temperature=0.0, stop=("a",)))
    assert base == cache_key([{**m, "name": "ignored"} for m in MESSAGES], "m", GenerationSettings(stop="a"))
    assert base != cache_key(MESSAGES, "other-model", GenerationSettings(stop=["a"]))
    assert base != cache_key(MESSAGES, "m", GenerationSettings(stop=["a"], seed=1))
    assert base != cache_key(MESSAGES[1:], "m", GenerationSettings(stop=["a"]))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_new_tokens": 0}, "max_new_tokens"),
     ({"stop": [""]}, "stop")],
)
def test_settings_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerationSettings(**kwargs)


def test_settings_from_mapping_names_unknown_keys() -> None:
    assert GenerationSettings.from_mapping({"temperature": 0.7}).temperature == 0.7
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationSettings.from_mapping({"max_tokens": 5})


@pytest.mark.parametrize(
    "messages, match",
    [([], "at least one"), ([{"role": "bot", "content": "x"}], "role"), ([{"role": "user", "content": 3}], "string")],
)
def test_messages_are_validated(messages: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerationRequest(messages)


def test_apply_stop_cuts_at_the_earliest_stop() -> None:
    assert apply_stop("答案：高风险\n解释", ["解释", "\n"]) == ("答案：高风险", True)
    assert apply_stop("no stop", ["X"]) == ("no stop", False)


def test_failures_are_recorded_or_raised_on_request() -> None:
    backend = FakeBackend(responses={"好": "ok"}, default=None)
    requests = [GenerationRequest.from_prompt("你好"), GenerationRequest.from_prompt("?")]
    ok, failed = backend.generate(requests)
    assert ok.ok and ok.text == "ok"
    assert not failed.ok and failed.finish_reason == "error" and "LookupError" in (failed.error or "")
    with pytest.raises(GenerationError, match="1 request"):
        backend.generate(requests, raise_on_error=True)


def test_result_round_trips_to_dict() -> None:
    result = GenerationResult("文本", "stop", 3, 2, 0.5)
    assert GenerationResult(**result.to_dict()) == result


def test_the_copy_guard_changes_the_cache_key_only_when_it_is_asked_for() -> None:
    from mentalglm.backends.base import cache_key

    messages = [{"role": "user", "content": "你好"}]
    # the key of a reply cached before avoid_copying existed (computed with that code): cached replies stay valid
    assert cache_key(messages, "llamacpp:x", GenerationSettings()) == \
        "f933c45b6e0c2bcf7a32b1f63ba285adcda7d148d3d16c50f0520afd8e98b62a"
    guarded = GenerationSettings(avoid_copying=["定义"])  # type: ignore[arg-type]
    assert guarded.avoid_copying == ("定义",) and cache_key(messages, "llamacpp:x", guarded) != \
        cache_key(messages, "llamacpp:x", GenerationSettings())
