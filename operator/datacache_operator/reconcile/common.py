"""Decisions every kind shares: owner tags and client tokens (never create twice), condition
values, and how a failed cloud call reads as conditions. Pure, like the rest of `reconcile`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from datacache_operator.api.common import (
    MAX_CLOUD_NAME_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    OWNER_CLUSTER_TAG,
    OWNER_NAME_TAG,
    OWNER_NAMESPACE_TAG,
    OWNER_UID_TAG,
    PAUSED_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    fit_name,
)

TRY_AGAIN = (
    f"Change the spec, or set the annotation {RECONCILE_REQUEST_ANNOTATION} to a new value, to try again."
)


def cloud_name(object_name: str) -> str:
    """The cache's Name in ECI when the spec sets none: the object's name, fitted to ECI's 128."""
    return fit_name(object_name, MAX_CLOUD_NAME_LENGTH)


def owner_tags(cluster: str, uid: str, namespace: str, name: str) -> dict[str, str]:
    """The tags naming the object that made a cache: what finds it again, and what keeps other
    namespaces' objects off it (`reconcile.ownership`)."""
    # A namespace has at most 63 characters, a uid 36, a cluster id 128; only the name needs fitting.
    return {
        OWNER_UID_TAG: uid,
        OWNER_CLUSTER_TAG: cluster,
        OWNER_NAMESPACE_TAG: namespace,
        OWNER_NAME_TAG: fit_name(name, MAX_TAG_VALUE_LENGTH),
    }


def client_token(*parts: str | int) -> str:
    """A ClientToken (ASCII, at most 64 characters) that is the same for the same parts."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:64]


@dataclass(frozen=True)
class Event:
    """What a pass tells people about an object (a Kubernetes Event)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ConditionValue:
    type: str
    status: str
    reason: str
    message: str


PAUSED_CONDITIONS = (ConditionValue("Synced", "False", "ReconcilePaused", f"{PAUSED_ANNOTATION} is true."),)


def error_conditions(code: str, message: str, terminal: bool) -> list[ConditionValue]:
    """A failed cloud call: terminal ones stall until the spec changes, others retry."""
    if terminal:
        return [
            ConditionValue("Ready", "False", code, message),
            ConditionValue("Synced", "False", code, message),
            ConditionValue("Stalled", "True", code, f"{message} {TRY_AGAIN}"),
        ]
    return [ConditionValue("Synced", "False", code, f"{message} Retrying.")]


def reason_from_code(code: str) -> str:
    """A condition reason (CamelCase, letters only) from an ECI code like `Throttling.User`."""
    words = [w for w in code.replace("-", ".").replace("_", ".").split(".") if w]
    reason = "".join(w[:1].upper() + w[1:] for w in words)
    return "".join(ch for ch in reason if ch.isalnum()) or "Unknown"


SYNC_TIME = "lastSyncTime"
#: A drift check that finds nothing new rewrites `lastSyncTime` once it is this many stable
#: poll intervals old, not at every check.
SYNC_TIME_REFRESH_INTERVALS = 10
PROGRESS = "progress"
#: A loading cache whose progress alone moved is rewritten at most this often (seconds): a
#: write and a watch event per poll of every loading cache would compete with the creates.
PROGRESS_REFRESH_SECONDS = 30.0


def _comparable(value: Any, *, progress: bool = True, in_condition: bool = False) -> Any:
    """`value` without sync times and without None values (a merge patch's None only removes);
    with `progress=False` also without progress and conditions' messages (which quote it)."""
    if isinstance(value, Mapping):
        return {
            k: _comparable(v, progress=progress, in_condition=k == "conditions")
            for k, v in value.items()
            if k != SYNC_TIME
            and v is not None
            and (progress or (k != PROGRESS and not (in_condition and k == "message")))
        }
    if isinstance(value, list):
        return [_comparable(v, progress=progress, in_condition=in_condition) for v in value]
    return value


def _sync_times(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        own = [value[SYNC_TIME]] if isinstance(value.get(SYNC_TIME), str) else []
        return own + [t for v in value.values() for t in _sync_times(v)]
    if isinstance(value, list):
        return [t for v in value for t in _sync_times(v)]
    return []


def status_to_write(
    before: Mapping[str, Any],
    after: dict[str, Any],
    now: datetime,
    max_age: float,
    progress_age: float = PROGRESS_REFRESH_SECONDS,
) -> dict[str, Any] | None:
    """The status a pass should write: `after`, or None when nothing is to be written: it is
    `before` (None values aside: a merge patch's None only removes), or it differs only in
    its sync times (the cache's and each copy's `lastSyncTime`) and the oldest of those is
    younger than `max_age` seconds. A drift check that finds nothing new then writes nothing:
    at 10,000 objects every check would otherwise be a write and a watch event for each
    object (Kubernetes moved Node heartbeats out of status into Leases for the same cost).
    Likewise a change of progress alone (`progress`, the messages of unchanged conditions)
    waits until the last write is `progress_age` seconds old; any other change goes at once."""
    if _comparable(before) != _comparable(after):
        if _comparable(before, progress=False) != _comparable(after, progress=False):
            return after
        max_age = min(max_age, progress_age)
    elif _sync_times(before) == _sync_times(after):
        return None
    times = _sync_times(before)
    if not times:
        return after
    try:
        oldest = min(datetime.fromisoformat(t) for t in times)
    except ValueError:  # not ours: write ours
        return after
    return after if (now - oldest).total_seconds() >= max_age else None


def refused_conditions(reason: str, refusal: str) -> list[ConditionValue]:
    """Nothing is read out of the object's caches or sent to them, until something outside
    the spec changes (the poll keeps looking): spec.dataCacheId names another namespace's cache
    (NotOwned), its bucket is not the namespace's (BucketNotAllowed), another cache is at its
    bucket and path (PathInUse), or its namespace's cloud account is not the one to use
    (AccountConflict, AccountChanged)."""
    return [
        ConditionValue("Ready", "False", reason, refusal),
        ConditionValue("Synced", "False", reason, refusal),
        ConditionValue("Stalled", "True", reason, refusal),
    ]
