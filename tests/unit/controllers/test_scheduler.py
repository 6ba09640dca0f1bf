"""The one scheduler: changes run before polls and polls before resyncs, polls and resyncs
leave a quarter of the workers to changes, an object never has two passes at once, and a
change seen during a pass runs it again right after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from datacache_operator.controllers.scheduler import Entry, PassPriority, Scheduler


class Recorder:
    """A pass runner that records the order of passes and can hold them until released."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.next: dict[str, tuple[float, int] | None] = {}

    async def __call__(self, uid: str, entry: Entry) -> tuple[float, int] | None:
        if uid in self.running:
            self.overlaps += 1
        self.running.add(uid)
        self.order.append(uid)
        await self.hold.wait()
        await asyncio.sleep(0)  # a real pass awaits its calls: other workers run meanwhile
        self.running.discard(uid)
        return self.next.get(uid)


def add(scheduler: Scheduler, uid: str, namespace: str | None = None) -> None:
    """An object in `namespace` (by default one of its own: no sharing between namespaces)."""
    _, new = scheduler.upsert(uid, "datacaches", namespace or f"ns-{uid}", uid, b"{}", None)
    assert new


async def until(predicate: Any, deadline_s: float = 5.0) -> None:
    """Wait for `predicate` with a deadline (the scheduler's tasks run meanwhile)."""
    async with asyncio.timeout(deadline_s):
        while not predicate():  # noqa: ASYNC110 - the condition is plain data, with no event to wait on
            await asyncio.sleep(0.005)


async def test_ready_work_runs_changes_first_then_polls_then_resyncs_then_fifo() -> None:
    passes = Recorder()
    scheduler = Scheduler(passes, workers=1)
    for uid, priority in [
        ("resync-1", PassPriority.RESYNC),
        ("poll-1", PassPriority.POLL),
        ("resync-2", PassPriority.RESYNC),
        ("change-1", PassPriority.CHANGE),
        ("poll-2", PassPriority.POLL),
        ("change-2", PassPriority.CHANGE),
    ]:
        add(scheduler, uid)
        scheduler.schedule(uid, 0.0, priority)
    scheduler.start()
    try:
        await until(lambda: len(passes.order) == 6)
    finally:
        await scheduler.stop()
    assert passes.order == ["change-1", "change-2", "poll-1", "poll-2", "resync-1", "resync-2"]


async def test_a_pass_says_when_the_next_is_due_and_a_change_comes_before_it() -> None:
    passes = Recorder()
    scheduler = Scheduler(passes, workers=2)
    add(scheduler, "a")
    passes.next["a"] = (30.0, PassPriority.RESYNC)  # the next drift check in half a minute
    scheduler.schedule("a", 0.0, PassPriority.CHANGE)
    scheduler.start()
    try:
        await until(lambda: passes.order == ["a"])
        await until(lambda: scheduler.get("a").due < float("inf"))  # type: ignore[union-attr]
        planned = scheduler.get("a").due  # type: ignore[union-attr]
        scheduler.schedule("a", 60.0, PassPriority.RESYNC)  # a later plan does not push it back
        assert scheduler.get("a").due == planned  # type: ignore[union-attr]
        scheduler.schedule("a", 0.0, PassPriority.CHANGE)  # the user changed it: now
        await until(lambda: passes.order == ["a", "a"])
    finally:
        await scheduler.stop()


async def test_one_object_never_has_two_passes_and_a_change_during_a_pass_runs_it_again() -> None:
    passes = Recorder()
    passes.hold.clear()
    scheduler = Scheduler(passes, workers=4)
    add(scheduler, "a")
    scheduler.schedule("a", 0.0, PassPriority.CHANGE)
    scheduler.start()
    try:
        await until(lambda: passes.order == ["a"])
        assert scheduler.get("a").running  # type: ignore[union-attr]
        for _ in range(3):  # three changes while the pass runs
            scheduler.schedule("a", 0.0, PassPriority.CHANGE)
        await asyncio.sleep(0.05)
        assert passes.order == ["a"]  # no second pass alongside the first
        passes.hold.set()
        await until(lambda: passes.order == ["a", "a"])  # exactly one more, after it
        await asyncio.sleep(0.05)
        assert passes.order == ["a", "a"] and passes.overlaps == 0
    finally:
        await scheduler.stop()


