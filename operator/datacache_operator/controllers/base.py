"""What every controller shares: settings, the cloud client, a clock, jittered delays and
the count of objects whose last pass failed with a retryable error (for backoff)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from datacache_operator.settings import OperatorSettings


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
