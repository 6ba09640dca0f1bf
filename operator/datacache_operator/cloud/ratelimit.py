"""Per-region token buckets: at most ``burst + rate * t`` ECI calls in any ``t`` seconds.

ECI's flow control is per account and region, so each region gets its own bucket and a
busy region never slows another one down.

The bucket works by reservation: each caller takes a token at once, possibly driving the
balance below zero, and sleeps until its own token would have accrued. Callers are thus
served in arrival order, with one sleep each and no polling loop; a cancelled caller
gives its token back. Clock and sleep are injectable so tests run on a fake clock.

Reservations are planned on the clock, but a busy event loop wakes sleepers late, and
callers planned over a second or more would then go out together. So the bucket also
remembers when its last ``burst + ceil(rate) - 1`` callers really went (the most its plan
allows in one second) and holds a caller until the oldest of them is a second old: the
bound holds for the calls as sent, not only as planned.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
WaitCallback = Callable[[str, float], None]
_TOLERANCE = 1e-6  # seconds: float error in planned times is not a late wake-up


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
        # When the last callers really went: at most this many in any one second.
        self._sent: deque[float] = deque(maxlen=self.burst + math.ceil(self.rate) - 1)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Current balance (negative while callers are queued)."""
        self._refill()
        return self._tokens

    def reserve(self) -> float:
        """Take one token now; the seconds until it is really ours (0 if it already is)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def give_back(self) -> None:
        self._refill()
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        wait = self.reserve()
        started = self._clock()
        try:
            if wait > 0:
                await self._sleep(wait)
            held = await self._hold_for_window()
        except asyncio.CancelledError:
            self.give_back()
            raise
        now = self._clock()
        self._sent.append(now)
        return max(0.0, now - started) if wait > 0 or held else 0.0

    async def _hold_for_window(self) -> bool:
        """Sleep while the last ``maxlen`` callers all went less than a second ago;
        True if it slept."""
        sent = self._sent
        held = False
        while len(sent) == sent.maxlen and (age := self._clock() - sent[0]) < 1.0 - _TOLERANCE:
            held = True
            await self._sleep(1.0 - age)
        return held


class RegionRateLimiter:
    """One :class:`TokenBucket` per region, created on first use."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_wait: WaitCallback | None = None,
    ) -> None:
        TokenBucket(rate, burst, clock=clock, sleep=sleep)  # validate the arguments early
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, region: str) -> TokenBucket:
        bucket = self._buckets.get(region)
        if bucket is None:
            bucket = self._buckets[region] = TokenBucket(
                self.rate, self.burst, clock=self._clock, sleep=self._sleep
            )
        return bucket

    async def acquire(self, region: str) -> float:
        """Wait for ``region``'s next token; reports waits longer than zero to ``on_wait``."""
        waited = await self.bucket(region).acquire()
        if waited > 0 and self._on_wait is not None:
            self._on_wait(region, waited)
        return waited
