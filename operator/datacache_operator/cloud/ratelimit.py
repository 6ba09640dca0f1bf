"""Token buckets per region, or one for all regions: ECI calls spread at ``rate`` a second,
never more than ``burst + ceil(rate) - 1`` in any one second as the cloud receives them, with
calls that change something served before polls.

By default each region gets its own bucket (DATACACHE_RATE_LIMIT is per region), so a busy
region never slows another one down. ECI's flow control counts an account's calls in all
regions together, so an EciAccount's client shares one bucket between every region
(``one_bucket_for_all_regions``): its rate then holds for the account as a whole.

Priority: callers wait in one heap per bucket, ordered by priority, then by their flow's turn,
then arrival. A flow is who the call is for (the namespace of the object whose pass makes it):
within a priority, flows are served in turn (start-time fair queuing, as the apiserver's
priority and fairness does between tenants), so one namespace's thousand creates do not keep
another namespace's ten waiting behind them. When a
token is free the best waiter gets it, so a create, update, copy or delete that arrives
behind a hundred queued polls is the next call sent (controller-runtime's priority queue,
applied to the calls). Polls still coalesce (the describe batcher), and they are served in
arrival order among themselves; while changes keep the bucket busy, polls wait.

The bound holds at the receiving end: a call is counted from the moment it takes its token
until its answer is back (in flight), then at the time it completed: the time its caller
saw the answer (``CallSlot.answered``, taken in the thread that made the call), or else
when the slot is given back. A call may go only
while fewer than ``burst + ceil(rate) - 1`` calls (the most the plan allows in one second)
are in flight or completed less than a second ago. A request reaches the cloud after it
was started and before its answer comes back, so no one-second window of arrivals can hold
more than that, however late a busy event loop or a slow network delivers them.

Tokens accrue at ``rate`` while callers wait, whether or not the dispatcher is awake to
hand them out: a busy event loop wakes the dispatcher late, and a bucket capped at ``burst``
(1 for a strict per-second ceiling) would lose what accrued meanwhile at every grant, and a
few milliseconds' lateness a grant would hold the rate well under the limit. So ``burst``
caps what an idle bucket saves; while callers wait, a late wake-up hands out what accrued,
up to one second's worth, and the window above still holds every second to the limit.

Clock and sleep are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from datacache_operator.fairqueue import FairTurns

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
WaitCallback = Callable[[str, float], None]
_TOLERANCE = 1e-6  # seconds: float error in planned times is not a late wake-up
# Flows remembered past their turn are forgotten once there are more than this (idle ones only).
_FLOWS_KEPT = 1024
_ALL_REGIONS = "*"  # the shared bucket's key (no region is called that)

#: Who the calls made in this context are for (the runtime sets the object's namespace).
CURRENT_FLOW: ContextVar[str] = ContextVar("eci_call_flow", default="")


class CallPriority(IntEnum):
    """Lower goes first."""

    CHANGE = 0  # create, update, copy, delete: what a user is waiting for
    POLL = 1  # describe: reading what the cloud is doing


@dataclass
class CallSlot:
    """One granted call: how long it waited for its turn and, once known, when its answer
    came back. A slot held until the loop gets round to giving it back is a slot the next
    call cannot use: with calls queued, the limiter serves ``window / (1 + hold)`` a second,
    where hold is the time from the grant to the recorded answer."""

    waited: float
    answered_at: float | None = None

    def answered(self, at: float) -> None:
        """The answer was back at ``at`` (the bucket's clock); the slot's second runs from it."""
        self.answered_at = at


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)  # a fresh bucket is full
        self._updated = clock()
        # At most this many calls in flight or completed within the last second.
        self.window = self.burst + math.ceil(self.rate) - 1
        self._completed: deque[float] = deque(maxlen=self.window)
        self._in_flight = 0
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._turns = FairTurns(_FLOWS_KEPT)
        self._order = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        self._released = asyncio.Event()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        # Idle, the bucket saves at most `burst`; with callers waiting, what accrued while the
        # dispatcher was late is theirs (at most a second's worth: the window bounds it anyway).
        cap = float(self.window if self._waiters else self.burst)
        self._tokens = min(cap, self._tokens + elapsed * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Current balance."""
        self._refill()
        return self._tokens

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    @property
    def queued(self) -> int:
        """Callers waiting, counted cheaply (a few cancelled ones may be among them)."""
        return len(self._waiters)

    def _delay(self) -> float | None:
        """Seconds until a call may go (0: now); None while only a completion can free a slot."""
        self._refill()
        token_wait = 0.0 if self._tokens >= 1.0 - _TOLERANCE else (1.0 - self._tokens) / self.rate
        now = self._clock()
        recent = self._completed
        while recent and now - recent[0] >= 1.0 - _TOLERANCE:
            recent.popleft()
        if self._in_flight + len(recent) < self.window:
            return token_wait
        if self._in_flight >= self.window:
            return None
        # The oldest completion that keeps the window full leaves it a second after it was.
        return max(token_wait, recent[0] + 1.0 - now)

    def _take(self) -> None:
        self._tokens -= 1.0
        self._in_flight += 1

    async def acquire(self, priority: int = CallPriority.POLL, flow: str = "") -> float:
        """Wait for a token and a slot in the window; the seconds waited. The caller must
        :meth:`release` once the call's answer is back (or it failed)."""
        if not self._waiters and self._delay() == 0:
            self._take()
            return 0.0
        started = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._waiters, (int(priority), self._turns.next(int(priority), flow), next(self._order), future)
        )
        self._start_dispatcher()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(sent=False)  # granted as it was cancelled: give it back
            raise
        return max(0.0, self._clock() - started)

    def release(self, *, sent: bool = True, answered_at: float | None = None) -> None:
        """The call's answer is back (at ``answered_at`` if known, else now); ``sent=False``
        when it never went (the token returns)."""
        self._in_flight -= 1
        if sent:
            now = self._clock()
            at = now if answered_at is None else min(now, answered_at)
            if self._completed and at < self._completed[-1]:
                at = self._completed[-1]  # kept in time order: the window frees its oldest first
            self._completed.append(at)
        else:
            self._refill()
            self._tokens = min(float(self.burst), self._tokens + 1.0)
        self._released.set()

    @asynccontextmanager
    async def slot(self, priority: int = CallPriority.POLL, flow: str = "") -> AsyncIterator[CallSlot]:
        """``async with bucket.slot(priority) as granted:`` around one call."""
        granted = CallSlot(await self.acquire(priority, flow))
        try:
            yield granted
        finally:
            self.release(answered_at=granted.answered_at)

    def _start_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def _dispatch(self) -> None:
        """Grant tokens to the best waiters, one at a time, as they become free."""
        waiters = self._waiters
        while True:
            while waiters and waiters[0][-1].done():  # cancelled while waiting
                heapq.heappop(waiters)
            if not waiters:
                return
            delay = self._delay()
            if delay == 0:
                priority, turn, _, future = heapq.heappop(waiters)
                self._turns.served(priority, turn)
                self._take()
                future.set_result(None)
                continue
            self._released.clear()
            await self._wait(delay)

    async def _wait(self, delay: float | None) -> None:
        """Sleep `delay` (forever if None), or less when a call completes."""
        released = asyncio.ensure_future(self._released.wait())
        pending: set[asyncio.Future[Any]] = {released}
        if delay is not None:
            pending.add(asyncio.ensure_future(self._sleep(delay)))
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in pending:
                waiter.cancel()


