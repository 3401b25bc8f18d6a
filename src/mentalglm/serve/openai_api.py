"""OpenAI-compatible `/v1/chat/completions` and `/v1/models` over the service's LLM backend.

So that any OpenAI client (the `openai` package, LangChain, curl scripts) can talk to the model the
analyzer uses. Chat requests go through the same micro-batcher as analyses, because an engine such as
llama.cpp must not be called from two threads at once. User and assistant messages are PII-scrubbed
before the backend sees them (the backend may be a remote API) and the reply is scrubbed again as a
backstop; system messages are the operator's and pass unchanged. Only what OpenAI clients need is
implemented: one choice, no tools; ``stream: true`` is answered as server-sent events, in one piece.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mentalglm.backends.base import Backend, GenerationRequest, GenerationResult, GenerationSettings
from mentalglm.data.pii import scrub
from mentalglm.serve.settings import ServeSettings

CHAT_KEY = "chat"  # the batcher key of chat requests (analyses are keyed by their options)
log = logging.getLogger("mentalglm.serve")
router = APIRouter(tags=["openai"])


class ChatService(Protocol):
    """What these routes use of ``serve.app.Service``, which imports this module for its router."""

    settings: ServeSettings
    llm_model: str | None
    started: int

    def require_ready(self) -> None: ...

    async def submit(self, key: Hashable, payloads: list[Any], request_id: str) -> list[Any]: ...


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(BaseModel):
    """The OpenAI request fields this server honours; others (user, logprobs, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="ignored: the server answers with the model it has loaded")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, description="default 0 (greedy, reproducible)")
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1, description="only one choice is supported")] = 1
    stream: bool = False


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mentalglm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@dataclass
class ChatOutcome:
    """A backend result with its reply scrubbed, and what was scrubbed from the request."""

    result: GenerationResult
    text: str
    scrubbed: Counter[str] = field(default_factory=Counter)


def run_chat(backend: Backend, requests: Sequence[GenerationRequest]) -> list[ChatOutcome]:
    """Scrub, generate, scrub the replies; runs in the batcher's worker thread (jieba and the model are slow)."""
    clean, counts = [], []
    for request in requests:
        counted: Counter[str] = Counter()
        messages = []
        for message in request.messages:
            if message["role"] != "system":
                scrubbed = scrub(message["content"])
                counted.update(scrubbed.counts)
                message = {**message, "content": scrubbed.text}
            messages.append(message)
        clean.append(GenerationRequest(messages, request.settings))
        counts.append(counted)
    return [ChatOutcome(result, scrub(result.text, names=False).text if result.text else "", counted)
            for result, counted in zip(backend.generate(clean), counts, strict=True)]


def _generation_request(body: ChatCompletionRequest, max_allowed: int) -> GenerationRequest:
    max_tokens = body.max_completion_tokens or body.max_tokens or max_allowed
    if max_tokens > max_allowed:
        raise HTTPException(400, f"max_tokens {max_tokens} is more than this server allows ({max_allowed}); "
                                 "ask for fewer or start the server with --chat-max-tokens")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        settings = GenerationSettings(temperature=body.temperature or 0.0, top_p=body.top_p or 1.0,
                                      max_new_tokens=max_tokens, stop=stop, seed=body.seed if body.seed is not None else 0)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    return GenerationRequest(messages, settings)


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream: true"}})
async def chat_completions(body: ChatCompletionRequest, request: Request, response: Response) -> Any:
    """OpenAI-compatible chat completion over the loaded LLM (PII scrubbed before it reaches the model)."""
    service: ChatService = request.app.state.service
    service.require_ready()
    generation = _generation_request(body, service.settings.chat_max_tokens)
    request_id = response.headers["X-Request-ID"] = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    start = time.perf_counter()
    outcome: ChatOutcome = (await service.submit(CHAT_KEY, [generation], request_id))[0]
    result = outcome.result
    log.info("chat request=%s messages=%d chars=%d pii_scrubbed=%s completion_tokens=%d finish=%s latency_ms=%.0f",
             request_id, len(generation.messages), sum(len(m["content"]) for m in generation.messages),
             dict(outcome.scrubbed), result.completion_tokens, result.finish_reason, (time.perf_counter() - start) * 1000)
    if service.settings.log_posts:
        log.info("chat request=%s messages=%s reply=%r", request_id, generation.messages, outcome.text)
    if not result.ok:
        raise HTTPException(502, f"the model failed to answer: {result.error}")
    completion = ChatCompletion(
        id=request_id, created=int(time.time()), model=service.llm_model or service.settings.backend,
        choices=[ChatChoice(message=ChatChoiceMessage(content=outcome.text),
                            finish_reason="length" if result.finish_reason == "length" else "stop")],
        usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                    total_tokens=result.prompt_tokens + result.completion_tokens))
    if body.stream:
        return StreamingResponse(_sse(completion), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Request-ID": request_id})
    return completion


def _sse(completion: ChatCompletion) -> Iterator[str]:
    """The finished completion as `chat.completion.chunk` events: role, content, finish, then [DONE]."""
    choice = completion.choices[0]
    deltas: list[tuple[dict[str, str], str | None]] = [
        ({"role": "assistant", "content": ""}, None), ({"content": choice.message.content}, None),
        ({}, choice.finish_reason)]
    for delta, finish in deltas:
        chunk = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                 "model": completion.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The one model this server answers with (its backend spec until the LLM has been loaded)."""
    service: ChatService = request.app.state.service
    return ModelList(data=[ModelCard(id=service.llm_model or service.settings.backend, created=service.started)])
