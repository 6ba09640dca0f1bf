"""Wake-ups on a shared grid, so that the describe batcher sees many objects at once."""

from __future__ import annotations

import random

import pytest

from datacache_operator.runtime import aligned_delay
from datacache_operator.settings import OperatorSettings


def settings(batching: bool = True) -> OperatorSettings:
    return OperatorSettings(poll_interval_loading=5, poll_interval_stable=300, batching=batching)


def test_loading_polls_land_on_half_second_marks_and_wait_at_most_a_tenth_more() -> None:
    rng = random.Random(1)
    for _ in range(200):
        now, delay = rng.uniform(0, 10_000), rng.uniform(4.5, 5.5)
        aligned = aligned_delay(delay, now, settings())
        assert delay - 1e-9 <= aligned <= delay + 0.5 + 1e-9
        assert (now + aligned) / 0.5 == pytest.approx(round((now + aligned) / 0.5))


def test_stable_polls_use_a_tenth_of_the_stable_interval() -> None:
    aligned = aligned_delay(290.0, 1000.0, settings())
    assert aligned == pytest.approx(290.0)  # 1290 is a multiple of 30
    assert aligned_delay(291.0, 1000.0, settings()) == pytest.approx(320.0)


def test_polls_of_many_objects_coalesce() -> None:
    rng = random.Random(2)
    wake_times = {
        round(now + aligned_delay(rng.uniform(4.5, 5.5), now, settings()), 6)
        for now in (rng.uniform(0, 5) for _ in range(1000))
    }
    assert len(wake_times) <= 22  # 1000 objects wake at about 20 moments, not 1000


def test_batching_off_keeps_each_objects_own_delay() -> None:
    assert aligned_delay(4.7, 1000.3, settings(batching=False)) == 4.7