class RegionRateLimiter:
    """One :class:`TokenBucket` per region, created on first use; or, with
    ``one_bucket_for_all_regions``, one bucket that every region's calls share (priorities
    and flows still take turns in it, whatever their region)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_wait: WaitCallback | None = None,
        one_bucket_for_all_regions: bool = False,
    ) -> None:
        TokenBucket(rate, burst, clock=clock, sleep=sleep)  # validate the arguments early
        self.rate = rate
        self.burst = burst
        self.one_bucket_for_all_regions = one_bucket_for_all_regions
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, region: str) -> TokenBucket:
        """The bucket that ``region``'s calls take their tokens from."""
        key = _ALL_REGIONS if self.one_bucket_for_all_regions else region
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(
                self.rate, self.burst, clock=self._clock, sleep=self._sleep
            )
        return bucket

    def queued_seconds(self) -> float:
        """How long the calls already waiting in the busiest bucket take to go, at the rate."""
        return max((bucket.queued for bucket in list(self._buckets.values())), default=0) / self.rate

    def now(self) -> float:
        """The buckets' clock (for :meth:`CallSlot.answered`; safe from any thread)."""
        return self._clock()

    @asynccontextmanager
    async def slot(
        self, region: str, priority: int = CallPriority.POLL, flow: str = ""
    ) -> AsyncIterator[CallSlot]:
        """Around one call to ``region``: waits for its turn (reporting waits longer than zero
        to ``on_wait``, with the call's region) and frees the slot when the call is over."""
        async with self.bucket(region).slot(priority, flow) as granted:
            if granted.waited > 0 and self._on_wait is not None:
                self._on_wait(region, granted.waited)
            yield granted
