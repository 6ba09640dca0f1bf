"""Pure decisions for one DataCacheReplication: source readiness, the next step of each
destination, where a copy of each source revision goes, and the conditions that sum them up.

No kopf, no I/O: the controller reads the source and each copy, asks these functions what
to do, performs it, and writes the status they compute.

Copies follow the source's current revision make-before-break: when the source holds a new
revision, each destination makes the copy of it at its own address (the source's new path, or
the destination's `path` + ".rN" as `reconcile.revisions.revision_path` places a DataCache's
revisions) while its entry keeps naming the old copy, which pods of the region get; the entry
switches once the new copy is Available, and the old copy goes once no pod is bound to it.
Only where the new copy would sit at the old one's very bucket and path (a source given by id
and re-created there, a DataCache reloaded in place under `updatePolicy: InPlace`) is the old
copy deleted first, as before: pods pick a cache by bucket and path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from datacache_operator.api.binding import parse_bound
from datacache_operator.api.common import DESTINATION_REGION_TAG
from datacache_operator.cloud.models import (
    BUSY_STATUSES,
    STATUS_AVAILABLE,
    TERMINAL_FAILURE_STATUSES,
    UPDATABLE_STATUSES,
    ObservedCache,
    is_sensitive_option,
)
from datacache_operator.reconcile.common import TRY_AGAIN, ConditionValue, client_token
from datacache_operator.reconcile.ownership import Identity
from datacache_operator.reconcile.revisions import revision_path
from datacache_operator.reconcile.sync import CacheFields, Verb

SOURCE_ID_TAG = "eci.datacache.dev/source-id"


class SourceState(StrEnum):
    READY = "Available"
    NOT_FOUND = "SourceNotFound"
    NOT_READY = "SourceNotReady"
    FAILED = "SourceFailed"
    NOT_OWNED = "NotOwned"  # another namespace's cache: nothing is read out of it or copied


def source_state(known_id: str | None, exists: bool, observed: ObservedCache | None) -> SourceState:
    """`exists`: the referenced DataCache object (or the raw id's spec) is there at all."""
    if not exists:
        return SourceState.NOT_FOUND
    if known_id is None:
        return SourceState.NOT_READY  # the DataCache has no cloud cache yet
    if observed is None:
        return SourceState.NOT_FOUND
    if observed.status == STATUS_AVAILABLE:
        return SourceState.READY
    if observed.status in TERMINAL_FAILURE_STATUSES:
        return SourceState.FAILED
    return SourceState.NOT_READY


class DestStep(StrEnum):
    RECOVER = "Recover"  # look for a copy tagged with our uid and this region before copying
    COPY = "Copy"
    UPDATE = "Update"  # name or tags changed: UpdateDataCache
    MOVE = "Move"  # bucket or path changed: the old copy goes, a new one is made
    REFRESH = "Refresh"  # the source was re-created or reloaded: the old copy goes, a new one is made
    MISSING = "Missing"  # our copy vanished outside the operator: copy again
    REPLACE_FAILED = "ReplaceFailed"  # a failed copy and a newer spec: delete it, copy again
    WAIT = "Wait"
    READY = "Ready"
    FAILED = "Failed"


VERBS = {
    DestStep.RECOVER: Verb.RECOVER,
    DestStep.COPY: Verb.CREATE,
    DestStep.UPDATE: Verb.UPDATE,
    DestStep.MOVE: Verb.REPLACE,
    DestStep.REFRESH: Verb.REPLACE,
    DestStep.REPLACE_FAILED: Verb.REPLACE,
    DestStep.MISSING: Verb.FORGET,
}
"""Every other step settles: the pass reports what ECI shows."""


@dataclass(frozen=True)
class DestinationSituation:
    known_id: str | None
    recovered: bool  # the tag lookup already ran in this pass
    observed: ObservedCache | None  # the read of known_id (None: gone)
    generation: int
    failed_generation: int | None  # generation whose copy failed (or whose copy call was refused)
    moved: bool = False  # the copy's bucket or path differs from the spec
    changed: bool = False  # the copy's name, retention or tags differ from the spec
    stale: bool = False  # the copy holds an older revision of the source
    retry_requested: bool = False  # a new reconcile request: failed copies are tried again
    beside: bool = False  # the copy of the new revision goes to another bucket or path than this one

    @property
    def superseded(self) -> bool:
        """A copy of an older revision that stays while the copy of the new one is made beside
        it (make-before-break): neither moved nor refreshed in place, it serves (when Available)
        until the new one takes over."""
        return self.stale and self.beside and self.observed is not None


def next_destination_step(s: DestinationSituation) -> DestStep:
    # A failure stays until the spec changes or a reconcile request asks to try again.
    try_again = s.retry_requested or (s.failed_generation is not None and s.generation > s.failed_generation)
    if s.known_id is None:
        if s.failed_generation is not None and not try_again:
            return DestStep.FAILED  # the copy call itself was refused for this spec
        return DestStep.COPY if s.recovered else DestStep.RECOVER
    if s.observed is None:
        return DestStep.MISSING
    status = s.observed.status
    if s.superseded:  # the controller makes the new revision's copy beside it, which takes over
        if status in UPDATABLE_STATUSES and s.changed:
            return DestStep.UPDATE
        if status == STATUS_AVAILABLE:
            return DestStep.READY
        return DestStep.FAILED if status in TERMINAL_FAILURE_STATUSES else DestStep.WAIT
    if status in UPDATABLE_STATUSES and s.moved:
        return DestStep.MOVE
    if (status in UPDATABLE_STATUSES or status in TERMINAL_FAILURE_STATUSES) and s.stale:
        return DestStep.REFRESH
    if status in UPDATABLE_STATUSES and s.changed:
        return DestStep.UPDATE
    if status == STATUS_AVAILABLE:
        return DestStep.READY
    if status in TERMINAL_FAILURE_STATUSES:
        return DestStep.REPLACE_FAILED if try_again else DestStep.FAILED
    if status in BUSY_STATUSES:
        return DestStep.WAIT
    return DestStep.WAIT  # an unknown status: keep watching it


def copy_tags(user_tags: Mapping[str, str], owner: Identity, region: str) -> dict[str, str]:
    """The copy's tags: the user's, then the owner tags and the destination region (ours win)."""
    return {**user_tags, **owner.tags(), DESTINATION_REGION_TAG: region}


def copy_token(uid: str, region: str, copy_generation: int, source_id: str = "") -> str:
    """Same object, region, source cache and generation: same token, so a repeated call never
    makes two copies, and a copy of another source (a new revision) never repeats a token with
    other parameters (ECI refuses that: IdempotentParameterMismatch)."""
    if not source_id:
        return client_token(uid, region, copy_generation)
    return client_token(uid, region, source_id, copy_generation)


def source_revision(source: ObservedCache) -> str:
    """Which load of the source a copy holds: its id and data source (credentials left out),
    digested. Derived from the cloud alone, so it is the same after any restart and for a
    source given by raw id."""
    public = sorted((k, v) for k, v in source.data_source_options.items() if not is_sensitive_option(k))
    return client_token(source.data_cache_id, source.data_source_type or "", repr(public))[:16]


def is_stale(copy_source_id: str | None, copy_revision: str | None, source_id: str, revision: str) -> bool:
    """The copy holds another revision of the source. A copy recorded before revisions were
    kept (or recovered by its tags) counts as current when it came from the same source id."""
    if copy_revision is None:
        return copy_source_id is not None and copy_source_id != source_id
    return copy_revision != revision


def copy_path(dest_path: str | None, source_path: str | None, revision: str | None) -> str | None:
    """The path of the copy of the source's `revision` (its status.currentRevision): the
    destination's own path with the revision beside it as a DataCache's are (r1 at the path,
    rN at path + ".rN"), else the source's, which is already that revision's own."""
    if dest_path:
        return revision_path(dest_path, revision) if revision else dest_path
    return source_path


def builds_beside(old: ObservedCache, want_bucket: str | None, want_path: str | None) -> bool:
    """Whether the copy of the new revision goes elsewhere than `old` (then it is made before
    `old` goes); unknown addresses count as the same place."""
    if want_bucket is None or want_path is None or old.bucket is None or old.path is None:
        return False
    return (old.bucket, old.path) != (want_bucket, want_path)


def copy_bound_ids(pod: Mapping[str, Any], cache: str, region: str, replication: str) -> list[str]:
    """The ids of `replication`'s copies of `cache` in `region` that the pod is bound to."""
    return [
        entry.dataCacheId
        for entry in parse_bound((pod.get("metadata") or {}).get("annotations"))
        if entry.name == cache
        and entry.region == region
        and entry.replication == replication
        and entry.dataCacheId
    ]


def copy_fields(name: str | None, retention_days: int | None, tags: Mapping[str, str]) -> CacheFields:
    """What UpdateDataCache keeps matching on a copy: an unset name or retention is not
    compared (the copy keeps what it has); the data and size are the source's."""
    return CacheFields(name=name, retention_days=retention_days, tags=dict(tags))


def copy_moved(
    bucket: str | None, path: str | None, observed: ObservedCache, source: ObservedCache | None
) -> bool:
    """The copy sits at another bucket or path than the spec asks (unset: the source's)."""
    want_bucket = bucket or (source.bucket if source else None)
    want_path = path or (source.path if source else None)
    return (want_bucket is not None and observed.bucket is not None and want_bucket != observed.bucket) or (
        want_path is not None and observed.path is not None and want_path != observed.path
    )


def removed_regions(desired: Sequence[str], recorded: Sequence[str]) -> list[str]:
    """Regions that have a copy in status but no entry in the spec any more."""
    wanted = set(desired)
    return [region for region in recorded if region not in wanted]


def ready_count(steps: Mapping[str, DestStep]) -> str:
    ready = sum(1 for step in steps.values() if step == DestStep.READY)
    return f"{ready}/{len(steps)}"


def poll_delay(source: SourceState, steps: Mapping[str, DestStep], loading: float, stable: float) -> float:
    if source != SourceState.READY:
        return loading if source == SourceState.NOT_READY else stable
    if any(step not in (DestStep.READY, DestStep.FAILED) for step in steps.values()):
        return loading
    return stable


SYNCED = ConditionValue("Synced", "True", "ReconcileSuccess", "The copies match the spec or are being made.")
NOT_STALLED = ConditionValue("Stalled", "False", "NotStalled", "")


def source_conditions(state: SourceState, source: str) -> list[ConditionValue]:
    """Conditions while the source is not Available: nothing is copied. For NOT_OWNED, `source`
    is the refusal."""
    if state == SourceState.NOT_OWNED:
        return [
            ConditionValue("Ready", "False", str(state), source),
            ConditionValue("Synced", "False", str(state), source),
            ConditionValue("Stalled", "True", str(state), source),
        ]
    if state == SourceState.NOT_FOUND:
        message = f"Source {source} does not exist; waiting for it."
    elif state == SourceState.FAILED:
        message = f"Source {source} failed to load; nothing is copied."
    else:
        message = f"Source {source} is not Available yet; copies start once it is."
    return [ConditionValue("Ready", "False", str(state), message), SYNCED, NOT_STALLED]


def summary_conditions(steps: Mapping[str, DestStep]) -> list[ConditionValue]:
    """Ready only when every destination is Available; Stalled when all the rest failed."""
    total = len(steps)
    ready = [r for r, step in steps.items() if step == DestStep.READY]
    failed = sorted(r for r, step in steps.items() if step == DestStep.FAILED)
    if len(ready) == total:
        return [
            ConditionValue("Ready", "True", "Available", f"All {total} copies are Available."),
            SYNCED,
            NOT_STALLED,
        ]
    if failed and len(ready) + len(failed) == total:
        message = f"{len(ready)}/{total} copies Available; failed in {', '.join(failed)}."
        return [
            ConditionValue("Ready", "False", "CopyFailed", message),
            SYNCED,
            ConditionValue("Stalled", "True", "CopyFailed", f"{message} {TRY_AGAIN}"),
        ]
    message = f"{len(ready)}/{total} copies Available." + (
        f" Failed in {', '.join(failed)}." if failed else ""
    )
    return [ConditionValue("Ready", "False", "Copying", message), SYNCED, NOT_STALLED]
