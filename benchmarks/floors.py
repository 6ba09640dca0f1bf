"""The benchmarks' arithmetic, pure: percentiles, rates in windows, and the floors that the ECI
rate limit alone sets on reaction, given when the objects arrived (tests/unit/test_bench_floors.py)."""

from __future__ import annotations

import bisect
import math
from typing import Any


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most events in any half-open window [t, t + width) (sliding, not calendar)."""
    ordered = sorted(times)
    best = 0
    for index, start in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, start + width, lo=index) - index)
    return best


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def floors(arrivals: list[float], rate: float) -> list[float]:
    """The least reaction each object can have under the rate limit: in arrival order, the
    k-th (from 0) cannot be sent before k / rate seconds after the first arrived."""
    ordered = sorted(arrivals)
    return [max(0.0, ordered[0] + k / rate - t) for k, t in enumerate(ordered)] if ordered else []


def queue_floors(arrivals: dict[str, float], rate: float) -> dict[str, float]:
    """The least reaction of each object (by uid) behind a limiter that spreads calls 1 / rate
    apart and cannot save up (burst 1, as configured here): the k-th goes at
    max(its arrival, the previous one's + 1 / rate). Unlike ``floors``, time the apiserver
    spent answering nothing is not made up later."""
    result: dict[str, float] = {}
    sent = float("-inf")
    for uid, arrived in sorted(arrivals.items(), key=lambda item: item[1]):
        sent = max(arrived, sent + 1 / rate)
        result[uid] = sent - arrived
    return result


def window_floors(arrivals: dict[str, float], rate: float) -> dict[str, float]:
    """The least reaction of each object (by uid) behind any limiter that sends in arrival
    order and never more than ``rate`` calls in one second: the k-th goes at max(its
    arrival, the (k - rate)-th one's + 1 s). Between ``floors`` (which lets a stall of
    arrivals be made up by a later clump faster than the limit) and ``queue_floors``."""
    per_window = max(1, math.ceil(rate))
    result: dict[str, float] = {}
    sent: list[float] = []
    for uid, arrived in sorted(arrivals.items(), key=lambda item: item[1]):
        at = arrived if len(sent) < per_window else max(arrived, sent[-per_window] + 1.0)
        sent.append(at)
        result[uid] = at - arrived
    return result


def gap_parts(arrivals: list[float], creates: list[float], rate: float) -> dict[str, Any]:
    """Where reaction goes beyond the k / R floor: the first create's lag behind the first
    arrival (``first_create_after_s``: watch, finalizer patch, first call), and the seconds
    that began with at least R objects waiting for their create (``backlog_seconds``, whole
    seconds from the first create, so the first lag is not counted twice) with the creates
    sent in them a second (``backlog_create_rate``): a limiter short of R there falls
    behind the floor by ``backlog_lost_s``."""
    arrived, sent = sorted(arrivals), sorted(creates)
    if not arrived or not sent:
        return {
            "first_create_after_s": None,
            "backlog_seconds": 0,
            "backlog_create_rate": None,
            "backlog_lost_s": 0.0,
        }
    seconds = sent_in_backlog = 0
    start = sent[0]
    while start + 1 <= sent[-1]:
        sent_before = bisect.bisect_right(sent, start)
        if bisect.bisect_right(arrived, start) - sent_before >= rate:  # objects waiting
            seconds += 1
            sent_in_backlog += bisect.bisect_right(sent, start + 1) - sent_before
        start += 1
    backlog_rate = sent_in_backlog / seconds if seconds else None
    return {
        "first_create_after_s": rnd(sent[0] - arrived[0]),
        "backlog_seconds": seconds,
        "backlog_create_rate": rnd(backlog_rate, 2),
        "backlog_lost_s": rnd(seconds - sent_in_backlog / rate, 2),
    }


def per_second(times: list[float], origin: float) -> list[list[float]]:
    """[[second since origin, calls in that second], ...] for the plot."""
    counts: dict[int, int] = {}
    for t in times:
        counts[int(t - origin)] = counts.get(int(t - origin), 0) + 1
    if not counts:
        return []
    return [[float(second), float(counts.get(second, 0))] for second in range(min(counts), max(counts) + 1)]
