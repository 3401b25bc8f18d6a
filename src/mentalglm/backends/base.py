"""The one LLM interface of the project: chat requests in, results (or recorded failures) out.

Every engine (llama.cpp, transformers, OpenAI-compatible HTTP, the test fake) implements `Backend`, so tasks,
instruction building, evaluation and the service never see engine details. A failed request becomes a
`GenerationResult` with `error` set, because one bad post must not cost a batch of hours of generation.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, Literal

from mentalglm.errors import MentalGLMError

Message = dict[str, str]
FinishReason = Literal["stop", "length", "error"]
ROLES = frozenset({"system", "user", "assistant"})
CACHE_KEY_VERSION = 1


class BackendError(MentalGLMError):
    """A backend cannot be created or used (missing package, unloadable model, bad option)."""


class BackendUnavailableError(BackendError):
    """Every request in a row failed (server down, garbage answers): going on would only record failures."""


class GenerationError(BackendError):
    """Raised only when a caller asks for it (`raise_on_error=True`): lists the failed requests."""

    def __init__(self, failures: Sequence[tuple[int, str]]) -> None:
        self.failures = list(failures)
        shown = "; ".join(f"#{i}: {reason}" for i, reason in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(f"{len(self.failures)} request(s) failed: {shown}{more}")


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; `temperature=0` means greedy so that evaluation runs are reproducible."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    # A GBNF grammar the reply must follow (llama.cpp's; backends with ``supports_grammar``): the analyzer's
    # grounded explanations build one per post so a quote is copied from the post, never recalled.
    grammar: str | None = None
    # Texts whose long runs the reply should not repeat (backends/copy_guard.py): llama.cpp biases against the token
    # that would; the other backends ignore it, and QC still checks every reply.
    avoid_copying: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Canonical types, so that 0 and 0.0 or a list and a tuple give the same cache key.
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "avoid_copying", tuple(self.avoid_copying))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> GenerationSettings:
        """Build from a YAML mapping, naming unknown keys instead of ignoring them."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown generation settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw)


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Check the chat format early: an engine error deep in a batch is much harder to read."""
    if not messages:
        raise ValueError("a request needs at least one message")
    clean: list[Message] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        clean.append({"role": role, "content": content})
    return clean


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[Message]
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", validate_messages(self.messages))

    def chat_params(self, max_tokens_field: str = "max_tokens") -> dict[str, Any]:
        """The request as OpenAI-style chat-completion arguments, which llama.cpp takes too; ``stop`` and ``seed``
        only when set. Engines add their own (the model name, llama.cpp's sampler defaults)."""
        settings = self.settings
        params: dict[str, Any] = {"messages": self.messages, "temperature": settings.temperature,
                                  "top_p": settings.top_p, max_tokens_field: settings.max_new_tokens}
        if settings.stop:
            params["stop"] = list(settings.stop)
        if settings.seed is not None:
            params["seed"] = settings.seed
        return params

    @classmethod
    def from_prompt(
        cls, prompt: str, system: str | None = None, settings: GenerationSettings | None = None
    ) -> GenerationRequest:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return cls(messages, settings or GenerationSettings())


@dataclass
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, reason: str, latency_s: float = 0.0, prompt_tokens: int = 0) -> GenerationResult:
        return cls("", "error", prompt_tokens=prompt_tokens, latency_s=latency_s, error=reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_key(messages: Sequence[Mapping[str, Any]], model_id: str, settings: GenerationSettings) -> str:
    """SHA-256 of canonical JSON of everything that decides the output, so cached results can be reused."""
    payload = {
        "v": CACHE_KEY_VERSION,
        "model_id": model_id,
        "messages": validate_messages(messages),
        # without a grammar the key is the one it was before grammars existed: caches stay valid
        # fields added later are left out at their defaults, so replies cached before them keep their keys
        "settings": {k: v for k, v in asdict(settings).items()
                     if not (k == "grammar" and v is None) and not (k == "avoid_copying" and not v)},
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string (excluded, as the OpenAI API does); engines differ on this."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


ResultHook = Callable[[int, GenerationResult], None]


class Backend(ABC):
    """An LLM engine. Subclasses implement `_generate_one`; batched engines also override `_generate`;
    engines that serve concurrent requests (a remote server) override `generate_iter`."""

    name: str = "backend"
    # Requests the engine works on at once; > 1 only for servers that batch concurrent requests (vLLM, SGLang).
    concurrency: int = 1
    # Whether the engine constrains replies with ``GenerationSettings.grammar``; others refuse such a request.
    supports_grammar: bool = False

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the weights (used in cache keys): same id, same outputs for the same request."""

    def generate(
        self, requests: Sequence[GenerationRequest], *, raise_on_error: bool = False
    ) -> list[GenerationResult]:
        """Results in request order; failures are recorded in `error` unless `raise_on_error`."""
        requests = list(requests)
        refused = {i: r for i, request in enumerate(requests) if (r := self._refusal(request)) is not None}
        sent = iter(self._generate([request for i, request in enumerate(requests) if i not in refused]))
        results = [refused[i] if i in refused else next(sent) for i in range(len(requests))]
        if raise_on_error:
            failures = [(i, r.error) for i, r in enumerate(results) if r.error is not None]
            if failures:
                raise GenerationError(failures)
        return results

    def generate_iter(self, requests: Iterable[GenerationRequest], *, batch_size: int = 8,
                      on_result: ResultHook | None = None) -> Iterator[GenerationResult]:
        """Results in request order while requests are read lazily, so callers can stream any number of them.

        ``on_result(i, result)`` runs in the caller's thread as soon as request ``i``'s result is known, which on
        a concurrent engine can be before earlier requests finish: a cache written there keeps every finished
        result when the run is killed, not only those already yielded. This default hands ``batch_size``
        requests at a time to ``generate`` (batched engines batch within them).
        """
        source = iter(requests)
        index = 0
        while chunk := list(islice(source, max(1, batch_size))):
            for result in self.generate(chunk):
                if on_result is not None:
                    on_result(index, result)
                index += 1
                yield result

    def chat(self, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings | None = None) -> GenerationResult:
        return self.generate([GenerationRequest(validate_messages(messages), settings or GenerationSettings())])[0]

    def cache_key(self, request: GenerationRequest) -> str:
        return cache_key(request.messages, self.model_id, request.settings)

    def close(self) -> None:
        """Release the model or connections; the default has nothing to release."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._guarded(request) for request in requests]

    def _guarded(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        if (refused := self._refusal(request)) is not None:
            return refused
        try:
            result = self._generate_one(request)
        except Exception as exc:  # one failed request must not end the batch
            return GenerationResult.failure(describe_error(exc), latency_s=time.perf_counter() - start)
        if not result.latency_s:
            result.latency_s = time.perf_counter() - start
        return result

    def _refusal(self, request: GenerationRequest) -> GenerationResult | None:
        """A request this engine cannot honour, answered without sending it (never silently unconstrained)."""
        if request.settings.grammar is not None and not self.supports_grammar:
            return GenerationResult.failure(f"{self.name} backends cannot follow a grammar (llamacpp can); "
                                            "the request was not sent")
        return None

    @abstractmethod
    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        """Generate for one request; may raise, `_guarded` records the reason."""
