from __future__ import annotations

import subprocess
import sys

import pytest

from mentalglm.backends import (
    BackendConfig,
    UnknownBackendError,
    available_backends,
    create_backend,
    register_backend,
)
from mentalglm.backends.fake import FakeBackend
from mentalglm.backends.registry import _REGISTERED
from mentalglm.errors import ConfigError


def test_spec_string_parses_kind_and_model() -> None:
    assert BackendConfig.parse("llamacpp:/models/a:b.gguf") == BackendConfig("llamacpp", "/models/a:b.gguf")
    assert BackendConfig.parse("OpenAI:gpt-4o", timeout_s=5).options == {"timeout_s": 5}


@pytest.mark.parametrize("spec", ["llamacpp", "llamacpp:", ":model", ""])
def test_malformed_spec_says_what_a_spec_looks_like(spec: str) -> None:
    with pytest.raises(ConfigError, match="KIND:MODEL"):
        BackendConfig.parse(spec)


def test_unknown_backend_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'llamacpp'"):
        create_backend("llamacp:default")
    with pytest.raises(UnknownBackendError, match="known: fake, hf, llamacpp, openai"):
        create_backend("zzz:default")


def test_unknown_option_is_named_before_loading() -> None:
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        create_backend("fake:echo", defualt="x")


def test_fake_from_spec_mapping_and_alias() -> None:
    assert create_backend("fake:echo").chat([{"role": "user", "content": "在吗"}]).text == "在吗"
    backend = create_backend({"kind": "fake", "model": "m", "options": {"default": "好"}})
    assert isinstance(backend, FakeBackend) and backend.chat([{"role": "user", "content": "x"}]).text == "好"
    assert create_backend({"spec": "fake:echo"}).model_id == "fake:echo"
    with pytest.raises(ConfigError, match="unknown backend keys"):
        BackendConfig.from_mapping({"kind": "fake", "modle": "x"})


def test_options_override_the_config() -> None:
    config = BackendConfig("fake", "m", {"default": "a"})
    assert create_backend(config, default="b").chat([{"role": "user", "content": "x"}]).text == "b"


def test_registered_backends_are_created_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_REGISTERED, "scripted", lambda model, **kw: FakeBackend(model, default="plugged"))
    assert "scripted" in available_backends()
    assert create_backend("scripted:any").chat([{"role": "user", "content": "x"}]).text == "plugged"


def test_register_backend_is_public() -> None:
    register_backend("fake-alias-for-test", FakeBackend)
    try:
        assert create_backend("fake-alias-for-test:echo").model_id == "fake:echo"
    finally:
        _REGISTERED.pop("fake-alias-for-test")


def test_importing_the_interface_loads_no_engine() -> None:
    code = (
        "import sys, mentalglm.backends; "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
