"""A bounded request queue and one worker that runs the model on batches of requests.

Requests wait in an ``asyncio.Queue`` of ``max_queue`` slots (a full queue is refused at
once: ``QueueFull``, HTTP 503). One worker task takes the oldest request plus every other
waiting one, up to ``max_batch``, and runs ``fn(erps, queries)`` for the whole batch on a
dedicated thread (the event loop stays free for other requests; the model is used by one
thread only). While a batch runs, new requests queue up and form the next batch, so the
batch size follows the load with no added wait.

A request that is not answered within ``timeout_s`` (queue wait + model time) gets
``asyncio.TimeoutError`` (HTTP 504); if it had not started it is dropped from its batch.
An exception in ``fn`` fails every request of that batch and the worker goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

BatchFn = Callable[[Sequence[torch.Tensor], Sequence[str]], list[str]]


class QueueFull(Exception):
    """The queue has no free slot (HTTP 503)."""


@dataclass
class Answer:
    """A finished request: the caption and how the time was spent."""

    caption: str
    queued_s: float
    model_s: float
    batch_size: int


@dataclass
class _Job:
    erp: torch.Tensor
    query: str
    future: asyncio.Future[Answer]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatcherStats:
    batches: int = 0
    requests: int = 0
    dropped: int = 0  # timed out or cancelled before their batch ran
    failed: int = 0
    largest_batch: int = 0


class Batcher:
    """See the module docstring. Use ``async with Batcher(...)`` or ``start``/``stop``."""

    def __init__(self, fn: BatchFn, max_batch: int = 8, max_queue: int = 64, timeout_s: float = 60.0) -> None:
        if max_batch < 1 or max_queue < 1 or timeout_s <= 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and timeout_s > 0; got"
                             f" {max_batch}, {max_queue}, {timeout_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cora-kit-model")
        self._worker = asyncio.create_task(self._run(), name="cora-kit-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._worker = self._executor = None

    async def __aenter__(self) -> Batcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- requests -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests waiting (not counting the batch that is running)."""
        return 0 if self._queue is None else self._queue.qsize()

    def full(self) -> bool:
        return self._queue is not None and self._queue.full()

    async def submit(self, erp: torch.Tensor, query: str) -> Answer:
        """Queue one request and wait for its answer (``QueueFull``, ``asyncio.TimeoutError``)."""
        if self._queue is None or self._worker is None or self._worker.done():
            raise RuntimeError("the batching worker is not running")
        job = _Job(erp, query, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"the queue is full ({self.max_queue} requests waiting); retry later") from None
        # wait_for cancels the future on timeout: the worker then skips the job
        return await asyncio.wait_for(job.future, self.timeout_s - (time.perf_counter() - job.enqueued))

    # -- the worker ---------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [j for j in batch if not j.future.done()]
            self.stats.dropped += len(batch) - len(live)
            if not live:
                continue
            start = time.perf_counter()
            try:
                texts = await loop.run_in_executor(self._executor, self.fn, [j.erp for j in live],
                                                   [j.query for j in live])
                if len(texts) != len(live):
                    raise RuntimeError(f"the model returned {len(texts)} captions for {len(live)} requests")
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the worker
                self.stats.failed += len(live)
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            model_s = time.perf_counter() - start
            self.stats.batches += 1
            self.stats.requests += len(live)
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            for j, text in zip(live, texts, strict=True):
                if not j.future.done():
                    j.future.set_result(Answer(text, start - j.enqueued, model_s, len(live)))


__all__ = ["Answer", "BatchFn", "Batcher", "BatcherStats", "QueueFull"]
