"""What every controller shares: settings, the cloud client, a clock, jittered delays and
the count of objects whose last pass failed with a retryable error (for backoff)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datacache_operator.api.conditions import get_condition, set_condition
from datacache_operator.reconcile.datacache import ConditionValue
from datacache_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PassResult:
    status: dict[str, Any]  # the full new status (None values remove fields)
    delay: float  # seconds until the next pass
    events: list[Event] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        condition = get_condition(self.status.get("conditions"), "Ready")
        return bool(condition and condition["status"] == "True")


class PollingController:
    def __init__(
        self,
        settings: OperatorSettings,
        cloud: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.cloud = cloud
        self.clock = clock
        self.rng = rng or random.Random()
        self._failures: dict[str, int] = {}  # uid -> consecutive retryable failures

    @property
    def retrying_count(self) -> int:
        """Objects whose last pass failed with a retryable error."""
        return len(self._failures)

    def _jittered(self, delay: float) -> float:
        jitter = self.settings.poll_jitter
        return max(0.05, delay * (1 + self.rng.uniform(-jitter, jitter)))

    def _conclude(
        self,
        status: dict[str, Any],
        values: Sequence[ConditionValue],
        generation: int | None,
        now: datetime,
        delay: float,
        events: list[Event],
    ) -> PassResult:
        """End a pass: set the conditions (Ready at least Unknown, as kstatus needs one from
        the first pass on) and observedGeneration, and jitter the next delay."""
        conditions = list(status.get("conditions") or [])
        for value in values:
            conditions = set_condition(
                conditions, value.type, value.status, value.reason, value.message, generation, now
            )
        if get_condition(conditions, "Ready") is None:
            conditions = set_condition(
                conditions, "Ready", "Unknown", "Reconciling", "Not reconciled yet.", generation, now
            )
        status.update(conditions=conditions, observedGeneration=generation)
        return PassResult(status=status, delay=self._jittered(delay), events=events)
