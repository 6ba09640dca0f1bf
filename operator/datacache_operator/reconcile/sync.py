"""Decisions every cloud resource shares, whatever object owns it: what a step does (its
verb) and which fields an UpdateDataCache must send. Pure: `controllers.sync` performs them.

A DataCache's cache and each destination's copy of a DataCacheReplication are resources of
one kind for ECI (a data cache): each kind decides its own steps, and every step is one of
the verbs below, so reading, creating, updating and deleting are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from datacache_operator.cloud.models import ObservedCache, is_sensitive_option


class Verb(StrEnum):
    """What the generic sync does for a step."""

    RECOVER = "Recover"  # look for the resource by its owner tags (a create whose reply was lost)
    CREATE = "Create"  # create (or copy) it, with a ClientToken
    UPDATE = "Update"  # send the fields that differ
    FORGET = "Forget"  # it vanished outside the operator: drop its id, make it again
    REPLACE = "Replace"  # delete it, then make it again
    SETTLE = "Settle"  # nothing to send: wait for ECI, or report what it shows


@dataclass(frozen=True)
class SourceFields:
    """A data source as compared: its type and the options ECI echoes (never credentials)."""

    type: str
    options: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, type_: str, options: Mapping[str, str]) -> SourceFields:
        public = sorted((k, v) for k, v in options.items() if not is_sensitive_option(k))
        return cls(type_, tuple(public))


def _api(name: str) -> Any:
    return field(default=None, metadata={"api": name})


@dataclass(frozen=True)
class CacheFields:
    """The fields of a cache that UpdateDataCache changes. As a wish, None leaves a field
    alone; as a delta (:func:`delta`), the fields set are the ones to send."""

    name: str | None = _api("name")
    size: int | None = _api("size")
    retention_days: int | None = _api("retentionDays")
    data_source: SourceFields | None = _api("dataSource")
    tags: Mapping[str, str] | None = _api("tags")
    resource_group_id: str | None = _api("resourceGroupId")

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def describe(self) -> str:
        """The changed fields by their API names, for events: "name, tags"."""
        return ", ".join(f.metadata["api"] for f in fields(self) if getattr(self, f.name) is not None)

    @property
    def rebuilds(self) -> bool:
        """ECI loads the data again: it needs the source (with its credentials) and network."""
        return self.data_source is not None or self.size is not None


def reported_fields(observed: ObservedCache, applied_retention: int | None) -> dict[str, Any]:
    """What ECI shows of each field, by field name; a field it does not report is absent,
    and so never compared.

    ECI reports when a cache expires, not its retention: where the retention is not stated,
    it is what the operator last applied (kept in status), None when nothing was applied."""
    reported: dict[str, Any] = {
        "name": observed.name or "",
        "retention_days": (
            observed.retention_days if observed.retention_days is not None else applied_retention
        ),
        "data_source": (
            SourceFields.of(observed.data_source_type, observed.data_source_options)
            if observed.data_source_type is not None
            else None
        ),
        "tags": dict(observed.tags),
        "resource_group_id": observed.resource_group_id,
    }
    if observed.size is not None:
        reported["size"] = observed.size
    return reported


def delta(wanted: CacheFields, observed: ObservedCache, applied_retention: int | None) -> CacheFields:
    """The wanted fields that differ from the observed cache, field by field; a field the
    wish leaves unset is not compared."""
    reported = reported_fields(observed, applied_retention)
    changed = {
        f.name: value
        for f in fields(wanted)
        if (value := getattr(wanted, f.name)) is not None
        and f.name in reported
        and _comparable(value) != _comparable(reported[f.name])
    }
    return replace(CacheFields(), **changed)


def _comparable(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value
