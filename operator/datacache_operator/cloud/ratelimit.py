"""Per-region token buckets: at most ``burst + rate * t`` ECI calls in any ``t`` seconds.

ECI's flow control is per account and region, so each region gets its own bucket and a
busy region never slows another one down.

The bucket works by reservation: each caller takes a token at once, possibly driving the
balance below zero, and sleeps until its own token would have accrued. Callers are thus
served in arrival order, with one sleep each and no polling loop; a cancelled caller
gives its token back. Clock and sleep are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
WaitCallback = Callable[[str, float], None]


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
        if wait <= 0:
            return 0.0
        started = self._clock()
        try:
            await self._sleep(wait)
        except asyncio.CancelledError:
            self.give_back()
            raise
        return max(0.0, self._clock() - started)


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
