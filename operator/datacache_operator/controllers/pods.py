"""The pods bound to caches: remove their scheduling gate once every cache is Ready, tell
waiting pods when a cache fails, count the pods using each cache, and name them when a
deletion must wait.

Never a watch of every pod: pods are listed by the labels the webhook set (server-side
selectors), when a cache turns Ready or fails, and on a slow resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from datacache_operator.api.binding import (
    GATED_LABEL,
    INJECT_LABEL,
    BindingError,
    has_gate,
    parse_bound,
    uses_label,
)
from datacache_operator.api.common import DATACACHE_REPLICATIONS, DATACACHES
from datacache_operator.cloud.models import parse_time
from datacache_operator.kube import ObjectReader, check_may_act
from datacache_operator.reconcile import binding as decide
from datacache_operator.reconcile.binding import Binding, ConsumerKey
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

NOT_TERMINATED = "status.phase!=Succeeded,status.phase!=Failed"
# Gates removed at once: a thousand pods waiting on one cache are released at the apiserver's
# pace, not one round trip after another (benchmarks/pods_bench.py measures both).
UNGATE_CONCURRENCY = 16

PodLister = Callable[[str | None, str, str | None], Awaitable[list[dict[str, Any]]]]
PodPatcher = Callable[[str, str, list[dict[str, Any]]], Awaitable[bool]]
StatusPatcher = Callable[[str, str, str, Mapping[str, Any]], Awaitable[None]]
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]  # (object, type, reason, message)


def waited(pod: Mapping[str, Any]) -> float:
    """Seconds since the pod was created, which is when the webhook gated it."""
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (datetime.now(UTC) - created).total_seconds() if created else 0.0


def _pod_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


class PodBinder:
    def __init__(
        self,
        settings: OperatorSettings,
        list_pods: PodLister,
        patch_pod: PodPatcher,
        read_object: ObjectReader,
        patch_status: StatusPatcher,
        post_event: EventPoster,
        on_ungated: Callable[[float], None] = lambda waited: None,
        on_waiting: Callable[[int, float], None] = lambda count, longest: None,
    ) -> None:
        """`on_ungated(seconds the pod waited)` after each gate removed; `on_waiting(pods
        still gated, seconds the longest has waited)` after each sweep of every namespace."""
        self.settings = settings
        self.list_pods = list_pods
        self.patch_pod = patch_pod
        self.read_object = read_object
        self.patch_status = patch_status
        self.post_event = post_event
        self.on_ungated = on_ungated
        self.on_waiting = on_waiting
        self._told: dict[str, set[tuple[str, str]]] = {}  # pod uid -> failures already posted
        self._queued: set[str] = set()  # namespaces whose next check has not begun yet
        self._checking: dict[str, asyncio.Lock] = {}  # namespace -> one check at a time
        self._checks: set[asyncio.Future[None]] = set()
        self._ungating = asyncio.Semaphore(UNGATE_CONCURRENCY)  # shared: patches take the kube threads

    # ---- waiting pods -----------------------------------------------------------------

    def cache_changed(self, namespace: str) -> None:
        """A cache of `namespace` turned Ready (or a copy Available), or failed: look at the
        namespace's waiting pods now rather than at the next resync. The pass that saw the
        change does not wait for the look, and changes that come together share one: a check
        not begun yet covers every change before it (1,000 caches turning Ready within
        seconds were 1,000 pod lists, each holding a pass's worker)."""
        if namespace in self._queued:
            return
        self._queued.add(namespace)
        check = asyncio.ensure_future(self._check_changed(namespace))
        self._checks.add(check)  # the loop keeps only weak references to tasks
        check.add_done_callback(self._checks.discard)

    async def _check_changed(self, namespace: str) -> None:
        # After the check under way, if any: it may have listed the pods before the change.
        async with self._checking.setdefault(namespace, asyncio.Lock()):
            self._queued.discard(namespace)  # begun: a change from now on needs the next check
            try:
                await self.check_waiting([namespace])
            except Exception:
                logger.exception(f"could not look at the pods waiting for caches of {namespace}")

    async def check_waiting(self, namespaces: Iterable[str | None], every_namespace: bool = False) -> int:
        """Ungate the waiting pods whose caches are all Ready; tell the others of failures.
        `every_namespace`: these are all the namespaces in scope (a resync), so a pod not seen
        is no longer waiting. Returns how many pods were ungated."""
        ungated = 0
        seen: set[str] = set()
        waiting: list[float] = []
        for namespace in namespaces:
            pods = await self.list_pods(namespace, f"{GATED_LABEL}=true", NOT_TERMINATED)
            seen.update(pod["metadata"]["uid"] for pod in pods)
            gated = [pod for pod in pods if has_gate(pod)]
            resolved: dict[tuple[str, str, str | None], Binding | str] = {}
            for pod in gated:  # the few caches they name, once each, before the pods' patches
                for entry in parse_bound(pod["metadata"].get("annotations")):
                    await self._resolve(pod["metadata"]["namespace"], entry.name, entry.replication, resolved)
            for pod, released in zip(gated, await self._check_pods(gated, resolved), strict=True):
                if released:
                    ungated += 1
                else:
                    waiting.append(waited(pod))
        if every_namespace:
            for uid in set(self._told) - seen:  # forget pods that left (ungated, deleted)
                del self._told[uid]
            self.on_waiting(len(waiting), max(waiting, default=0.0))
        return ungated

    async def _check_pods(
        self, pods: list[dict[str, Any]], resolved: dict[tuple[str, str, str | None], Binding | str]
    ) -> list[bool]:
        """Each pod checked (and ungated) at most UNGATE_CONCURRENCY at a time across every
        namespace; a pod whose patch fails stays waiting for the next look, the others go on."""

        async def check(pod: dict[str, Any]) -> bool:
            async with self._ungating:
                try:
                    return await self._check_pod(pod, resolved)
                except Exception:
                    check_may_act()  # a replica that may no longer act stops here, not per pod
                    meta = pod["metadata"]
                    logger.warning(f"could not ungate pod {meta['namespace']}/{meta['name']}", exc_info=True)
                    return False

        return await asyncio.gather(*(check(pod) for pod in pods))

    async def _resolve(
        self,
        namespace: str,
        name: str,
        replication: str | None,
        cache: dict[tuple[str, str, str | None], Binding | str],
    ) -> Binding | str:
        key = (namespace, name, replication)
        if key not in cache:
            datacache = await self.read_object(DATACACHES, namespace, name)
            replications: list[dict[str, Any]] = []
            if replication:
                found = await self.read_object(DATACACHE_REPLICATIONS, namespace, replication)
                replications = [found] if found else []
            try:
                cache[key] = decide.binding_of(
                    name,
                    namespace,
                    datacache,
                    replications,
                    self.settings.effective_cluster_region,
                    self.settings.default_region,
                    self.settings.tenancy,
                )
            except BindingError as error:
                if replication and not replications:
                    cache[key] = (
                        f"DataCacheReplication {namespace}/{replication}, whose copy the pod uses, is gone"
                    )
                else:
                    cache[key] = str(error)
        return cache[key]

    async def _check_pod(
        self, pod: dict[str, Any], resolved: dict[tuple[str, str, str | None], Binding | str]
    ) -> bool:
        meta = pod["metadata"]
        if not has_gate(pod):
            return False
        bound = parse_bound(meta.get("annotations"))
        now = {
            entry.name: await self._resolve(meta["namespace"], entry.name, entry.replication, resolved)
            for entry in bound
        }
        result = decide.verdict(bound, now)
        if result.ready:
            patch = decide.ungate_patch(pod, result.bound)
            if patch and await self.patch_pod(meta["namespace"], meta["name"], patch):
                names = ", ".join(entry.name for entry in result.bound)
                self.post_event(
                    _pod_ref(pod),
                    "Normal",
                    "CachesReady",
                    f"Every cache is Ready ({names}); removed the scheduling gate.",
                )
                self.on_ungated(waited(pod))
                return True
            return False
        told = self._told.setdefault(meta["uid"], set())
        for failure in result.failures:
            if failure not in told:
                told.add(failure)
                cache, message = failure
                self.post_event(
                    _pod_ref(pod),
                    "Warning",
                    "CacheNotUsable",
                    f"Cache {cache}: {message} The pod stays gated until it is Ready.",
                )
        return False

    # ---- consumers --------------------------------------------------------------------

    async def count_consumers(
        self, namespaces: Iterable[str | None], known: Mapping[ConsumerKey, int | None]
    ) -> int:
        """Write status.consumers where it changed; `known` is every object in scope with the
        value it shows now. Returns how many objects were patched."""
        pods: list[dict[str, Any]] = []
        for namespace in namespaces:
            pods.extend(await self.list_pods(namespace, f"{INJECT_LABEL}=true", NOT_TERMINATED))
        counts = decide.consumer_counts(pods)
        patched = 0
        for key, shown in known.items():
            count = counts.get(key, 0)
            if (shown or 0) != count:
                plural, namespace, name = key
                await self.patch_status(plural, namespace, name, {"consumers": count})
                patched += 1
        return patched

    async def users_by_id(self, namespace: str, cache: str, region: str) -> dict[str, list[str]]:
        """The non-terminated pods bound to each cloud cache id of `cache` in `region` (each of
        its revisions): what keeps a superseded revision."""
        pods = await self.list_pods(namespace, f"{uses_label(cache)}={region}", NOT_TERMINATED)
        found: dict[str, list[str]] = {}
        for pod in pods:
            for cache_id in decide.bound_ids(pod, cache, region):
                found.setdefault(cache_id, []).append(f"{namespace}/{pod['metadata']['name']}")
        return found

    async def users(
        self, namespace: str, cache: str, region: str, replication: str | None = None
    ) -> list[str]:
        """Names of the non-terminated pods bound to `cache` in `region` (through `replication`)."""
        pods = await self.list_pods(namespace, f"{uses_label(cache)}={region}", NOT_TERMINATED)
        return sorted(
            f"{namespace}/{p['metadata']['name']}" for p in pods if decide.uses(p, cache, region, replication)
        )
