"""Any OpenAI-compatible chat endpoint: GPT-4-class APIs, GLM, DeepSeek, vLLM, a llama.cpp server.

Keys are read from the environment only and never appear in a repr, a log line or a recorded error, because
run configs and per-sample logs are shared. Text sent here leaves the machine: scrub PII before calling.

A vLLM or SGLang server gets its throughput from batching many requests at once, so up to ``concurrency``
requests are in flight (threads: the client is synchronous and the work is waiting on the network), in a
sliding window rather than batch by batch, so one slow answer does not hold the others back. Results still come
back in request order. Against a server answering after 200 ms, 8 in flight gave 6.9x the posts/s of 1 for
`predict` and 7.1x for `build` (benchmarks/bench_concurrency.py, results/concurrency/concurrency.md).
"""

from __future__ import annotations

import ipaddress
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from mentalglm.backends.base import (
    Backend,
    BackendError,
    BackendUnavailableError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ResultHook,
    apply_stop,
    describe_error,
)
from mentalglm.errors import ConfigError

BASE_URL_ENVS = ("MENTALGLM_OPENAI_BASE_URL", "OPENAI_BASE_URL")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429})
# Requests submitted ahead of the oldest unfinished one, per request in flight: enough to keep the server busy
# while one answer is slow, few enough that a kill loses little and memory stays flat.
WINDOW_PER_SLOT = 4
_LOCAL_PLACEHOLDER_KEY = "no-key-needed-for-local-server"


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address: traffic that never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_local(url: str) -> bool:
    return is_loopback_host(urlparse(url).hostname or "")


