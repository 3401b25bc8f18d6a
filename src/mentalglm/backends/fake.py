"""A deterministic backend for tests of the rest of the project: scripted replies, no model, call counting.

It applies `max_new_tokens` (one character = one token) and stop strings like a real engine, so callers'
handling of truncated or stopped output can be tested too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mentalglm.backends.base import Backend, FinishReason, GenerationRequest, GenerationResult, apply_stop

Responder = Callable[[GenerationRequest], str]


class FakeBackend(Backend):
    """`fake:echo` repeats the last user message; otherwise replies come from `responses`.

    `responses` is a callable (request -> reply; raising records a failure) or a mapping of substring -> reply,
    checked in order against the whole conversation. With no match, `default` is returned, or the request
    fails when `default` is None, which tests use to exercise error paths.
    """

    name = "fake"

    def __init__(
        self,
        model: str = "scripted",
        responses: Responder | Mapping[str, str] | None = None,
        default: str | None = "",
        supports_grammar: bool = False,
    ) -> None:
        self._model = model
        self.supports_grammar = supports_grammar  # scripted replies stand in for grammar-following ones
        self.responses = responses
        self.default = default
        self.calls = 0
        self.requests: list[GenerationRequest] = []

    @property
    def model_id(self) -> str:
        return f"fake:{self._model}"

    def _reply(self, request: GenerationRequest) -> str:
        if callable(self.responses):
            return self.responses(request)
        if self._model == "echo" and self.responses is None:
            return next(m["content"] for m in reversed(request.messages) if m["role"] == "user")
        conversation = "\n".join(m["content"] for m in request.messages)
        for needle, reply in (self.responses or {}).items():
            if needle in conversation:
                return reply
        if self.default is None:
            raise LookupError("no scripted reply matches this request and no default is set")
        return self.default

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        self.requests.append(request)
        text, _ = apply_stop(self._reply(request), request.settings.stop)
        limit = request.settings.max_new_tokens
        finish: FinishReason = "length" if len(text) > limit else "stop"  # the limit is reached before any stop string
        text = text[:limit]
        prompt_tokens = sum(len(m["content"]) for m in request.messages)
        return GenerationResult(text, finish, prompt_tokens, len(text))
