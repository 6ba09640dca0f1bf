"""The pod-binding contract: the label and annotations a pod uses to name its caches, the
ones the webhook writes back, and the ECI annotations it sets.

Pure data and parsing; the webhook (`admission/`) and the pod binder (`controllers/pods.py`)
both read it, so the names live in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import Field

from datacache_operator import GROUP
from datacache_operator.api.common import ApiModel, fit_name

INJECT_LABEL = f"{GROUP}/inject"
"""`"true"` opts a pod in; the webhook configuration selects pods by it (objectSelector)."""
CACHES_ANNOTATION = f"{GROUP}/caches"
"""`NAME:MOUNTPATH[:ro]`, comma-separated: DataCaches of the pod's namespace and where to mount them."""
BOUND_ANNOTATION = f"{GROUP}/bound"
"""Written by the webhook: per cache the cloud id, region, bucket and path the pod was bound to."""
SCHEDULING_GATE = f"{GROUP}/cache-ready"
"""Holds the pod back from the scheduler until every cache it uses is Ready."""
GATED_LABEL = f"{GROUP}/gated"
"""`"true"` while the pod carries the gate: the operator finds waiting pods by it (a server-side selector)."""
USES_LABEL_PREFIX = f"uses.{GROUP}/"
"""`uses.eci.datacache.dev/<cache>: <region>`: the pod uses that DataCache's data in that region."""

ECI_BUCKET_ANNOTATION = "k8s.aliyun.com/eci-data-cache-bucket"
ECI_PL_ANNOTATION = "k8s.aliyun.com/eci-data-cache-pl"
ECI_IOPS_ANNOTATION = "k8s.aliyun.com/eci-data-cache-provisionedIops"
ECI_BURSTING_ANNOTATION = "k8s.aliyun.com/eci-data-cache-burstingEnabled"

