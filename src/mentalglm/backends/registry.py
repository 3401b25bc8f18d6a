"""Create backends from a spec string (`llamacpp:default`, `hf:/path`, `openai:gpt-4o`, `fake:echo`) or a config.

Engines are imported only when asked for, so `import mentalglm` needs neither torch, llama_cpp nor openai.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mentalglm.backends.base import Backend, BackendError
from mentalglm.errors import ConfigError

BackendFactory = Callable[..., Backend]

# name -> "module:Class", resolved lazily; register_backend() adds factories at run time.
_BUILTIN: dict[str, str] = {
    "llamacpp": "mentalglm.backends.llamacpp:LlamaCppBackend",
    "hf": "mentalglm.backends.hf:HFBackend",
    "openai": "mentalglm.backends.openai_compat:OpenAICompatBackend",
    "fake": "mentalglm.backends.fake:FakeBackend",
}
_ALIASES: dict[str, str] = {"llama.cpp": "llamacpp", "llama_cpp": "llamacpp", "transformers": "hf"}
_REGISTERED: dict[str, BackendFactory] = {}


class UnknownBackendError(ConfigError):
    pass


@dataclass(frozen=True)
class BackendConfig:
    """What a run's YAML says about its model: `{kind: llamacpp, model: default, options: {n_ctx: 4096}}`."""

    kind: str
    model: str = "default"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, **options: Any) -> BackendConfig:
        kind, sep, model = spec.partition(":")
        if not sep or not kind or not model:
            raise ConfigError(
                f"backend spec {spec!r} must look like KIND:MODEL, e.g. llamacpp:default, hf:/path/to/model, "
                "openai:gpt-4o, fake:echo"
            )
        return cls(kind.strip().lower(), model.strip(), dict(options))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BackendConfig:
        unknown = set(raw) - {"kind", "model", "options", "spec"}
        if unknown:
            raise ConfigError(f"unknown backend keys {sorted(unknown)}; known: kind, model, options (or spec)")
        options = dict(raw.get("options") or {})
        if "spec" in raw:
            return cls.parse(str(raw["spec"]), **options)
        if "kind" not in raw:
            raise ConfigError("a backend mapping needs `kind` (or `spec: KIND:MODEL`)")
        return cls(str(raw["kind"]).lower(), str(raw.get("model", "default")), options)


def register_backend(name: str, factory: BackendFactory) -> None:
    """Add an engine (e.g. a plugin or a test double) under `name`."""
    _REGISTERED[name] = factory


def available_backends() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def _factory(kind: str) -> BackendFactory:
    kind = _ALIASES.get(kind, kind)
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    if kind in _BUILTIN:
        module_name, class_name = _BUILTIN[kind].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    known = available_backends() + sorted(_ALIASES)
    close = difflib.get_close_matches(kind, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownBackendError(f"unknown backend {kind!r}{hint} (known: {', '.join(available_backends())})")


def create_backend(spec: str | BackendConfig | Mapping[str, Any], **options: Any) -> Backend:
    """The single way the project makes a backend; `options` override those of the config."""
    if isinstance(spec, str):
        config = BackendConfig.parse(spec)
    elif isinstance(spec, BackendConfig):
        config = spec
    else:
        config = BackendConfig.from_mapping(spec)
    factory = _factory(config.kind)
    merged = {**config.options, **options}
    _check_options(factory, config.kind, merged)
    try:
        return factory(config.model, **merged)
    except ImportError as exc:
        raise BackendError(f"backend {config.kind!r} needs a package that is not installed: {exc}") from exc


def cli_options(spec: str, *, n_ctx: int | None = None, concurrency: int | None = None) -> dict[str, Any]:
    """The commands' common backend flags as the options the engine takes.

    ``n_ctx`` goes to llama.cpp engines only; ``concurrency`` (requests in flight) only to engines that accept
    it, and asking a local engine for more than one is an error that says why, not an option silently dropped.
    """
    kind = _ALIASES.get(spec.partition(":")[0].strip().lower(), spec.partition(":")[0].strip().lower())
    options: dict[str, Any] = {}
    if n_ctx is not None and kind == "llamacpp":
        options["n_ctx"] = n_ctx
    if concurrency is not None:
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        if "concurrency" in inspect.signature(_factory(kind)).parameters:
            options["concurrency"] = concurrency
        elif concurrency > 1:
            raise ConfigError(f"--concurrency {concurrency}: the {kind!r} backend runs one model in this process, one "
                              "request at a time; concurrency is for servers (openai:MODEL with MENTALGLM_OPENAI_BASE_URL "
                              "set to a vLLM or SGLang server, see docs/scale-out.md)")
    return options


def _check_options(factory: BackendFactory, kind: str, options: Mapping[str, Any]) -> None:
    """Name wrong option keys before an engine spends a minute loading weights."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "model" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"backend {kind!r} has no option {key!r}{hint} (options: {', '.join(accepted)})")
