"""OpenAI-compatible `/v1/chat/completions` and `/v1/models`: MentalGLM as a chat model.

So that any OpenAI client (the `openai` package, LangChain, curl scripts) can ask MentalGLM about a post. The
model ``mentalglm`` (the default) runs the service's analyzer on the last user message and answers in the
C-IMHI layout (标签 / 推理 per task) with the safety notices, crisis resources on high risk: the same decision,
explanation and notices as `/v1/analyze`, never free text from an untuned model. The raw base LLM is served only
when the operator turns it on (``chat_raw_model``), under its backend spec as model id, and even then a message
the analyzer reads as high risk gets the crisis resources appended to the reply.

Chat requests go through the same micro-batcher as analyses, because an engine such as llama.cpp must not be
called from two threads at once. For the raw model, user and assistant messages are PII-scrubbed before the
backend sees them (it may be a remote API) and the reply is scrubbed again as a backstop; system messages are the
operator's and pass unchanged. Only what OpenAI clients need is implemented: one choice, no tools; ``stream:
true`` is answered as server-sent events, in one piece.
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

from mentalglm.analyze.engine import InputRow
from mentalglm.analyze.normalise import normalise
from mentalglm.analyze.safety import not_chinese_chat
from mentalglm.analyze.schema import ErrorRecord, Notice, PostResult, TaskResult
from mentalglm.backends.base import Backend, GenerationRequest, GenerationResult, GenerationSettings
from mentalglm.data.pii import scrub
from mentalglm.serve.settings import ServeSettings
from mentalglm.tasks import get_task
from mentalglm.tasks.layout import LABEL_PREFIX, REASON_PREFIX, render_answer
from mentalglm.tasks.parsing import chinese_share_by_words

CHAT_KEY = "chat"  # the batcher key of chat requests (analyses are keyed by their options)
MENTALGLM_MODEL = "mentalglm"  # the chat model that answers with the analyzer
log = logging.getLogger("mentalglm.serve")
router = APIRouter(tags=["openai"])


class ChatService(Protocol):
    """What these routes use of ``serve.service.Service``, which imports this module for its chat runner."""

    settings: ServeSettings
    llm_model: str | None
    started: int

    def require_ready(self) -> None: ...

    async def submit(self, key: Hashable, payloads: list[Any], request_id: str) -> list[Any]: ...

    async def analyze(self, rows: list[InputRow], tasks: Sequence[str] | None = None, explain: bool | None = None,
                      locale: str | None = None, request_id: str = "-") -> list[PostResult | ErrorRecord]: ...


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

    model: str | None = Field(default=None, description="`mentalglm` (the default: the analyzer answers) or, when the "
                              "operator serves it, the raw base LLM's id from /v1/models")
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


def raw_model_ids(service: ChatService) -> tuple[str, ...]:
    """Ids the raw base LLM answers to when the operator serves it: its backend spec, and its loaded name."""
    if not service.settings.chat_raw_model:
        return ()
    return tuple(dict.fromkeys(i for i in (service.settings.backend, service.llm_model) if i))


def _post_of(body: ChatCompletionRequest) -> str:
    """The text MentalGLM reads: the last user message (earlier turns are context an analysis does not use)."""
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise HTTPException(400, "no user message: send the post as {\"role\": \"user\", \"content\": \"帖子\"}")
    text = users[-1].text()
    if not text.strip():
        raise HTTPException(400, "the last user message is empty: send the post to analyse as its content")
    return text


# Below this share of Chinese (``chinese_share_by_words`` of the text the classifiers read, where 想死 stands for
# "want to die") a chat message is refused as not Chinese. Weibo posts mix in English words, pinyin, links, @handles
# and #topics#, and are read: "yyds 绝绝子 xswl hhhh" is 0.5, "wo xiang zisha" 0.5, "I want to die 我不想活了" 0.88,
# "emo了 to be honest I can't take it 活着好累" 0.36. "I want to kill myself tonight, the pills are ready." is 0.2
# (its 自杀 read from "kill myself"), and the models, which read no English, decided it "无明显风险": refused.
MIN_CHAT_CHINESE_SHARE = 0.3


def _chinese(text: str) -> str:
    """MentalGLM's models only learned Chinese posts: a message that is not Chinese is refused, with where help is."""
    share = chinese_share_by_words(normalise(text))
    if share < MIN_CHAT_CHINESE_SHARE:
        raise HTTPException(422, not_chinese_chat(share))
    return text


