"""Pure decisions about pods bound to caches: may a waiting pod start, what to tell it, and
how many pods use each cache. No I/O: `controllers.pods` reads the pods and objects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from datacache_operator.api.binding import (
    BOUND_ANNOTATION,
    GATED_LABEL,
    SCHEDULING_GATE,
    BindingError,
    BoundCache,
    PodDisk,
    bound_annotation,
    parse_bound,
)
from datacache_operator.api.buckets import ECI_DEFAULT_BUCKET, default_bucket
from datacache_operator.api.common import DATACACHE_REPLICATIONS, DATACACHES
from datacache_operator.api.conditions import get_condition

AVAILABLE = "Available"


@dataclass(frozen=True)
class Binding:
    """What one cache name resolves to for a pod of the cluster's region."""

    bound: BoundCache
    ready: bool
    failure: str | None = None  # the cache's own message when it failed (the pod keeps waiting)
    pod_disk: dict[str, str] = field(default_factory=dict)  # ECI disk annotations from spec.podDisk


def region_of(datacache: Mapping[str, Any], default_region: str) -> str:
    status, spec = datacache.get("status") or {}, datacache.get("spec") or {}
    return str(status.get("region") or spec.get("region") or default_region)


def _condition_true(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    condition = get_condition((obj.get("status") or {}).get("conditions"), type_)
    return condition if condition and condition.get("status") == "True" else None


def _pod_disk(datacache: Mapping[str, Any]) -> dict[str, str]:
    raw = (datacache.get("spec") or {}).get("podDisk")
    return PodDisk.model_validate(raw).annotations() if raw else {}


def _copy_to(
    replications: Sequence[Mapping[str, Any]], cache: str, region: str
) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The first replication (by name) that copies DataCache `cache` to `region`, with that destination."""
    for replication in sorted(replications, key=lambda r: r["metadata"]["name"]):
        spec = replication.get("spec") or {}
        source = (spec.get("source") or {}).get("dataCacheRef") or {}
        if source.get("name") != cache or replication["metadata"].get("deletionTimestamp"):
            continue
        for destination in spec.get("destinations") or []:
            if destination.get("region") == region:
                return replication, destination
    return None


def _cloud_location(
    name: str, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any], tenancy: bool
) -> tuple[str, str]:
    """The bucket and path a pod mounts: the cache's own as ECI reported them (status). Before
    the first read, the spec's for a cache the operator creates there; never the spec's for an
    adopted cache, whose real path may be anything (a hostPath of `/` mounts the node's root)."""
    if status.get("path"):
        return str(status.get("bucket") or ECI_DEFAULT_BUCKET), str(status["path"])
    if spec.get("dataCacheId"):
        raise BindingError(
            f"DataCache {namespace}/{name} adopts a data cache not read from the cloud yet; "
            "create the pod once it is Ready"
        )
    return str(spec.get("bucket") or default_bucket(namespace, tenancy)), str(spec["path"])


def binding_of(
    name: str,
    namespace: str,
    datacache: Mapping[str, Any] | None,
    replications: Sequence[Mapping[str, Any]],
    cluster_region: str,
    default_region: str,
    tenancy: bool = True,
) -> Binding:
    """Resolve a cache name of a pod in `namespace`; BindingError when it cannot be used."""
    if datacache is None:
        raise BindingError(f"DataCache {name} not found in namespace {namespace}")
    if datacache["metadata"].get("deletionTimestamp"):
        raise BindingError(f"DataCache {namespace}/{name} is being deleted")
    spec, status = datacache.get("spec") or {}, datacache.get("status") or {}
    region = region_of(datacache, default_region)
    bucket, path = _cloud_location(name, namespace, spec, status, tenancy)
    if region == cluster_region:
        stalled = _condition_true(datacache, "Stalled")
        return Binding(
            bound=BoundCache(
                name, region, bucket, path, status.get("dataCacheId"), revision=status.get("currentRevision")
            ),
            ready=_condition_true(datacache, "Ready") is not None,
            failure=stalled.get("message") or stalled.get("reason") if stalled else None,
            pod_disk=_pod_disk(datacache),
        )
    found = _copy_to(replications, name, cluster_region)
    if found is None:
        raise BindingError(
            f"DataCache {namespace}/{name} is in region {region} but pods here run in {cluster_region}, "
            f"and no DataCacheReplication in {namespace} copies it to {cluster_region}"
        )
    replication, destination = found
    entry: dict[str, Any] = next(
        (
            e
            for e in (replication.get("status") or {}).get("destinations") or []
            if e.get("region") == cluster_region
        ),
        {},
    )
    failed = entry.get("failedGeneration") is not None
    # The copy's own bucket and path as its entry records them: the source switches revision
    # before a region's copy does, and a pod here must mount the copy it is bound to.
    return Binding(
        bound=BoundCache(
            name,
            cluster_region,
            str(entry.get("bucket") or destination.get("bucket") or bucket),
            str(entry.get("path") or destination.get("path") or path),
            entry.get("dataCacheId"),
            replication["metadata"]["name"],
            revision=entry.get("revision"),
        ),
        ready=entry.get("status") == AVAILABLE and not failed,
        failure=(entry.get("message") or entry.get("reason") or "the copy failed") if failed else None,
        pod_disk=_pod_disk(datacache),
    )


@dataclass(frozen=True)
class Verdict:
    """What a waiting pod's caches say now."""

    ready: bool  # every cache is Ready where the pod was bound: remove the gate
    waiting: tuple[str, ...] = ()  # caches not Ready yet
    failures: tuple[tuple[str, str], ...] = ()  # (cache, its own message): the pod keeps waiting
    bound: tuple[BoundCache, ...] = ()  # the record with the cloud ids known now


def verdict(bound: Sequence[BoundCache], now: Mapping[str, Binding | str]) -> Verdict:
    """`now` maps each cache name to its current binding, or to why it cannot be resolved."""
    if not bound:
        return Verdict(
            ready=False, failures=(("", f"the pod has no readable {BOUND_ANNOTATION} annotation"),)
        )
    waiting: list[str] = []
    failures: list[tuple[str, str]] = []
    record: list[BoundCache] = []
    for entry in bound:
        current = now.get(entry.name, f"cache {entry.name} was not looked up")
        if isinstance(current, str):
            failures.append((entry.name, current))
            record.append(entry)
            continue
        if (current.bound.bucket, current.bound.path, current.bound.region) != (
            entry.bucket,
            entry.path,
            entry.region,
        ):
            failures.append(
                (
                    entry.name,
                    f"the pod was bound to {entry.bucket}:{entry.path} in {entry.region}, but the cache is now "
                    f"{current.bound.bucket}:{current.bound.path} in {current.bound.region}; re-create the pod",
                )
            )
            record.append(entry)
            continue
        record.append(replace(entry, dataCacheId=current.bound.dataCacheId or entry.dataCacheId))
        if current.failure:
            failures.append((entry.name, current.failure))
        elif not current.ready:
            waiting.append(entry.name)
    ready = not waiting and not failures
    return Verdict(ready, tuple(waiting), tuple(failures), tuple(record))


def ungate_patch(pod: Mapping[str, Any], bound: Sequence[BoundCache]) -> list[dict[str, Any]] | None:
    """JSON patch removing our gate (guarded by a `test`, so a concurrent change of the gates
    fails it instead of removing another gate) and the waiting label, with the bound record
    completed; None when the pod has no gate of ours."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    index = next((i for i, gate in enumerate(gates) if gate.get("name") == SCHEDULING_GATE), None)
    if index is None:
        return None
    path = f"/spec/schedulingGates/{index}"
    patch: list[dict[str, Any]] = [
        {"op": "test", "path": path, "value": gates[index]},
        {"op": "remove", "path": path},
        {
            "op": "add",
            "path": "/metadata/annotations/" + BOUND_ANNOTATION.replace("/", "~1"),
            "value": bound_annotation(list(bound)),
        },
    ]
    if GATED_LABEL in ((pod.get("metadata") or {}).get("labels") or {}):
        patch.append({"op": "remove", "path": "/metadata/labels/" + GATED_LABEL.replace("/", "~1")})
    return patch


ConsumerKey = tuple[str, str, str]  # (plural, namespace, name)


def consumer_counts(pods: Sequence[Mapping[str, Any]]) -> Counter[ConsumerKey]:
    """Pods using each DataCache directly, and each replication through one of its copies."""
    counts: Counter[ConsumerKey] = Counter()
    for pod in pods:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "")
        for entry in parse_bound(meta.get("annotations")):
            if entry.replication:
                counts[(DATACACHE_REPLICATIONS, namespace, entry.replication)] += 1
            else:
                counts[(DATACACHES, namespace, entry.name)] += 1
    return counts


def uses(pod: Mapping[str, Any], cache: str, region: str, replication: str | None) -> bool:
    """Whether the pod is bound to `cache` in `region` (through `replication`'s copy, if given)."""
    return any(
        entry.name == cache and entry.region == region and entry.replication == replication
        for entry in parse_bound((pod.get("metadata") or {}).get("annotations"))
    )


def bound_ids(pod: Mapping[str, Any], cache: str, region: str) -> list[str]:
    """The cloud cache ids of `cache` in `region` the pod is bound to (its own, not a copy's)."""
    return [
        entry.dataCacheId
        for entry in parse_bound((pod.get("metadata") or {}).get("annotations"))
        if entry.name == cache and entry.region == region and entry.replication is None and entry.dataCacheId
    ]


def in_use_message(pods: Sequence[str], what: str) -> str:
    """The condition message while pods keep `what` (e.g. "the cloud cache") from being deleted."""
    count = len(pods)
    some = ", ".join(pods[:3]) + (", ..." if count > 3 else "")
    noun = "pod uses" if count == 1 else "pods use"
    return f"{count} {noun} it ({some}): {what} is kept until the last one ends."


def _destination(status: Mapping[str, Any], region: str) -> Mapping[str, Any]:
    return next((e for e in status.get("destinations") or [] if e.get("region") == region), {})


def cache_usable_change(
    before: Mapping[str, Any], after: Mapping[str, Any], cluster_region: str
) -> tuple[bool, bool]:
    """(turned usable, turned failed) between two statuses of a DataCache: when the pods waiting
    for it must be looked at now."""
    was_ready = _condition_true({"status": before}, "Ready") is not None
    is_ready = _condition_true({"status": after}, "Ready") is not None
    was_stalled = _condition_true({"status": before}, "Stalled") is not None
    is_stalled = _condition_true({"status": after}, "Stalled") is not None
    return is_ready and not was_ready, is_stalled and not was_stalled


def copy_usable_change(
    before: Mapping[str, Any], after: Mapping[str, Any], cluster_region: str
) -> tuple[bool, bool]:
    """The same for a DataCacheReplication: its copy into the cluster's region, which pods use."""
    old, new = _destination(before, cluster_region), _destination(after, cluster_region)
    usable = new.get("status") == AVAILABLE and old.get("status") != AVAILABLE
    failed = new.get("failedGeneration") is not None and old.get("failedGeneration") is None
    return usable, failed
