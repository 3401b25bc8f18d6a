"""The real embedded default on one short prompt; skipped with a reason when llama.cpp or the weights are absent."""

from __future__ import annotations

import importlib.util

import pytest

from mentalglm.backends import GenerationRequest, GenerationSettings, create_backend
from mentalglm.backends.weights import MODELS, WeightsNotInstalledError, locate_parts

pytestmark = pytest.mark.llm


def _skip_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return 'llama-cpp-python is not installed (CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python==0.3.36)'
    try:
        locate_parts(MODELS["qwen2.5-0.5b"])
    except WeightsNotInstalledError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def backend():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # One thread: llama.cpp slows ~40x when its threads outnumber free cores, and test machines are shared.
    with create_backend("llamacpp:default", n_ctx=512, n_threads=1) as loaded:
        yield loaded


PROMPT = [
    {"role": "system", "content": "你是一名心理健康分析助手。"},
    {"role": "user", "content": "帖子：我最近总是失眠，觉得很累。请用一句话描述这条帖子的情绪。"},
]


def test_default_model_answers_in_chinese_reproducibly(backend) -> None:
    request = GenerationRequest(PROMPT, GenerationSettings(max_new_tokens=24))
    first, second = backend.generate([request, request])
    assert first.ok, first.error
    assert first.text.strip() and any("\u4e00" <= ch <= "\u9fff" for ch in first.text)
    assert 0 < first.completion_tokens <= 24 and first.prompt_tokens > 10
    assert first.text == second.text
    assert backend.model_id == "llamacpp:qwen2.5-0.5b@1d9614638d18"


def test_stop_strings_and_token_limit(backend) -> None:
    settings = GenerationSettings(max_new_tokens=40, stop=["5"])
    result = backend.chat([{"role": "user", "content": "从1数到10，用逗号分隔。"}], settings)
    assert result.ok and "5" not in result.text and result.finish_reason == "stop"
    short = backend.chat(PROMPT, GenerationSettings(max_new_tokens=2))
    assert short.completion_tokens == 2 and short.finish_reason == "length"


def test_context_overflow_is_reported_not_truncated(backend) -> None:
    results = backend.generate([GenerationRequest.from_prompt("很" * 2000), GenerationRequest(PROMPT)])
    assert results[0].finish_reason == "error" and "context overflow" in (results[0].error or "")
    assert results[1].ok


def test_a_grammar_constrains_the_reply(backend) -> None:
    grammar = 'root ::= "答：" ("甲方" | "乙方") "。"'
    result = backend.chat(PROMPT, GenerationSettings(max_new_tokens=16, grammar=grammar))
    assert result.ok, result.error
    assert result.text in ("答：甲方。", "答：乙方。")


def test_the_copy_guard_keeps_a_reply_from_reading_a_text_back(backend) -> None:
    from mentalglm.backends.copy_guard import RUN_CHARS, comparable
    from mentalglm.instruct.qc import _longest_common_run

    definition = "提到了具体的自杀方法、时间或准备行为，或表达了明确的自杀意图。"
    ask = [{"role": "user", "content": f"请原样复述这句话，一字不改：{definition}"}]
    plain = backend.generate([GenerationRequest(ask, GenerationSettings(max_new_tokens=60))])[0]
    guarded = backend.generate([GenerationRequest(ask, GenerationSettings(max_new_tokens=60,
                                                                          avoid_copying=(definition,)))])[0]
    assert _longest_common_run(comparable(plain.text), comparable(definition)) >= 16  # it does read it back
    assert _longest_common_run(comparable(guarded.text), comparable(definition)) <= RUN_CHARS + 3
