"""One scheduler for every object of the process: when each object's next pass is due, at
which priority, and a bounded pool of workers that runs the passes.

This is the shape of controller-runtime's work queue with its priority queue. kopf's event
handlers only mark an object due (now, for a change); the pass, once done, says when the
next one is due and at which priority. Ready work runs by priority, then by due time:
changes first (a new object, a new generation, a pause flag, a reconcile request), then
polls of caches the cloud is still working on, then resyncs of unchanged objects (and every
object found at start-up). Polls and resyncs may hold all workers but a quarter, which are
kept for changes. One object never has two passes at once: a change seen while its pass
runs makes it due again as soon as the pass ends.

Namespaces share the workers fairly (start-time fair queuing, as the rate limiter and the
apiserver's priority and fairness do): within a priority, namespaces with work take turns,
whatever the backlog of one of them, and no namespace holds more than half the workers, so a
namespace whose thousand new objects wait for the rate limiter leaves workers for the others.

Per object there is one small record (`Entry`, slotted) holding the object as compact JSON
bytes, the last value of what counts as a change, and its place in the timeline; no task,
no logger, no live copy of the body. Heap entries of a rescheduled object are left behind
and skipped by version, not searched for.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from datacache_operator.fairqueue import FairTurns

logger = logging.getLogger("datacache_operator")

Clock = Callable[[], float]

# Namespaces remembered past their turn are forgotten once there are more than this.
_FLOWS_KEPT = 10_000


class PassPriority(IntEnum):
    """Lower runs first."""

    CHANGE = 0  # the user changed something (or a pass must follow at once)
    POLL = 1  # the cloud is working: see how far it got
    RESYNC = 2  # unchanged and settled: a drift check; also each object at start-up


@dataclass(slots=True)
class Entry:
    plural: str
    namespace: str | None  # None: a cluster-scoped object
    name: str
    body: bytes  # the object as last seen, compact JSON: parsed only for a pass
    trigger: Any = None  # the last value of what counts as a change (the runtime decides)
    consumers: Any = None  # status.consumers as last seen, for the pod binder's resync
    due: float = float("inf")
    priority: int = PassPriority.RESYNC
    version: int = 0  # bumped by every schedule: older heap entries are stale
    queued: bool = False  # due now, waiting for a worker
    running: bool = False
    rerun: int | None = None  # a change came during the pass: run again at this priority
    failures: int = 0  # deletion passes in a row that could not finish: their backoff


# Runs one pass of the object; returns (seconds until the next pass, its priority), or
# None when the object needs no pass until it changes again (deleted, not ours yet).
PassRunner = Callable[[str, Entry], Awaitable[tuple[float, int] | None]]


class Scheduler:
    def __init__(self, run_pass: PassRunner, workers: int, *, clock: Clock = time.monotonic) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self._run_pass = run_pass
        self._workers_wanted = workers
        # Polls and resyncs may hold all workers but a quarter: a change (a new object among
        # them) always finds a worker, even while polls wait for the rate limiter.
        self._background_limit = workers - workers // 4
        self._background_running = 0
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._timers: list[tuple[float, int, str]] = []  # (due, version, uid)
        # (priority, turn, due, seq, version, uid): by priority, then the namespace's turn
        self._ready: list[tuple[int, int, float, int, int, str]] = []
        self._seq = itertools.count()
        self._turns = FairTurns(_FLOWS_KEPT)
        self._flow_limit = max(1, workers // 2)
        self._flow_running: dict[str, int] = {}
        # Ready passes of a namespace at its limit, until one of its passes ends.
        self._parked: dict[str, list[tuple[int, int, float, int, int, str]]] = {}
        self._timer_signal = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- what the watch tells ------------------------------------------------------------

    def upsert(
        self, uid: str, plural: str, namespace: str | None, name: str, body: bytes, consumers: Any
    ) -> tuple[Entry, bool]:
        """Keep the object as now seen; returns its entry and whether it is new (then the
        caller schedules its first pass)."""
        entry = self._entries.get(uid)
        if entry is None:
            entry = self._entries[uid] = Entry(plural, namespace, name, body, consumers=consumers)
            return entry, True
        entry.body = body
        entry.consumers = consumers
        return entry, False

    def get(self, uid: str) -> Entry | None:
        return self._entries.get(uid)

    def forget(self, uid: str) -> None:
        """The object is gone: no more passes (one running now ends on its own)."""
        self._entries.pop(uid, None)

    def __len__(self) -> int:
        return len(self._entries)

    def consumers(self) -> Iterator[tuple[tuple[str, str, str], Any]]:
        """((plural, namespace, name), status.consumers) of every namespaced object known (pods
        use only those)."""
        for entry in self._entries.values():
            if entry.namespace is not None:
                yield (entry.plural, entry.namespace, entry.name), entry.consumers

    # ---- when the next pass is due ------------------------------------------------------

    def schedule(self, uid: str, delay: float, priority: int) -> None:
        """Make the object due in `delay` seconds at `priority`; an earlier or more urgent
        pass already planned stays. During a pass, a change (delay 0) runs it again after."""
        entry = self._entries.get(uid)
        if entry is None:
            return
        if entry.running:
            if delay <= 0:
                entry.rerun = priority if entry.rerun is None else min(entry.rerun, priority)
            return
        now = self._clock()
        due = now + max(0.0, delay)
        planned = entry.due < float("inf")  # a pass is planned (none runs: see above)
        if planned and entry.due <= due and entry.priority <= priority:
            return
        if planned:
            due, priority = min(due, entry.due), min(priority, entry.priority)
        entry.version += 1
        entry.due, entry.priority, entry.queued = due, priority, False
        if due <= now:
            self._make_ready(uid, entry)
        else:
            heapq.heappush(self._timers, (due, entry.version, uid))
            if self._timers[0][2] == uid:
                self._timer_signal.set()

    def _make_ready(self, uid: str, entry: Entry) -> None:
        entry.queued = True
        turn = self._turns.next(entry.priority, entry.namespace or "")
        heapq.heappush(self._ready, (entry.priority, turn, entry.due, next(self._seq), entry.version, uid))
        self._wake_one()

    def _wake_one(self) -> None:
        # One worker per ready object: an Event would wake every idle worker (128) for each.
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _move_due_timers(self) -> float | None:
        """Timers due now go to the ready heap; the seconds until the next one (None: none)."""
        now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, version, uid = heapq.heappop(timers)
            entry = self._entries.get(uid)
            if entry is not None and entry.version == version and not entry.queued and not entry.running:
                self._make_ready(uid, entry)
        return timers[0][0] - now if timers else None

    def pending(self) -> int:
        """Objects due now and waiting for a worker."""
        return sum(1 for entry in self._entries.values() if entry.queued)

    # ---- running passes -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch(), name="scheduler")]
        self._tasks += [
            loop.create_task(self._work(), name=f"reconcile-worker-{n}") for n in range(self._workers_wanted)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _dispatch(self) -> None:
        # A timer sets the signal rather than asyncio.wait_for: on Python 3.11, wait_for
        # swallows a cancellation that arrives as the signal is set, and stop() would hang.
        loop = asyncio.get_running_loop()
        alarm: asyncio.TimerHandle | None = None
        try:
            while True:
                wait = self._move_due_timers()
                self._timer_signal.clear()
                if alarm is not None:
                    alarm.cancel()
                alarm = loop.call_later(wait, self._timer_signal.set) if wait is not None else None
                await self._timer_signal.wait()
        finally:
            if alarm is not None:
                alarm.cancel()

    def _stale(self, version: int, uid: str) -> bool:
        entry = self._entries.get(uid)
        return entry is None or entry.version != version or not entry.queued or entry.running

    def _take_ready(self) -> tuple[str, Entry] | None:
        """The most urgent object due now, unless it is a poll or resync and those already
        hold as many workers as they may (the rest are kept for changes), or its namespace
        holds as many as one namespace may (it waits for one of them: parked)."""
        ready = self._ready
        while ready:
            priority, turn, _, _, version, uid = ready[0]
            if self._stale(version, uid):
                heapq.heappop(ready)
                continue
            if priority > PassPriority.CHANGE and self._background_running >= self._background_limit:
                return None  # a worker ending a poll or resync takes it
            entry = self._entries[uid]
            flow = entry.namespace or ""
            if self._flow_running.get(flow, 0) >= self._flow_limit:
                heapq.heappush(self._parked.setdefault(flow, []), heapq.heappop(ready))
                continue
            heapq.heappop(ready)
            self._turns.served(priority, turn)
            self._flow_running[flow] = self._flow_running.get(flow, 0) + 1
            return uid, entry
        return None

    def _pass_ended(self, flow: str) -> None:
        """A worker of `flow` is free: its next parked pass may go."""
        left = self._flow_running[flow] - 1
        if left:
            self._flow_running[flow] = left
        else:
            del self._flow_running[flow]
        parked = self._parked.get(flow)
        while parked:
            item = heapq.heappop(parked)
            if not self._stale(item[4], item[5]):
                heapq.heappush(self._ready, item)
                self._wake_one()
                break
        if not parked:
            self._parked.pop(flow, None)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = self._take_ready()
            if taken is None:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            uid, entry = taken
            background = entry.priority > PassPriority.CHANGE
            self._background_running += background
            entry.queued, entry.running, entry.rerun = False, True, None
            entry.due = float("inf")
            try:
                outcome = await self._run_pass(uid, entry)
            except Exception:  # the runner reports its own failures; this is a bug's last net
                logger.exception("a reconcile pass failed unexpectedly")
                outcome = (10.0, PassPriority.POLL)
            finally:
                entry.running = False
                self._background_running -= background
                self._pass_ended(entry.namespace or "")
            if self._entries.get(uid) is not entry:
                continue  # forgotten during the pass
            if entry.rerun is not None:
                self.schedule(uid, 0.0, entry.rerun)
            elif outcome is not None:
                self.schedule(uid, *outcome)
