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


async def test_the_gates_of_many_pods_are_removed_sixteen_at_a_time_and_their_cache_read_once() -> None:
    """1,000 pods waiting for one cache are released at the apiserver's pace: patches overlap
    (at most UNGATE_CONCURRENCY in flight), and the cache they share is read once."""
    from tests.unit.reconcile.test_binding_decisions import HERE, bind, datacache, pod

    from datacache_operator.api.binding import GATED_LABEL
    from datacache_operator.controllers.pods import UNGATE_CONCURRENCY

    pods = []
    for index in range(40):
        gated = bind(pod("qwen:/data"), datacache("qwen", ready=False))
        gated["metadata"].update(name=f"pod-{index}", namespace="ml", uid=f"uid-{index}")
        pods.append(gated)
    reads: list[str] = []
    in_flight, most = 0, 0
    both_started = asyncio.Event()

    async def list_pods(namespace, labels, fields):
        return [p for p in pods if p["metadata"]["labels"].get(GATED_LABEL) == "true"]

    async def read_object(plural, namespace, name):
        reads.append(name)
        return datacache("qwen")

    async def patch_pod(namespace, name, patch):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if most >= 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5)  # a serial binder never gets a second one in
        await asyncio.sleep(0.001)
        in_flight -= 1
        return True

    async def unused(*args):
        raise AssertionError("not called here")

    binder = PodBinder(
        OperatorSettings(default_region=HERE), list_pods, patch_pod, read_object, unused, lambda *a: None
    )
    assert await binder.check_waiting(["ml"]) == 40
    assert most == UNGATE_CONCURRENCY == 16
    assert reads == ["qwen"]


async def test_a_failed_patch_leaves_its_pod_waiting_and_the_others_are_released() -> None:
    from tests.unit.reconcile.test_binding_decisions import HERE, bind, datacache, pod

    from datacache_operator.api.binding import GATED_LABEL

    pods = []
    for index in range(5):
        gated = bind(pod("qwen:/data"), datacache("qwen", ready=False))
        gated["metadata"].update(name=f"pod-{index}", namespace="ml", uid=f"uid-{index}")
        pods.append(gated)

    async def list_pods(namespace, labels, fields):
        return [p for p in pods if p["metadata"]["labels"].get(GATED_LABEL) == "true"]

    async def read_object(plural, namespace, name):
        return datacache("qwen")

    async def patch_pod(namespace, name, patch):
        if name == "pod-2":
            raise ConnectionResetError("the apiserver went away for this one")
        return True

    async def unused(*args):
        raise AssertionError("not called here")

    waiting: list[tuple[int, float]] = []
    binder = PodBinder(
        OperatorSettings(default_region=HERE),
        list_pods,
        patch_pod,
        read_object,
        unused,
        lambda *a: None,
        on_waiting=lambda count, longest: waiting.append((count, longest)),
    )
    assert await binder.check_waiting(["ml"], every_namespace=True) == 4
    assert [count for count, _ in waiting] == [1]  # pod-2 waits for the next look
