"""Micro-batching in front of a model that must be used from one thread at a time.

Requests are queued; one worker takes the first, waits up to ``max_wait_s`` for more until ``max_batch``
items are collected, groups them by key (requests with the same options share one model call), runs each
group in a worker thread and hands every request its own slice of the results. The queue is bounded in
items (posts), not requests, so one large request cannot hide behind a small count; a full queue refuses
at once (the caller answers 503 + Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")
Runner = Callable[[Hashable, list[P]], Sequence[R]]

log = logging.getLogger("mentalglm.serve")


class QueueFullError(Exception):
    """More items are waiting than the queue allows; retry later."""


class BatcherClosedError(Exception):
    """The service is shutting down and takes no more work."""


@dataclass
class _Pending(Generic[P, R]):
    key: Hashable
    payloads: list[P]
    future: asyncio.Future[list[R]] = field(repr=False)
    counted: bool = True  # still counted in ``pending``


class MicroBatcher(Generic[P, R]):
    """Collects ``submit`` calls into batches for ``run(key, payloads) -> results`` (same order, same length)."""

    def __init__(self, run: Runner[P, R], *, max_batch: int, max_wait_s: float, max_queue: int) -> None:
        self._run = run
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._queue: asyncio.Queue[_Pending[P, R]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self.pending = 0  # items queued or being run
        self.busy = False  # a group is running in a thread right now
        self.closed = False

    def start(self) -> None:
        """Start the worker on the running event loop (the app's lifespan calls this)."""
        self._queue, self._idle = asyncio.Queue(), asyncio.Event()
        self._idle.set()
        self.closed = False
        self._worker = asyncio.create_task(self._work(), name="mentalglm-batcher")

    async def submit(self, key: Hashable, payloads: list[P]) -> list[R]:
        """Queue the payloads and wait for their results; refuses at once when full or closed."""
        if self.closed or self._queue is None:
            raise BatcherClosedError("the service is shutting down")
        if self.pending + len(payloads) > self.max_queue:
            raise QueueFullError(f"{self.pending} items are waiting, the queue holds {self.max_queue}")
        if not payloads:
            return []
        item: _Pending[P, R] = _Pending(key, payloads, asyncio.get_running_loop().create_future())
        self.pending += len(payloads)
        assert self._idle is not None
        self._idle.clear()
        self._queue.put_nowait(item)
        return await item.future

    async def close(self, timeout_s: float) -> bool:
        """Refuse new work, let queued work finish for up to ``timeout_s``, then fail the rest.

        Returns False when a model call was still running in its thread (the caller must not free the model).
        """
        self.closed = True
        if self._worker is None:
            return True
        assert self._idle is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None
        while self._queue is not None and not self._queue.empty():
            self._finish(self._queue.get_nowait(), error=BatcherClosedError("the service shut down before this "
                                                                            "request was processed"))
        return not self.busy

    # --- worker -------------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            try:
                await self._fill(batch)
                for key, items in _grouped(batch).items():
                    await self._run_group(key, items)
            except asyncio.CancelledError:
                for item in batch:
                    self._finish(item, error=BatcherClosedError("the service shut down during this request"))
                raise

    async def _fill(self, batch: list[_Pending[P, R]]) -> None:
        """Take more queued requests until the batch is full or ``max_wait_s`` has passed."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        size = sum(len(item.payloads) for item in batch)
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    return
            batch.append(item)
            size += len(item.payloads)

    async def _run_group(self, key: Hashable, items: list[_Pending[P, R]]) -> None:
        live = [item for item in items if not item.future.done()]  # a cancelled request costs no model time
        for item in items:
            if item.future.done():
                self._finish(item)
        if not live:
            return
        payloads = [p for item in live for p in item.payloads]
        self.busy = True
        try:
            results = list(await asyncio.to_thread(self._run, key, payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"the runner returned {len(results)} results for {len(payloads)} items")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failed group must not stop the worker
            log.error("batch of %d items failed: %s", len(payloads), type(exc).__name__)
            for item in live:
                self._finish(item, error=exc)
            return
        finally:
            self.busy = False
        start = 0
        for item in live:
            end = start + len(item.payloads)
            self._finish(item, results[start:end])
            start = end

    def _finish(self, item: _Pending[P, R], results: list[R] | None = None, error: BaseException | None = None) -> None:
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(results or [])
        if item.counted:  # finished once, even if shutdown finishes it again
            item.counted = False
            self.pending -= len(item.payloads)
        if self.pending <= 0 and self._idle is not None:
            self._idle.set()


def _grouped(batch: list[_Pending[Any, Any]]) -> dict[Hashable, list[_Pending[Any, Any]]]:
    """Items by key, keys in order of first arrival (dicts keep insertion order)."""
    groups: dict[Hashable, list[_Pending[Any, Any]]] = {}
    for item in batch:
        groups.setdefault(item.key, []).append(item)
    return groups
