"""Status writes behind the passes: a pass hands its status over and ends; a few writers
send them, at most one at a time per object, the newest on top of any not yet sent.

Why not write in the pass: a burst's status writes would all go to the apiserver at once, and
each new object's finalizer patch, which its create waits for, would queue behind them. With
the writes bounded and the passes not waiting for them, a new object's path to its create
does not grow with the number of statuses being written.

Nothing is lost by writing later: a pass starts from the status the last pass computed
(`PollingController.current_status`), not from the object, until the watch shows it; a
create's reply not yet written is found by its owner tag after a crash, as before. A write
that fails is tried again with backoff unless a newer one replaced it; what must follow a
write (the pod binder's look at waiting pods) runs only once it has landed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datacache_operator.api.common import object_name

logger = logging.getLogger("datacache_operator")

StatusPatcher = Callable[[str, str | None, str, Mapping[str, Any]], Awaitable[None]]

# Enough to keep up with a hundred creates a second at the apiserver's latency under a burst
# (0.1-0.2 s a write), few enough that a finalizer patch is not queued behind them.
WRITES_AT_ONCE = 16
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


def merge_patches(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """One JSON merge patch doing what `older` then `newer` do (RFC 7386): objects merge,
    anything else in `newer` wins, and a None (a removal) in `newer` is kept as a removal."""
    merged = dict(older)
    for key, value in newer.items():
        before = merged.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            merged[key] = merge_patches(before, value)
        else:
            merged[key] = value
    return merged


@dataclass(slots=True)
class PendingWrite:
    plural: str
    namespace: str | None  # None: a cluster-scoped object
    name: str
    status: dict[str, Any]
    then: list[Callable[[], None]] = field(default_factory=list)  # once it has landed
    failures: int = 0  # attempts that failed in a row: the backoff of the next


class StatusWriter:
    def __init__(
        self,
        patch: StatusPatcher,
        writes_at_once: int = WRITES_AT_ONCE,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._patch = patch
        self._writes_at_once = writes_at_once
        self._retry_delays = retry_delays
        self._pending: dict[str, PendingWrite] = {}  # uid -> what is still to be sent
        self._queue: asyncio.Queue[str] = asyncio.Queue()  # uids ready to send, each once
        self._queued: set[str] = set()
        self._sending: set[str] = set()
        self._retrying: dict[str, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._settled = asyncio.Event()  # nothing queued or being sent
        self._settled.set()

    def write(
        self,
        uid: str,
        plural: str,
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Send this merge patch of the status of `uid` soon; `then()` once it has landed."""
        pending = self._pending.get(uid)
        if pending is None:
            pending = self._pending[uid] = PendingWrite(plural, namespace, name, dict(status))
        else:
            pending.status = merge_patches(pending.status, status)
        if then is not None:
            pending.then.append(then)
        self._enqueue(uid)

    def forget(self, uid: str) -> None:
        """The object is gone: drop what was still to be written."""
        self._pending.pop(uid, None)
        retry = self._retrying.pop(uid, None)
        if retry is not None:
            retry.cancel()

    def pending(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Until every write not waiting for a retry has been sent."""
        await self._settled.wait()

    async def close(self, grace: float) -> None:
        """Send what is waiting (for up to `grace` seconds), then stop."""
        try:
            await asyncio.wait_for(self.drain(), grace)
        except TimeoutError:
            logger.warning(f"stopping with {len(self._pending)} status writes not sent")
        for retry in self._retrying.values():
            retry.cancel()
        self._retrying.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def _enqueue(self, uid: str) -> None:
        if uid in self._queued or uid in self._sending or uid in self._retrying:
            return  # sent after the write under way, or at its retry
        if not self._workers:  # started with the first write, on the loop that makes it
            self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._writes_at_once)]
        self._queued.add(uid)
        self._settled.clear()
        self._queue.put_nowait(uid)

    def _retry(self, uid: str) -> None:
        self._retrying.pop(uid, None)
        if uid in self._pending:
            self._enqueue(uid)

    async def _work(self) -> None:
        while True:
            uid = await self._queue.get()
            self._queued.discard(uid)
            pending = self._pending.pop(uid, None)
            if pending is not None:
                self._sending.add(uid)
                try:
                    await self._send(uid, pending)
                finally:
                    self._sending.discard(uid)
                if uid in self._pending:
                    self._enqueue(uid)  # a newer status came while this one was sent
            if not self._queued and not self._sending:
                self._settled.set()

    async def _send(self, uid: str, pending: PendingWrite) -> None:
        try:
            await self._patch(pending.plural, pending.namespace, pending.name, pending.status)
        except Exception as error:  # the apiserver away or refusing: the newest goes later
            delay = self._retry_delays[min(pending.failures, len(self._retry_delays) - 1)]
            pending.failures += 1
            newer = self._pending.get(uid)
            if newer is not None:
                pending.status = merge_patches(pending.status, newer.status)
                pending.then.extend(newer.then)
            self._pending[uid] = pending
            self._retrying[uid] = asyncio.get_running_loop().call_later(delay, self._retry, uid)
            # The apiserver's answer in full: a 403 names the permission the operator lacks.
            logger.warning(
                f"could not write the status of {pending.plural} {object_name(pending.namespace, pending.name)}: "
                f"{type(error).__name__}: {error}; retrying in {delay:g} s"
            )
            return
        for then in pending.then:
            try:
                then()
            except Exception:
                logger.exception(
                    f"after the status of {object_name(pending.namespace, pending.name)} was written"
                )