class OpenAICompatBackend(Backend):
    """Chat completions with retries (exponential backoff with jitter, or the server's Retry-After), a timeout,
    up to ``concurrency`` requests in flight, and a stop after ``max_consecutive_failures`` failed requests in a
    row (0: never), because a dead or garbling server would otherwise turn a long run into a file of failures."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        concurrency: int = 4,
        max_consecutive_failures: int = 32,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            raise BackendError("the openai backend needs the `openai` package: pip install 'mentalglm[remote]'") from exc
        self._openai = openai
        self._model = model
        self.base_url = (base_url or next((os.environ[e] for e in BASE_URL_ENVS if os.environ.get(e)), "")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env, "")
        if not self._api_key:
            if not _is_local(self.base_url):
                raise ConfigError(
                    f"no API key for {self.base_url}: set the environment variable {api_key_env} "
                    "(keys are read from the environment only, never from config files)"
                )
            self._api_key = _LOCAL_PLACEHOLDER_KEY
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(f"max_tokens_field must be max_tokens or max_completion_tokens, got {max_tokens_field!r}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1 (requests in flight), got {concurrency}")
        self.timeout_s, self.max_retries, self.concurrency = timeout_s, max_retries, concurrency
        self.max_consecutive_failures = max_consecutive_failures
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_tokens_field, self.extra_body = max_tokens_field, extra_body
        # Our own retry loop (max_retries=0 here) so that every retry is counted and backed off the same way.
        # The client's connection pool (1,000 connections) is shared by the threads; it is thread-safe.
        self._client = openai.OpenAI(api_key=self._api_key, base_url=self.base_url, timeout=timeout_s, max_retries=0)
        self.retries = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"openai:{self._model}@{urlparse(self.base_url).netloc}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self._model!r}, base_url={self.base_url!r}, "
            f"api_key=<from ${self.api_key_env}, hidden>, timeout_s={self.timeout_s}, concurrency={self.concurrency})"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._client.close()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mentalglm-openai")
            return self._pool

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(self.generate_iter(requests))

    def generate_iter(self, requests: Iterable[GenerationRequest], *, batch_size: int = 8,
                      on_result: ResultHook | None = None) -> Iterator[GenerationResult]:
        """Up to ``concurrency`` requests in flight in a sliding window; results in request order.

        ``batch_size`` does not matter here: the window decides what is sent. A request still in flight when the
        caller stops iterating is cancelled or its answer discarded.
        """
        source = iter(requests)
        window = max(self.concurrency * WINDOW_PER_SLOT, 1)
        futures: dict[Future[GenerationResult], int] = {}
        ready: dict[int, GenerationResult] = {}
        submitted = yielded = failures_in_a_row = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - yielded < window:
                    request = next(source, None)
                    if request is None:
                        exhausted = True
                        break
                    futures[self._executor().submit(self._guarded, request)] = submitted
                    submitted += 1
                if yielded == submitted:
                    return
                if yielded not in ready:
                    finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                    for future in sorted(finished, key=futures.__getitem__):
                        index, result = futures.pop(future), future.result()
                        ready[index] = result
                        if on_result is not None:
                            on_result(index, result)
                    continue
                result = ready.pop(yielded)
                # Counted in request order, not completion order: which of two in-flight requests ends first is
                # up to the threads, and a count that depends on it stops one run and not the next.
                failures_in_a_row = failures_in_a_row + 1 if result.error else 0
                if 0 < self.max_consecutive_failures <= failures_in_a_row:
                    raise BackendUnavailableError(
                        f"{failures_in_a_row} requests in a row failed at {self.base_url}, the last: "
                        f"{result.error}; check that the server is up and answers chat completions "
                        "(finished results are kept: rerun to go on)")
                yield result
                yielded += 1
        finally:
            for future in futures:
                future.cancel()

    def _guarded(self, request: GenerationRequest) -> GenerationResult:
        result = super()._guarded(request)
        if result.error and self._api_key in result.error:
            result.error = result.error.replace(self._api_key, "***")
        return result

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, self._openai.APIConnectionError):  # includes timeouts
            return True
        status = getattr(exc, "status_code", None)
        return isinstance(exc, self._openai.APIStatusError) and (status in RETRY_STATUS or (status or 0) >= 500)

    def _delay(self, attempt: int, exc: Exception | None = None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After (seconds) when it sends one."""
        response = getattr(exc, "response", None)
        retry_after = getattr(response, "headers", {}).get("retry-after") if response is not None else None
        try:
            if retry_after is not None:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        kwargs: dict[str, Any] = {"model": self._model, **request.chat_params(self.max_tokens_field)}
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        start = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(**kwargs)
                break
            except Exception as exc:
                if attempt == self.max_retries or not self._retryable(exc):
                    reason = describe_error(exc)
                    if isinstance(exc, ValueError):  # the body did not decode: a proxy page, not an API answer
                        reason = (f"the server answered with something that is not a chat completion ({reason}); "
                                  f"check that {self.base_url} is the /v1 root of an OpenAI-compatible server")
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    return GenerationResult.failure(reason + suffix, latency_s=time.perf_counter() - start)
                with self._pool_lock:
                    self.retries += 1
                time.sleep(self._delay(attempt, exc))
        return self._parse(response, request, time.perf_counter() - start)

    @staticmethod
    def _parse(response: Any, request: GenerationRequest, latency_s: float) -> GenerationResult:
        """Validate the response shape: a proxy's HTML error page must become a failure, not an empty reply."""
        try:
            choice = response.choices[0]
            content = choice.message.content
        except (AttributeError, IndexError, TypeError) as exc:
            return GenerationResult.failure(
                f"malformed response from the server ({type(response).__name__}: {str(response)[:120]!r}): {exc}",
                latency_s=latency_s,
            )
        if not isinstance(content, str):
            return GenerationResult.failure(f"the response has no text content ({content!r})", latency_s=latency_s)
        text, stopped = apply_stop(content, request.settings.stop)  # some servers ignore `stop`
        finish: FinishReason = "length" if choice.finish_reason == "length" and not stopped else "stop"
        usage = getattr(response, "usage", None)
        return GenerationResult(
            text,
            finish,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=latency_s,
        )