def _task_block(result: TaskResult) -> str:
    task = get_task(result.task)
    if result.nothing_evident:
        answer = LABEL_PREFIX + (result.nothing_evident_zh or "")
        if result.explanation:
            answer += "\n" + REASON_PREFIX + result.explanation
    elif not result.valid:
        answer = LABEL_PREFIX + "无法判断（模型回答无法解析）"
    else:
        answer = render_answer(task, [label.id for label in result.labels], result.explanation)
    return f"【{task.name_zh}】\n{answer}"


def _notice_block(notice: Notice) -> str:
    lines = [notice.text, *(f"- {r.name}：{r.contact}" + (f"（{r.note}）" if r.note else "") for r in notice.resources)]
    return "\n".join(lines)


def render_reply(result: PostResult) -> str:
    """The analysis in the C-IMHI layout, one block a task, then the notices (crisis resources first on high risk)."""
    notices = sorted(result.notices, key=lambda n: n.kind != "crisis")
    return "\n\n".join([*(_task_block(r) for r in result.tasks.values()), *(_notice_block(n) for n in notices)])


def _crisis_addendum(result: PostResult | ErrorRecord | None) -> str:
    if not isinstance(result, PostResult) or not result.high_risk:
        return ""
    return "\n\n" + "\n\n".join(_notice_block(n) for n in result.notices if n.kind == "crisis")


async def _analysis(service: ChatService, text: str, request_id: str, explain: bool | None = None) -> PostResult:
    """The analyzer's result for the chat text; a text it refuses (too long, binary) is the client's error."""
    result = (await service.analyze([InputRow("chat", text)], explain=explain, request_id=request_id))[0]
    if isinstance(result, ErrorRecord):
        raise HTTPException(413 if "more than the maximum" in result.error else 400, result.error)
    return result


def _usage(prompt: str, reply: str) -> Usage:
    """Characters, not tokens, for the mentalglm model: its labels come from classifiers, not an LLM's tokens."""
    return Usage(prompt_tokens=len(prompt), completion_tokens=len(reply), total_tokens=len(prompt) + len(reply))


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream: true"}})
async def chat_completions(body: ChatCompletionRequest, request: Request, response: Response) -> Any:
    """MentalGLM's analysis of the last user message in the C-IMHI layout, with the safety notices (model
    `mentalglm`); or the raw base LLM where the operator serves it. Decision support, not a diagnosis."""
    service: ChatService = request.app.state.service
    service.require_ready()
    model = body.model or MENTALGLM_MODEL
    raw_ids = raw_model_ids(service)
    if model != MENTALGLM_MODEL and model not in raw_ids:
        served = ", ".join([MENTALGLM_MODEL, *raw_ids])
        raise HTTPException(404, f"the model {model!r} does not exist on this server; models: {served} (GET /v1/models)")
    request_id = response.headers["X-Request-ID"] = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    start = time.perf_counter()
    post = _post_of(body)
    if model == MENTALGLM_MODEL:
        analysis = await _analysis(service, _chinese(post), request_id)
        text, finish, usage = render_reply(analysis), "stop", None
        log.info("chat request=%s model=mentalglm chars=%d high_risk=%s latency_ms=%.0f", request_id, len(post),
                 analysis.high_risk, (time.perf_counter() - start) * 1000)
    else:
        generation = _generation_request(body, service.settings.chat_max_tokens)
        outcome: ChatOutcome = (await service.submit(CHAT_KEY, [generation], request_id))[0]
        result = outcome.result
        log.info("chat request=%s model=raw messages=%d chars=%d pii_scrubbed=%s completion_tokens=%d finish=%s "
                 "latency_ms=%.0f", request_id, len(generation.messages),
                 sum(len(m["content"]) for m in generation.messages), dict(outcome.scrubbed), result.completion_tokens,
                 result.finish_reason, (time.perf_counter() - start) * 1000)
        if not result.ok:
            raise HTTPException(502, f"the model failed to answer: {result.error}")
        screened = (await service.analyze([InputRow("chat", post)], explain=False, request_id=request_id))[0]
        text = outcome.text + _crisis_addendum(screened)
        finish = "length" if result.finish_reason == "length" else "stop"
        usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                      total_tokens=result.prompt_tokens + result.completion_tokens)
    if service.settings.log_posts:
        log.info("chat request=%s post=%r reply=%r", request_id, post, text)
    completion = ChatCompletion(
        id=request_id, created=int(time.time()), model=model,
        choices=[ChatChoice(message=ChatChoiceMessage(content=text), finish_reason=finish)],  # type: ignore[arg-type]
        usage=usage or _usage(post, text))
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
    """`mentalglm`, and the raw base LLM's id where the operator serves it."""
    service: ChatService = request.app.state.service
    raw = raw_model_ids(service)[:1]  # one card for the raw model: its backend spec
    return ModelList(data=[ModelCard(id=model, created=service.started) for model in (MENTALGLM_MODEL, *raw)])
