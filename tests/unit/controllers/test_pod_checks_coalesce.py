"""Caches that turn Ready together share one look at their namespace's waiting pods: at
1,000 caches, a pod list per cache held a pass's worker each and loaded the apiserver."""

from __future__ import annotations

import asyncio

from datacache_operator.controllers.pods import PodBinder
from datacache_operator.settings import OperatorSettings


async def until(check, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.001)


async def test_changes_during_a_check_share_one_more_check_and_the_pass_does_not_wait() -> None:
    lists: list[str | None] = []
    listing = asyncio.Event()
    release = asyncio.Event()

    async def list_pods(namespace, labels, fields):
        lists.append(namespace)
        listing.set()
        await release.wait()
        return []

    async def unused(*args):
        raise AssertionError("no pod is waiting")

    binder = PodBinder(
        OperatorSettings(default_region="cn-hangzhou"), list_pods, unused, unused, unused, lambda *a: None
    )
    binder.cache_changed("ml")  # returns at once: no pass waits for the pods
    await asyncio.wait_for(listing.wait(), 5)
    for _ in range(100):  # changes seen while the first list is under way
        binder.cache_changed("ml")
    binder.cache_changed("other")
    release.set()
    await until(lambda: len(lists) >= 3 and not binder._queued)
    assert sorted(lists, key=str) == ["ml", "ml", "other"]  # one more for ml, after the first
    binder.cache_changed("ml")  # a change after every check began gets a check of its own
    await until(lambda: lists.count("ml") == 3 and not binder._queued)