async def test_workers_bound_the_passes_running_at_once() -> None:
    passes = Recorder()
    passes.hold.clear()
    scheduler = Scheduler(passes, workers=3)
    for n in range(10):
        add(scheduler, f"o{n}")
        scheduler.schedule(f"o{n}", 0.0, PassPriority.RESYNC)
    scheduler.start()
    try:
        await until(lambda: len(passes.running) == 3)
        await asyncio.sleep(0.05)
        assert len(passes.running) == 3 and scheduler.pending() == 7
        passes.hold.set()
        await until(lambda: len(passes.order) == 10)
    finally:
        await scheduler.stop()


async def test_a_quarter_of_the_workers_is_kept_for_changes() -> None:
    """Polls waiting on the cloud must not keep a new object's first pass from starting."""
    passes = Recorder()
    passes.hold.clear()
    scheduler = Scheduler(passes, workers=8)
    for n in range(20):
        add(scheduler, f"poll{n}")
        scheduler.schedule(f"poll{n}", 0.0, PassPriority.POLL)
    scheduler.start()
    try:
        await until(lambda: len(passes.running) == 6)
        await asyncio.sleep(0.05)
        assert len(passes.running) == 6 and scheduler.pending() == 14
        for n in range(2):
            add(scheduler, f"new{n}")
            scheduler.schedule(f"new{n}", 0.0, PassPriority.CHANGE)
        await until(lambda: {"new0", "new1"} <= passes.running)
        assert len(passes.running) == 8
        passes.hold.set()
        await until(lambda: len(passes.order) == 22)
    finally:
        await scheduler.stop()


async def test_a_forgotten_object_gets_no_more_passes_and_timers_fire() -> None:
    passes = Recorder()
    scheduler = Scheduler(passes, workers=1)
    add(scheduler, "gone")
    add(scheduler, "soon")
    scheduler.schedule("gone", 0.05, PassPriority.POLL)
    scheduler.schedule("soon", 0.1, PassPriority.POLL)
    scheduler.forget("gone")
    scheduler.start()
    try:
        await until(lambda: passes.order == ["soon"])
        await asyncio.sleep(0.1)
        assert passes.order == ["soon"] and len(scheduler) == 1
    finally:
        await scheduler.stop()


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError):
        Scheduler(Recorder(), workers=0)


async def test_a_namespace_with_a_backlog_does_not_hold_back_another() -> None:
    """One namespace's 40 new objects are due first; another's 4 arrive after: they take turns
    with the backlog at once, and the flooding namespace never holds more than half the workers."""
    passes = Recorder()
    passes.hold.clear()
    scheduler = Scheduler(passes, workers=4)
    for n in range(40):
        add(scheduler, f"big{n}", "big")
        scheduler.schedule(f"big{n}", 0.0, PassPriority.CHANGE)
    scheduler.start()
    try:
        await until(lambda: len(passes.running) == 2)
        await asyncio.sleep(0.05)
        assert passes.running == {"big0", "big1"}  # half the workers: two stay free
        for n in range(4):
            add(scheduler, f"small{n}", "small")
            scheduler.schedule(f"small{n}", 0.0, PassPriority.CHANGE)
        await until(lambda: {"small0", "small1"} <= passes.running)
        passes.hold.set()
        await until(lambda: len(passes.order) == 44)
        started = passes.order
        # The last small pass ran within the first few after it arrived, not after 40 big ones.
        assert max(started.index(f"small{n}") for n in range(4)) < 10, started
    finally:
        await scheduler.stop()
