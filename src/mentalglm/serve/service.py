"""The service behind the routes: the analyzer, its micro-batcher and worker thread, loading and shutdown."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import HTTPException

from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.backends.base import describe_error
from mentalglm.data.pii import scrub
from mentalglm.errors import MentalGLMError
from mentalglm.serve.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from mentalglm.serve.openai_api import CHAT_KEY, run_chat
from mentalglm.serve.schemas import ModelInfo
from mentalglm.serve.settings import ServeSettings

log = logging.getLogger("mentalglm.serve")


@dataclass(frozen=True)
class AnalyzeKey:
    """A request's analysis options; requests with equal keys share a model call."""

    tasks: tuple[str, ...]
    explain: bool
    locale: str


def build_analyzer(settings: ServeSettings) -> Analyzer:
    """The analyzer the settings describe; missing classifiers raise MissingDataError naming analyze-train."""
    return Analyzer(settings.tasks, settings.engine, settings.backend, settings.artifacts_dir,
                    explain=settings.explain, max_chars=settings.max_chars, locale=settings.locale)


class Service:
    """Owns the analyzer: loads it off the event loop, runs it through one batcher, closes it on shutdown.

    Extensions call ``analyze`` / ``submit``, or hold ``lock`` around their own analyzer calls (the models are
    not thread-safe); they may append coroutine functions to ``on_shutdown``, run before the queue drains.
    ``publish`` receives the analyzer once it is ready (the app puts it in ``app.state.analyzer``).
    """

    def __init__(self, settings: ServeSettings, analyzer: Analyzer | None = None,
                 publish: Callable[[Analyzer], None] | None = None) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.lock = threading.Lock()
        self._publish = publish
        self.state: Literal["ready", "loading", "error"] = "loading"
        self.error: str | None = None
        self.llm_model: str | None = None
        self.defaults: AnalyzeKey | None = None
        self.started = int(time.time())
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.batcher: MicroBatcher[Any, Any] = MicroBatcher(
            self._run, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue)
        self._loading: asyncio.Future[None] | None = None

    # lifecycle

    async def start(self) -> None:
        """Start the batcher; load the analyzer and its LLM in a thread, at once when nothing is slow to load."""
        self.batcher.start()
        if self.analyzer is not None and not self.analyzer.uses_llm:
            self._load()
        else:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))

    def _load(self) -> None:
        try:
            analyzer = self.analyzer or build_analyzer(self.settings)
            if analyzer.uses_llm:
                self.llm_model = analyzer.backend.model_id
                scrub("预热")  # jieba's dictionary (seconds) loads here, not in the first request's scrub
        except Exception as exc:  # reported on /readyz and in the log, the process stays up for probes
            self.error = str(exc) if isinstance(exc, MentalGLMError) else describe_error(exc)
            self.state = "error"
            log.error("could not load the analyzer: %s", self.error)
            return
        self.analyzer = analyzer
        self.defaults = AnalyzeKey(tuple(t.id for t in analyzer.tasks), analyzer.explain, analyzer.locale)
        if self._publish is not None:
            self._publish(analyzer)
        self.state = "ready"
        log.info("ready: engine=%s tasks=%s llm=%s", analyzer.engine, ",".join(self.defaults.tasks), self.llm_model)

    async def stop(self) -> None:
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception as exc:
                log.error("shutdown hook failed: %s", describe_error(exc))
        idle = await self.batcher.close(self.settings.shutdown_timeout_s)
        if self._loading is not None and not self._loading.done():
            log.warning("shutting down while the model is still loading; it is left to the process exit")
        elif not idle:
            log.warning("a model call was still running after %.0f s; the model is left to the process exit",
                        self.settings.shutdown_timeout_s)
        elif self.analyzer is not None:
            await asyncio.to_thread(self._close_analyzer)

    def _close_analyzer(self) -> None:
        """Free the model only once no batch (a request's or a batch job's) is running on it."""
        if not self.lock.acquire(timeout=self.settings.shutdown_timeout_s):
            log.warning("a batch still held the model after %.0f s; it is left to the process exit",
                        self.settings.shutdown_timeout_s)
            return
        try:
            assert self.analyzer is not None
            self.analyzer.close()
        finally:
            self.lock.release()

    # work

    def require_ready(self) -> None:
        if self.state == "ready":
            return
        reason = (f"the analyzer could not be loaded: {self.error}" if self.state == "error"
                  else "the model is still loading; retry when GET /readyz answers 200")
        raise HTTPException(503, reason, headers={"Retry-After": str(self.settings.retry_after_s)})

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.defaults.tasks if self.defaults else self.settings.tasks

    def key(self, tasks: Sequence[str] | None, explain: bool | None, locale: str | None) -> AnalyzeKey:
        """A request's options, defaults filled in; a task the server does not analyse is a 422."""
        assert self.defaults is not None
        chosen = tuple(dict.fromkeys(tasks)) if tasks else self.defaults.tasks
        unknown = [t for t in chosen if t not in self.defaults.tasks]
        if unknown:
            raise HTTPException(422, f"this server does not analyse {', '.join(map(repr, unknown))}; "
                                     f"tasks: {', '.join(self.defaults.tasks)} (GET /v1/tasks)")
        return AnalyzeKey(chosen, self.defaults.explain if explain is None else explain,
                          locale or self.defaults.locale)

    async def submit(self, key: Hashable, payloads: list[Any], request_id: str) -> list[Any]:
        """Through the batcher; queue full or shutting down is a 503, a failed model call a 500."""
        try:
            return await self.batcher.submit(key, payloads)
        except QueueFullError:
            log.warning("request=%s refused: queue full (%d items waiting)", request_id, self.batcher.pending)
            raise HTTPException(503, "the server is busy: too many posts are waiting; retry later",
                                headers={"Retry-After": str(self.settings.retry_after_s)}) from None
        except BatcherClosedError as exc:
            raise HTTPException(503, str(exc)) from None
        except MentalGLMError as exc:  # e.g. the LLM backend cannot be created: our messages carry no post text
            log.error("request=%s failed: %s", request_id, exc)
            raise HTTPException(503, str(exc)) from None
        except Exception as exc:  # the traceback without the message, which could quote a post
            log.error("request=%s failed: %s\n%s", request_id, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            raise HTTPException(500, f"analysis failed ({type(exc).__name__}); the server log has request "
                                     f"{request_id}") from None

    async def analyze(self, rows: list[InputRow], tasks: Sequence[str] | None = None, explain: bool | None = None,
                      locale: str | None = None, request_id: str = "-") -> list[PostResult | ErrorRecord]:
        """Results (or error records) for ``rows`` in order: the entry point for routes and batch jobs."""
        self.require_ready()
        return await self.submit(self.key(tasks, explain, locale), rows, request_id)

    def _run(self, key: Hashable, payloads: list[Any]) -> Sequence[Any]:
        """The batcher's runner, in its worker thread."""
        assert self.analyzer is not None
        with self.lock:
            if key == CHAT_KEY:
                self.llm_model = self.analyzer.backend.model_id  # the first chat may load the LLM
                return run_chat(self.analyzer.backend, payloads)
            assert isinstance(key, AnalyzeKey)
            return list(self._variant(key).analyze_many(payloads, self.settings.max_batch, keep_going=True))

    def _variant(self, key: AnalyzeKey) -> Analyzer:
        """The analyzer with one group's options: models and backend shared, the original left as it is."""
        assert self.analyzer is not None
        variant = self.analyzer.with_options(tasks=key.tasks, explain=key.explain, locale=key.locale)
        if variant.uses_llm and self.llm_model is None:  # the first request that needs the LLM loaded it
            self.llm_model = variant.backend.model_id
        return variant

    def model_info(self) -> ModelInfo:
        assert self.analyzer is not None and self.defaults is not None
        return ModelInfo(engine=self.analyzer.engine, tasks=list(self.defaults.tasks), explain=self.defaults.explain,
                         locale=self.defaults.locale, llm=self.llm_model)


