"""Pure decisions for one DataCache: (desired spec, what we know, observed cache) -> next step.

No kopf, no I/O. The handler layer gathers the inputs (the object, its Secret's values, a
read from ECI), asks :func:`next_step` what to do, performs it (each step is a verb of the
generic sync), and writes the conditions that :func:`conditions_for` computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from datacache_operator.cloud.models import (
    BUSY_STATUSES,
    STATUS_AVAILABLE,
    STATUS_FAILED,
    UPDATABLE_STATUSES,
    ObservedCache,
)
from datacache_operator.reconcile.common import (
    PAUSED_CONDITIONS,
    TRY_AGAIN,
    ConditionValue,
)
from datacache_operator.reconcile.sync import CacheFields, SourceFields, Verb, delta


@dataclass(frozen=True)
class DesiredCache:
    """The spec as ECI parameters, with defaults applied and Secret values merged in."""

    region: str
    bucket: str
    path: str
    name: str
    size: int
    retention_days: int | None
    data_source_type: str | None
    options: Mapping[str, str]
    tags: Mapping[str, str]
    resource_group_id: str | None
    net_config: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> CacheFields:
        """What UpdateDataCache can change, as wanted: compared with the cache by `delta`."""
        return CacheFields(
            name=self.name,
            size=self.size,
            retention_days=self.retention_days,
            data_source=(
                SourceFields.of(self.data_source_type, self.options)
                if self.data_source_type is not None
                else None
            ),
            tags=dict(self.tags),
            resource_group_id=self.resource_group_id or None,
        )


class Step(StrEnum):
    PAUSED = "Paused"
    RECOVER = "Recover"  # look for a cache tagged with our uid before creating one
    CREATE = "Create"
    ADOPTED_MISSING = "AdoptedMissing"
    NOT_OWNED = "NotOwned"  # spec.dataCacheId names a cache of a namespace this one may not take
    PATH_IN_USE = "PathInUse"  # another cache is at the bucket and path: nothing is created
    EXPIRED = "Expired"
    RECREATE = "Recreate"  # our cache vanished outside the operator
    WAIT = "Wait"  # busy: Creating, Loading, Updating, Deleting
    UPDATE = "Update"
    REPLACE_FAILED = "ReplaceFailed"  # a Failed cache and a newer spec: delete and build again
    FAILED = "Failed"
    READY = "Ready"


VERBS = {
    Step.RECOVER: Verb.RECOVER,
    Step.CREATE: Verb.CREATE,
    Step.RECREATE: Verb.FORGET,
    Step.UPDATE: Verb.UPDATE,
    Step.REPLACE_FAILED: Verb.REPLACE,
}
"""Every other step settles: the pass reports what ECI shows."""


@dataclass(frozen=True)
class Situation:
    """Everything a decision depends on, as plain values."""

    generation: int
    adopt_id: str | None
    known_id: str | None
    recovered: bool  # the tag lookup already ran in this pass
    observed: ObservedCache | None
    looked_up: bool  # `observed` is the result of a read (None then means "gone")
    expire_time: datetime | None  # from status: when the cache was due to expire
    failed_generation: int | None  # generation whose spec produced a Failed cache
    now: datetime
    may_take: bool = True  # the adopted cache is unowned, this namespace's, or granted to it
    may_update: bool = True  # managementPolicies let spec changes go to the cache


def next_step(
    situation: Situation,
    desired: DesiredCache,
    applied_retention: int | None,
    wanted: CacheFields | None = None,
) -> Step:
    """`wanted`: what UpdateDataCache keeps matching, when not all of `desired` (a serving
    revision keeps its data source and size)."""
    s = situation
    cache_id = s.adopt_id or s.known_id
    if cache_id is None:
        return Step.CREATE if s.recovered else Step.RECOVER
    if not s.looked_up:
        raise ValueError("a known cache must be read before deciding")
    if s.observed is None:
        if s.adopt_id:
            return Step.ADOPTED_MISSING
        if s.expire_time is not None and s.now >= s.expire_time:
            return Step.EXPIRED
        return Step.RECREATE
    if s.adopt_id and not s.may_take:
        return Step.NOT_OWNED  # before anything is read out of it or sent to it
    status = s.observed.status
    if status in BUSY_STATUSES:
        return Step.WAIT
    if status == STATUS_FAILED:
        if s.failed_generation is not None and s.generation > s.failed_generation and not s.adopt_id:
            return Step.REPLACE_FAILED
        return Step.FAILED
    if status in UPDATABLE_STATUSES:
        if s.may_update and delta(wanted or desired.fields(), s.observed, applied_retention):
            return Step.UPDATE
        return Step.READY if status == STATUS_AVAILABLE else Step.FAILED
    return Step.WAIT  # an unknown status: keep watching it


def poll_delay(step: Step, loading: float, stable: float) -> float:
    """Fast while something changes, slow once stable or stuck."""
    if step in (Step.WAIT, Step.UPDATE, Step.CREATE, Step.RECREATE, Step.REPLACE_FAILED, Step.RECOVER):
        return loading
    return stable


def conditions_for(step: Step, observed: ObservedCache | None) -> list[ConditionValue]:
    """Ready / Synced / Stalled after a pass that ended in `step` without an error."""
    cloud_status = (observed.status if observed else None) or "Unknown"
    event = (observed.last_event_message if observed else None) or ""
    progress = f" ({observed.progress})" if observed and observed.progress else ""
    synced = ConditionValue(
        "Synced", "True", "ReconcileSuccess", "The cache matches the spec or is being changed to."
    )
    not_stalled = ConditionValue("Stalled", "False", "NotStalled", "")
    if step == Step.READY:
        return [
            ConditionValue("Ready", "True", "Available", "The data cache is Available."),
            synced,
            not_stalled,
        ]
    if step in (Step.WAIT, Step.CREATE, Step.RECREATE, Step.UPDATE, Step.REPLACE_FAILED, Step.RECOVER):
        reason = {
            Step.CREATE: "Creating",
            Step.RECREATE: "Creating",
            Step.REPLACE_FAILED: "Creating",
            Step.UPDATE: "Updating",
        }.get(step, cloud_status)
        message = f"The data cache is {reason}{progress}." + (f" {event}" if event else "")
        return [ConditionValue("Ready", "False", reason, message), synced, not_stalled]
    if step == Step.FAILED:
        message = event or f"The data cache is {cloud_status}."
        return [
            ConditionValue("Ready", "False", cloud_status, message),
            synced,
            ConditionValue("Stalled", "True", cloud_status, f"{message} {TRY_AGAIN}"),
        ]
    if step == Step.EXPIRED:
        message = "The data cache reached its retentionDays and ECI removed it; it is not recreated."
        return [
            ConditionValue("Ready", "False", "Expired", message),
            synced,
            ConditionValue("Stalled", "True", "Expired", message),
        ]
    if step == Step.ADOPTED_MISSING:
        message = "spec.dataCacheId names a data cache that does not exist in this region."
        return [
            ConditionValue("Ready", "False", "NotFound", message),
            ConditionValue("Synced", "False", "NotFound", message),
            ConditionValue("Stalled", "True", "NotFound", message),
        ]
    if step == Step.PAUSED:
        return list(PAUSED_CONDITIONS)
    if step == Step.NOT_OWNED:
        raise ValueError("a refused adoption has its own conditions: refused_conditions")
    raise ValueError(f"no conditions for {step}")


def unused_since(consumers: int, recorded: datetime | None, now: datetime) -> datetime | None:
    """When the cache became unused: None while pods use it, else the first time seen unused."""
    return None if consumers else (recorded or now)


def idle_due(
    consumers: int,
    since: datetime | None,
    last_matched: datetime | None,
    created: datetime | None,
    now: datetime,
    after_seconds: float | None,
) -> bool:
    """Whether no pod has used the cache for `after_seconds` (expireAfterUnused): none uses it
    now, and neither the last one's end, ECI's last match nor the cache's creation is newer."""
    if consumers or after_seconds is None:
        return False
    moments = [moment for moment in (since, last_matched, created) if moment is not None]
    return bool(moments) and (now - max(moments)).total_seconds() >= after_seconds


def idle_conditions(after: str) -> list[ConditionValue]:
    message = (
        f"No pod used it for {after} (expireAfterUnused): its cloud cache was deleted. A pod that "
        "names it waits at the gate while it is built again."
    )
    return [
        ConditionValue("Ready", "False", "Idle", message),
        ConditionValue("Synced", "True", "ReconcileSuccess", message),
        ConditionValue("Stalled", "False", "NotStalled", ""),
    ]


# A hub that did not answer is asked again this much later (not on every pass of every cache).
HUB_RETRY_SECONDS = 60.0


def resolution_due(
    same_request: bool,
    commit: str | None,
    last_asked: datetime | None,
    now: datetime,
    refresh_seconds: float | None,
) -> bool:
    """Whether to ask the hub which commit the branch is at: a branch not asked yet, an answer
    still missing (after HUB_RETRY_SECONDS), or spec.refresh.interval gone by."""
    if not same_request or last_asked is None:
        return True
    waited = (now - last_asked).total_seconds()
    if commit is None:
        return waited >= HUB_RETRY_SECONDS
    return refresh_seconds is not None and waited >= refresh_seconds