STATUS_KEYS_OF_THE_BINDER = frozenset({"consumers"})
"""Status fields the pod binder writes; a reconcile pass never writes them (two writers)."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_NAME_MAX = 63


#: On ACK, the pod label that sends a pod to ECI whatever else it says.
ECI_POD_LABEL = "alibabacloud.com/eci"


@dataclass(frozen=True)
class Placement:
    """What keeps a bound pod on ECI (its hostPath is a cache's path only on ECI: on an
    ordinary node it is the node's own directory): ACK's pod label, and a nodeSelector with
    the toleration of the virtual node's taint, which any scheduler honours."""

    label: bool = False
    node_selector: Mapping[str, str] = field(default_factory=dict)
    toleration_key: str | None = None


class BindingError(ValueError):
    """The pod cannot be bound; the message says why, naming the cache, field or container."""


class PerformanceLevel(StrEnum):
    """ESSD performance level of the disk each pod gets from the cache."""

    PL0 = "PL0"
    PL1 = "PL1"
    PL2 = "PL2"
    PL3 = "PL3"


class PodDisk(ApiModel):
    """The disk each pod that uses the cache gets (created from the cache's snapshot, released with
    the pod). The webhook sets the matching ECI annotations unless the pod already sets them."""

    performance_level: PerformanceLevel | None = Field(
        default=None,
        description="ESSD performance level, PL0 to PL3 (ECI's default PL1); the annotation "
        "k8s.aliyun.com/eci-data-cache-pl.",
    )
    provisioned_iops: int | None = Field(
        default=None,
        ge=0,
        le=50000,
        description="Provisioned IOPS of an ESSD AutoPL disk; the annotation "
        "k8s.aliyun.com/eci-data-cache-provisionedIops.",
    )
    bursting_enabled: bool | None = Field(
        default=None,
        description="Performance bursting of an ESSD AutoPL disk; the annotation "
        "k8s.aliyun.com/eci-data-cache-burstingEnabled.",
    )

    def annotations(self) -> dict[str, str]:
        values = {
            ECI_PL_ANNOTATION: str(self.performance_level) if self.performance_level else None,
            ECI_IOPS_ANNOTATION: str(self.provisioned_iops) if self.provisioned_iops is not None else None,
            ECI_BURSTING_ANNOTATION: (
                str(self.bursting_enabled).lower() if self.bursting_enabled is not None else None
            ),
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class CacheRequest:
    """One entry of the caches annotation."""

    name: str
    mount_path: str
    read_only: bool = False


#: A pod names at most this many caches: each one the webhook's watch has not brought yet is a
#: read of the apiserver, and anyone who may create a pod can call the webhook.
MAX_CACHES_PER_POD = 8


def parse_caches(text: str | None) -> list[CacheRequest]:
    """The entries of the caches annotation; BindingError names what is malformed."""
    where = f"annotation {CACHES_ANNOTATION}"
    if text is None or not text.strip():
        raise BindingError(f"{where} is missing or empty: list the caches as NAME:MOUNTPATH[:ro]")
    entries = text.split(",")
    if len(entries) > MAX_CACHES_PER_POD:
        raise BindingError(
            f"{where}: {len(entries)} entries; a pod may name at most {MAX_CACHES_PER_POD} caches"
        )
    requests: list[CacheRequest] = []
    for raw in entries:
        entry = raw.strip()
        parts = entry.split(":")
        if not entry or len(parts) not in (2, 3):
            raise BindingError(f"{where}: entry {entry!r} is not NAME:MOUNTPATH or NAME:MOUNTPATH:ro")
        name, mount_path = parts[0].strip(), parts[1].strip()
        if not _NAME.match(name) or len(name) > 253:
            raise BindingError(f"{where}: {name!r} is not a DataCache name")
        if not mount_path.startswith("/"):
            raise BindingError(f"{where}: mount path {mount_path!r} of cache {name} must be absolute")
        if len(parts) == 3 and parts[2].strip() != "ro":
            raise BindingError(f"{where}: the third part of {entry!r} must be 'ro' (read-only) or left out")
        requests.append(CacheRequest(name, mount_path.rstrip("/") or "/", len(parts) == 3))
    for what, values in (
        ("cache", [r.name for r in requests]),
        ("mount path", [r.mount_path for r in requests]),
    ):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise BindingError(f"{where}: {what} {value} is listed twice")
            seen.add(value)
    return requests


def volume_name(cache: str) -> str:
    """The pod volume of a cache (a DNS label: no dots, at most 63 characters)."""
    safe = cache.replace(".", "-")
    if safe == cache and len(cache) <= 53:
        return "datacache-" + cache
    return "datacache-" + safe[:42].rstrip("-") + "-" + hashlib.sha256(cache.encode()).hexdigest()[:10]


def uses_label(cache: str) -> str:
    """The label key that marks a pod using `cache`; its value is the region of the data."""
    return USES_LABEL_PREFIX + fit_name(cache, _LABEL_NAME_MAX)


@dataclass(frozen=True)
class BoundCache:
    """What one cache name of a pod was bound to (the bound annotation holds a list of these)."""

    name: str
    region: str
    bucket: str
    path: str
    dataCacheId: str | None = None  # noqa: N815 - the annotation's JSON key
    replication: str | None = None  # the DataCacheReplication whose copy it is, if any
    revision: str | None = None  # the DataCache's revision it got (r1, r2, ...)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def bound_annotation(bound: list[BoundCache]) -> str:
    return json.dumps([b.to_dict() for b in bound], separators=(",", ":"), sort_keys=True)


def parse_bound(annotations: Mapping[str, Any] | None) -> list[BoundCache]:
    """The bound record of a pod; empty when absent or unreadable (never raises)."""
    try:
        raw = json.loads((annotations or {}).get(BOUND_ANNOTATION) or "[]")
        fields = set(BoundCache.__dataclass_fields__)
        return [BoundCache(**{k: v for k, v in item.items() if k in fields}) for item in raw]
    except (TypeError, ValueError, AttributeError):
        return []


def has_gate(pod: Mapping[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(gate.get("name") == SCHEDULING_GATE for gate in gates)
