from __future__ import annotations

from pathlib import Path

import pytest

from mentalglm.backends import BackendError, GenerationRequest, GenerationSettings, create_backend

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    return create_backend(f"hf:{tiny_model_dir}", device="cpu", batch_size=2)


def _ask(text: str, **settings) -> GenerationRequest:
    return GenerationRequest.from_prompt(text, settings=GenerationSettings(**settings))


def test_chat_template_is_applied(backend) -> None:
    prompt = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert backend.tokenizer.padding_side == "left"


def test_batched_greedy_matches_one_by_one(backend) -> None:
    requests = [_ask("你好", max_new_tokens=6), _ask("我最近很难过，睡不着觉", max_new_tokens=6), _ask("hi", max_new_tokens=6)]
    batched = backend.generate(requests)
    alone = [backend.generate([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(r.ok and r.completion_tokens <= 6 and r.prompt_tokens > 0 for r in batched)
    assert {r.finish_reason for r in batched} <= {"stop", "length"}


def test_seeded_sampling_is_reproducible(backend) -> None:
    request = _ask("hi", max_new_tokens=8, temperature=1.0, seed=7)
    assert backend.generate([request])[0].text == backend.generate([request])[0].text


def test_mixed_settings_keep_request_order(backend) -> None:
    results = backend.generate([_ask("a", max_new_tokens=3), _ask("b", max_new_tokens=1), _ask("c", max_new_tokens=3)])
    assert [r.completion_tokens <= n for r, n in zip(results, (3, 1, 3), strict=True)] == [True] * 3
    assert results[1].completion_tokens == 1


def test_overlong_prompt_is_an_error_not_a_truncation(backend) -> None:
    results = backend.generate([_ask("很" * 400, max_new_tokens=2), _ask("短", max_new_tokens=2)])
    assert results[0].finish_reason == "error" and "context overflow" in (results[0].error or "")
    assert results[1].ok


def test_unreachable_hub_id_says_so_and_suggests_a_local_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentalglm.backends import hf

    monkeypatch.setattr(hf, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(BackendError, match="cannot be reached.*hf:/path/to/model"):
        create_backend("hf:no-such-org/no-such-model-xyz")


def test_offline_mode_skips_the_network_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentalglm.backends import hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf.socket, "create_connection", lambda *a, **k: pytest.fail("probed the network"))
    assert hf.hub_reachable() is False


def test_missing_local_directory_content_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=str(tmp_path)):
        create_backend(f"hf:{tmp_path}")
