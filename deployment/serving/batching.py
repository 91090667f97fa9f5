"""An asyncio micro-batcher: concurrent requests' images go to the model in one call.

Greedy by default: the worker takes the first waiting image, then every image already queued (up to
``max_batch_size``), optionally waiting ``max_wait_s`` for more. A lone request therefore waits for
nothing, while requests that arrive while the model is busy are grouped into the next call, which
is where the throughput at concurrency > 1 comes from. The model runs in a thread of its own per
worker (always the same one: a model call that hops between threads of a shared pool ran slower)
so the event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class QueueFull(Exception):
    """The batcher's queue has no room for all the items of one :meth:`MicroBatcher.submit_many` call."""


class MicroBatcher:
    """Group items submitted concurrently into batched calls of ``fn``.

    Args:
        fn: ``fn(list[item]) -> list[result]`` (same length and order), run in a worker thread.
        max_batch_size: most items per call.
        max_wait_s: extra time to wait for more items once one is queued (0: greedy only).
        on_batch: optional callback ``on_batch(batch_size, seconds)`` for metrics.
        workers: batches in flight at once (each worker takes the next group while the others run
            theirs; TensorFlow runs concurrent calls of one function safely).
        max_queue: most items waiting for a worker (None: no bound); :meth:`submit_many` raises
            :class:`QueueFull` rather than queue past it.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        max_batch_size: int = 8,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
        max_queue: int | None = None,
    ) -> None:
        self.fn = fn
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self.workers = max(1, int(workers))
        self._tasks: list[asyncio.Task] = []
        self.max_queue = max_queue

    @property
    def queued(self) -> int:
        """Items waiting for a worker (not those in a batch being scored)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the worker tasks on the running loop, each with its own model thread."""
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._run(ThreadPoolExecutor(1, thread_name_prefix=f"detops-model-{i}")))
            for i in range(self.workers)
        ]

    async def stop(self) -> None:
        """Finish the queued items, then stop the worker."""
        if self._queue is None or not self._tasks:
            return
        for _ in self._tasks:
            await self._queue.put(None)
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and return its result (or raise the exception the batch call raised)."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: list[Any]) -> list[Any]:
        """Queue every item of ``items`` (all or none) and return their results, in order.

        Raises :class:`QueueFull` without queueing any item when they do not all fit under
        ``max_queue``; a batch call's exception is raised for the items of that batch.
        """
        q = self._queue
        if q is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self.max_queue is not None and q.qsize() + len(items) > self.max_queue:
            raise QueueFull(f"{q.qsize()} items queued, {len(items)} more do not fit under {self.max_queue}")
        loop = asyncio.get_running_loop()
        futs = []
        for item in items:
            fut = loop.create_future()
            q.put_nowait((item, fut))
            futs.append(fut)
        return list(await asyncio.gather(*futs))

    async def _run(self, thread: ThreadPoolExecutor) -> None:
        try:
            await self._serve(thread)
        finally:
            thread.shutdown(wait=False)

    async def _serve(self, thread: ThreadPoolExecutor) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await q.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    nxt = q.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(q.get(), remaining)
                    except TimeoutError:
                        break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            items = [b[0] for b in batch]
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(thread, self.fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except Exception as e:  # noqa: BLE001 - hand any failure to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                if self.on_batch:
                    self.on_batch(len(items), time.perf_counter() - t0)
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)
        # Items queued after the stop markers: score them one by one. Markers met here belong to the
        # other workers and are put back for them.
        leftovers, markers = [], 0
        while not q.empty():
            rest = q.get_nowait()
            if rest is None:
                markers += 1
            else:
                leftovers.append(rest)
        for _ in range(markers):
            q.put_nowait(None)
        for item, fut in leftovers:
            try:
                fut.set_result((await loop.run_in_executor(thread, self.fn, [item]))[0])
            except Exception as e:  # noqa: BLE001 - the caller gets the failure
                fut.set_exception(e)


def candidate_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4... below ``max_batch_size``, then ``max_batch_size`` itself (the sizes tuning tries)."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return [*sizes, max(1, max_batch_size)]


def tune_batch_size(
    fn: Callable[[list[Any]], list[Any]],
    item: Any,
    max_batch_size: int,
    tolerance: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, dict[int, float]]:
    """The batch size at which ``fn`` scores the most items per second, measured on copies of ``item``.

    Each size of :func:`candidate_batch_sizes` is called once untimed (allocations, first-call costs)
    and once timed with ``clock``. A larger batch must beat every smaller one by more than
    ``tolerance`` (5%): a batch that does not pay in throughput only adds latency. On CPU it often
    does not pay (seed-1 BCCD SavedModel on 2 cores: 2.94 images/s at batch 1, 1.87 at batch 8).

    Returns ``(best size, {size: items per second})``. Exceptions of ``fn`` propagate.
    """
    rates: dict[int, float] = {}
    for size in candidate_batch_sizes(max_batch_size):
        batch = [item] * size
        fn(batch)
        t0 = clock()
        fn(batch)
        rates[size] = size / max(clock() - t0, 1e-9)
    best = 1
    for size, rate in rates.items():
        if rate > rates[best] * (1 + tolerance):
            best = size
    return best, rates
