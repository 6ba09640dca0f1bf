"""Coalesce concurrent reads of one region into DescribeDataCaches calls of up to 20 ids.

Every object of the operator polls its cache; with hundreds of objects one call per
object would eat the region's rate limit. Instead a read joins the region's pending
batch, which is sent as soon as it holds ``max_batch`` ids, or once no new id has joined
for the batch window, or once its first read has waited ``max_wait`` (four windows by
default). Several reads of the same id share one slot.

The window counts from the last id that joined, not from the first: when many passes come
due together on a busy event loop, they reach their read a few milliseconds apart, and a
window from the first read sent about half-full calls (9.5 ids a call at 10,000 objects).

The batcher does not know the SDK: it is given ``fetch(key, ids)`` (the key names what
one call can serve, e.g. a region), which returns the caches found by id and raises an
:class:`~datacache_operator.cloud.errors.EciError` for the whole chunk on failure. Each
reader of a failed chunk gets its own copy of the error.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: Documented maximum of ``DataCacheId.N`` / ``Limit`` per DescribeDataCaches call.
MAX_IDS_PER_DESCRIBE = 20

Fetch = Callable[[K, list[str]], Awaitable[Mapping[str, T]]]


def chunked(ids: Iterable[str], size: int = MAX_IDS_PER_DESCRIBE) -> list[list[str]]:
    """``ids`` without duplicates (first occurrence kept) in chunks of at most ``size``."""
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


@dataclass
class _PendingBatch(Generic[T]):
    first: float  # when its first read joined (the loop's clock)
    waiters: dict[str, list[asyncio.Future[T | None]]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class DescribeBatcher(Generic[K, T]):
    """Batches are keyed by ``K``: the region, or whatever else one call can serve
    (the client uses ``(region, bucket)``)."""

    def __init__(
        self,
        fetch: Fetch[K, T],
        *,
        window: float,
        max_wait: float | None = None,
        max_batch: int = MAX_IDS_PER_DESCRIBE,
    ) -> None:
        if not 1 <= max_batch <= MAX_IDS_PER_DESCRIBE:
            raise ValueError(f"max_batch must be 1..{MAX_IDS_PER_DESCRIBE}")
        self._fetch = fetch
        self._window = max(0.0, window)
        self._max_wait = max(self._window, 4 * self._window if max_wait is None else max_wait)
        self._max_batch = max_batch
        self._pending: dict[K, _PendingBatch[T]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self, key: K, data_cache_id: str) -> T | None:
        """The cache, or None when DescribeDataCaches does not list it (gone)."""
        return await self._submit(key, data_cache_id)

    def _submit(self, key: K, data_cache_id: str) -> asyncio.Future[T | None]:
        if self._closed:
            raise RuntimeError("the describe batcher is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T | None] = loop.create_future()
        now = loop.time()
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _PendingBatch(first=now)
        joined = data_cache_id not in batch.waiters
        batch.waiters.setdefault(data_cache_id, []).append(future)
        if len(batch.waiters) >= self._max_batch:
            self._flush(key)
        elif joined:  # a new id: the quiet window starts again, up to the batch's longest wait
            if batch.timer is not None:
                batch.timer.cancel()
            send_at = min(now + self._window, batch.first + self._max_wait)
            batch.timer = loop.call_at(send_at, self._flush, key)
        return future

    def _flush(self, key: K) -> None:
        batch = self._pending.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        # Drop ids whose every reader has given up (cancelled) meanwhile.
        waiters = {i: [f for f in fs if not f.done()] for i, fs in batch.waiters.items()}
        waiters = {i: fs for i, fs in waiters.items() if fs}
        for chunk in chunked(waiters, self._max_batch):
            task = asyncio.get_running_loop().create_task(
                self._resolve(key, {i: waiters[i] for i in chunk}), name=f"describe-batch-{key}"
            )
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _resolve(self, key: K, waiters: dict[str, list[asyncio.Future[T | None]]]) -> None:
        try:
            found = await self._fetch(key, list(waiters))
        except asyncio.CancelledError:
            for futures in waiters.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:  # the fetch's error belongs to every reader of the chunk
            for futures in waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(copy.copy(exc))
            return
        for data_cache_id, futures in waiters.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(data_cache_id))

    async def aclose(self) -> None:
        """Send nothing more: pending readers get an error, running fetches are cancelled."""
        self._closed = True
        for batch in self._pending.values():
            if batch.timer is not None:
                batch.timer.cancel()
            for futures in batch.waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(RuntimeError("the describe batcher was closed"))
        self._pending.clear()
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
