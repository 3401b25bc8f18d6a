from __future__ import annotations

from mentalglm.backends import GenerationRequest, GenerationSettings
from mentalglm.backends.fake import FakeBackend


def _ask(text: str, **settings) -> GenerationRequest:
    return GenerationRequest.from_prompt(text, system="系统", settings=GenerationSettings(**settings))


def test_dict_replies_match_substrings_in_order_and_count_calls() -> None:
    backend = FakeBackend(responses={"自杀": "高风险", "难过": "低风险"}, default="无")
    results = backend.generate([_ask("我很难过，想自杀"), _ask("有点难过"), _ask("今天天气好")])
    assert [r.text for r in results] == ["高风险", "低风险", "无"]
    assert backend.calls == 3 and backend.requests[1].messages[-1]["content"] == "有点难过"


def test_callable_replies_see_the_request() -> None:
    backend = FakeBackend(responses=lambda r: f"{len(r.messages)}:{r.settings.temperature}")
    assert backend.chat([{"role": "user", "content": "x"}], GenerationSettings(temperature=0.5)).text == "1:0.5"


def test_callable_errors_are_recorded() -> None:
    def boom(_: GenerationRequest) -> str:
        raise RuntimeError("scripted failure")

    result = FakeBackend(responses=boom).generate([_ask("x")])[0]
    assert result.error == "RuntimeError: scripted failure" and result.finish_reason == "error"


def test_stop_and_max_new_tokens_behave_like_an_engine() -> None:
    backend = FakeBackend(default="答案：高\n理由：很多")
    stopped = backend.generate([_ask("x", stop=["\n"])])[0]
    assert (stopped.text, stopped.finish_reason) == ("答案：高", "stop")
    cut = backend.generate([_ask("x", max_new_tokens=2)])[0]
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("答案", "length", 2)


def test_echo_is_deterministic() -> None:
    backend = FakeBackend("echo")
    assert backend.generate([_ask("重复我")])[0].text == "重复我"
    assert backend.model_id == "fake:echo"
