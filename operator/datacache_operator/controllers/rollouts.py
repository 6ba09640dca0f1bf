"""Rolling workloads onto a cache's new revision: every Deployment and StatefulSet of the
cache's namespace that opted in (`eci.datacache.dev/rollout: "true"`) and whose pods use the
cache gets the revision recorded on its pod template, which starts its own rolling update at
the pace its maxSurge/maxUnavailable (a StatefulSet: its updateStrategy) allows.

The caller decides when (once the new revision is Available, so no pod is rolled onto data
that is not there) and posts the events; `roll` only says what it rolled. It is idempotent: a
workload already on the revision is not patched again, so a pass that failed half-way is
simply called again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from datacache_operator import kube
from datacache_operator.api.rollouts import ROLLOUT_KINDS
from datacache_operator.reconcile.rollouts import rollout_patch, wants_rollout, workload_ref

logger = logging.getLogger(__name__)

WorkloadLister = Callable[[str], Awaitable[list[dict[str, Any]]]]  # (namespace)
WorkloadReader = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]  # (kind, namespace, name)
WorkloadPatcher = Callable[[str, str, str, list[dict[str, Any]]], Awaitable[bool]]

#: Patches tried per workload while its template keeps changing under us (each failed `test`
#: is followed by a fresh read).
PATCH_ATTEMPTS = 5


class RolloutIncomplete(RuntimeError):
    """Some workloads kept changing while their revision was recorded: the others were rolled
    (`rolled`), these were not (`changing`); calling `roll` again finishes the job."""

    def __init__(self, rolled: list[str], changing: list[str], attempts: int = PATCH_ATTEMPTS) -> None:
        super().__init__(
            f"{', '.join(changing)} changed on every one of {attempts} attempts and "
            f"{'was' if len(changing) == 1 else 'were'} not rolled"
        )
        self.rolled = rolled
        self.changing = changing


async def _roll_one(
    workload: dict[str, Any],
    cache: str,
    revision: str,
    read_workload: WorkloadReader,
    patch_workload: WorkloadPatcher,
    attempts: int,
) -> bool | None:
    """True: patched; False: nothing to do (not opted in, not using the cache, already on the
    revision, gone); None: it changed on every attempt."""
    kind, namespace, name = workload["kind"], workload["metadata"]["namespace"], workload["metadata"]["name"]
    current: dict[str, Any] | None = workload
    for _ in range(attempts):
        if current is None or current["metadata"].get("deletionTimestamp"):
            return False
        if not wants_rollout(current, cache):
            return False
        operations = rollout_patch(current, cache, revision)
        if operations is None:
            return False
        if await patch_workload(kind, namespace, name, operations):
            return True
        logger.debug("%s/%s changed since it was read; reading it again", kind, name)
        current = await read_workload(kind, namespace, name)
    return None


async def roll(
    namespace: str,
    cache: str,
    revision: str,
    *,
    list_workloads: WorkloadLister = kube.list_workloads,
    read_workload: WorkloadReader = kube.read_workload,
    patch_workload: WorkloadPatcher = kube.patch_workload,
    attempts: int = PATCH_ATTEMPTS,
) -> list[str]:
    """Record `revision` of DataCache `cache` on the pod template of every opted-in Deployment
    and StatefulSet of `namespace` that uses it; the workloads patched (`Deployment/name`,
    sorted), none when all are on it already.

    A refused call (e.g. 403 without the chart's `rollouts.enabled`) raises the client's error;
    workloads that kept changing raise RolloutIncomplete after the others were rolled."""
    rolled: list[str] = []
    changing: list[str] = []
    workloads = [w for w in await list_workloads(namespace) if w.get("kind") in ROLLOUT_KINDS]
    for workload in sorted(workloads, key=workload_ref):
        workload.setdefault("metadata", {}).setdefault("namespace", namespace)
        outcome = await _roll_one(workload, cache, revision, read_workload, patch_workload, attempts)
        if outcome is None:
            changing.append(workload_ref(workload))
        elif outcome:
            rolled.append(workload_ref(workload))
    if changing:
        raise RolloutIncomplete(rolled, changing, attempts)
    return rolled
