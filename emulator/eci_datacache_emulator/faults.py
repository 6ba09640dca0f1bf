"""Injected faults and the request rate limit (per account: ECI's flow control).

Faults are rolled per API call from one seeded random generator, so a given seed and the
same sequence of calls give the same faults. Each call first rolls a dropped connection
(closed without an answer), then waits the added latency, then rolls one error: 500
``InternalError``, 503 ``ServiceUnavailable`` or 400 ``Throttling.User`` with an
``x-acs-retry-after`` header (milliseconds), in that order of the cumulative rates.
With ``drop_after_apply`` the drop happens after the operation took effect, which is how
a client learns what a lost response does to it (a create it cannot see).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .config import ACTIONS, EmulatorConfig
from .errors import ApiError, internal_error, service_unavailable, throttled

FAULT_THROTTLE_RETRY_AFTER_MS = 200
_RATE_FIELDS = ("fault_500_rate", "fault_503_rate", "fault_throttle_rate", "fault_drop_rate")


@dataclass(frozen=True)
class FaultSettings:
    fault_500_rate: float = 0.0
    fault_503_rate: float = 0.0
    fault_throttle_rate: float = 0.0
    fault_latency_ms: float = 0.0
    fault_drop_rate: float = 0.0
    drop_after_apply: bool = False
    actions: tuple[str, ...] | None = None  # None = every action

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> FaultSettings:
        return cls(
            fault_500_rate=config.fault_500_rate,
            fault_503_rate=config.fault_503_rate,
            fault_throttle_rate=config.fault_throttle_rate,
            fault_latency_ms=config.fault_latency_ms,
            fault_drop_rate=config.fault_drop_rate,
            actions=tuple(config.fault_actions) if config.fault_actions is not None else None,
        )

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> FaultSettings:
        """Settings from an admin request; fields left out are off (the request replaces all)."""
        known = {*_RATE_FIELDS, "fault_latency_ms", "drop_after_apply", "actions"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; use {sorted(known)}")
        values: dict[str, Any] = {}
        for name in _RATE_FIELDS:
            rate = body.get(name, 0.0)
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1")
            values[name] = float(rate)
        if sum(values[name] for name in _RATE_FIELDS if name != "fault_drop_rate") > 1.0:
            raise ValueError("the error rates (500, 503, throttle) must add up to at most 1")
        latency = body.get("fault_latency_ms", 0.0)
        if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
            raise ValueError("fault_latency_ms must be a non-negative number")
        drop_after_apply = body.get("drop_after_apply", False)
        if not isinstance(drop_after_apply, bool):
            raise ValueError("drop_after_apply must be true or false")
        actions = body.get("actions")
        if actions is not None:
            if not isinstance(actions, list) or not set(actions) <= set(ACTIONS):
                raise ValueError(f"actions must be a list of {', '.join(ACTIONS)}")
            actions = tuple(actions)
        return cls(
            **values, fault_latency_ms=float(latency), drop_after_apply=drop_after_apply, actions=actions
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["actions"] = list(self.actions) if self.actions is not None else None
        return data


@dataclass(frozen=True)
class FaultPlan:
    latency_seconds: float = 0.0
    drop_before: bool = False
    drop_after: bool = False
    error: ApiError | None = None


NO_FAULT = FaultPlan()


class FaultInjector:
    def __init__(self, settings: FaultSettings, seed: int | None) -> None:
        self.settings = settings
        self._random = random.Random(seed)

    def plan(self, action: str) -> FaultPlan:
        settings = self.settings
        if settings.actions is not None and action not in settings.actions:
            return NO_FAULT
        drop = settings.fault_drop_rate > 0 and self._random.random() < settings.fault_drop_rate
        error = None
        roll = self._random.random()
        if roll < settings.fault_500_rate:
            error = internal_error()
        elif roll < settings.fault_500_rate + settings.fault_503_rate:
            error = service_unavailable()
        elif roll < settings.fault_500_rate + settings.fault_503_rate + settings.fault_throttle_rate:
            error = throttled(FAULT_THROTTLE_RETRY_AFTER_MS)
        return FaultPlan(
            latency_seconds=settings.fault_latency_ms / 1000.0,
            drop_before=drop and not settings.drop_after_apply,
            drop_after=drop and settings.drop_after_apply,
            error=error,
        )


class RateLimiter:
    """A token bucket per key (the server passes account ids): `rate` requests per second,
    bursts of up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def check(self, access_key_id: str) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        capacity = max(1.0, self.rate)
        tokens, refilled_at = self._buckets.get(access_key_id, (capacity, now))
        tokens = min(capacity, tokens + (now - refilled_at) * self.rate)
        if tokens < 1.0:
            self._buckets[access_key_id] = (tokens, now)
            raise throttled(math.ceil((1.0 - tokens) / self.rate * 1000))
        self._buckets[access_key_id] = (tokens - 1.0, now)

    def clear(self) -> None:
        self._buckets.clear()
