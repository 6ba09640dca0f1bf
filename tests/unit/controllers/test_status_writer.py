"""Statuses written behind the passes: a pass does not wait for its write; one write at a time
per object, the newest merged on top of any not yet sent; a bounded number at once; a failed
write is tried again with what came since; what must follow a write runs once it landed."""

from __future__ import annotations

import asyncio
from typing import Any

from datacache_operator.controllers.statuswriter import StatusWriter, merge_patches


class Apiserver:
    """Status patches as sent; `hold` keeps each patch waiting until released; `fail` makes
    the next patches raise."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.hold = False
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail = 0
        self.changed = asyncio.Condition()

    async def patch(self, plural: str, namespace: str, name: str, status: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self._notify()
        try:
            if self.hold:
                await self.release.wait()
            if self.fail:
                self.fail -= 1
                raise ConnectionError("apiserver away")
            self.sent.append((name, dict(status)))
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, condition: Any, seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds), self.changed:
            await self.changed.wait_for(condition)


async def test_a_write_does_not_wait_for_the_apiserver_and_lands_later() -> None:
    apiserver = Apiserver()
    apiserver.hold = True
    writer = StatusWriter(apiserver.patch)
    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Creating", "dataCacheId": "edc-1"})
    assert apiserver.sent == [] and writer.pending() == 1
    await apiserver.until(lambda: apiserver.in_flight == 1)
    apiserver.release.set()
    await writer.drain()
    assert apiserver.sent == [("qwen", {"status": "Creating", "dataCacheId": "edc-1"})]
    assert writer.pending() == 0
    await writer.close(1)


async def test_one_write_at_a_time_per_object_the_newest_merged_on_top() -> None:
    apiserver = Apiserver()
    apiserver.hold = True
    writer = StatusWriter(apiserver.patch)
    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Creating", "dataCacheId": "edc-1"})
    await apiserver.until(lambda: apiserver.in_flight == 1)
    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Loading", "progress": "10%", "message": "m"})
    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Available", "progress": None})
    await asyncio.sleep(0)
    assert apiserver.in_flight == 1  # the second waits for the first
    apiserver.release.set()
    await writer.drain()
    assert apiserver.sent == [
        ("qwen", {"status": "Creating", "dataCacheId": "edc-1"}),
        ("qwen", {"status": "Available", "progress": None, "message": "m"}),
    ]
    await writer.close(1)


async def test_no_more_writes_at_once_than_allowed() -> None:
    apiserver = Apiserver()
    apiserver.hold = True
    writer = StatusWriter(apiserver.patch, writes_at_once=3)
    for index in range(10):
        writer.write(f"u{index}", "datacaches", "ml", f"cache-{index}", {"status": "Creating"})
    await apiserver.until(lambda: apiserver.in_flight == 3)
    apiserver.release.set()
    await writer.drain()
    assert apiserver.most_in_flight == 3
    assert sorted(name for name, _ in apiserver.sent) == sorted(f"cache-{index}" for index in range(10))
    await writer.close(1)


async def test_a_failed_write_is_tried_again_with_what_came_since_and_then_runs_once_landed() -> None:
    apiserver = Apiserver()
    apiserver.fail = 2
    writer = StatusWriter(apiserver.patch, retry_delays=(0.01, 0.02))
    landed = asyncio.Event()
    told: list[str] = []

    def tell() -> None:
        told.append("ml")
        landed.set()

    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Creating", "dataCacheId": "edc-1"}, tell)
    await apiserver.until(lambda: apiserver.fail == 1)  # the first attempt failed
    assert told == []
    writer.write("u1", "datacaches", "ml", "qwen", {"status": "Available"})
    async with asyncio.timeout(5):
        await landed.wait()
    assert apiserver.sent == [("qwen", {"status": "Available", "dataCacheId": "edc-1"})]
    assert told == ["ml"]
    await writer.close(1)


async def test_a_forgotten_object_is_not_written() -> None:
    apiserver = Apiserver()
    apiserver.hold = True
    writer = StatusWriter(apiserver.patch, writes_at_once=1)
    writer.write("u1", "datacaches", "ml", "first", {"status": "Creating"})
    await apiserver.until(lambda: apiserver.in_flight == 1)
    writer.write("u2", "datacaches", "ml", "gone", {"status": "Creating"})
    writer.forget("u2")
    apiserver.release.set()
    await writer.drain()
    assert [name for name, _ in apiserver.sent] == ["first"]
    assert writer.pending() == 0
    await writer.close(1)


async def test_close_sends_what_waits_then_stops() -> None:
    apiserver = Apiserver()
    writer = StatusWriter(apiserver.patch, writes_at_once=1)
    for index in range(5):
        writer.write(f"u{index}", "datacaches", "ml", f"cache-{index}", {"status": "Creating"})
    await writer.close(5)
    assert len(apiserver.sent) == 5


def test_merge_patches_keeps_removals_and_merges_objects() -> None:
    older = {"status": "Loading", "progress": "10%", "sizes": {"used": 1, "total": 9}, "gone": None}
    newer = {"progress": None, "sizes": {"used": 5}, "conditions": [{"type": "Ready"}]}
    assert merge_patches(older, newer) == {
        "status": "Loading",
        "progress": None,
        "sizes": {"used": 5, "total": 9},
        "gone": None,
        "conditions": [{"type": "Ready"}],
    }
