"""Plain values crossing the cloud boundary: what we ask ECI for, and what ECI reports.

No SDK types leak out of the cloud layer: handlers and reconcile code see these models
only. Request models omit every field left ``None`` so that ECI applies its own defaults
and an update sends just the fields that changed.

Data source options may hold tokens and keys (``accessToken``, ``akSecret``...), so every
options field is excluded from ``repr()``: a model printed in a log line shows the keys
only (see :func:`redacted_options`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datacache_operator.cloud.errors import scrub

# ---- cloud statuses ------------------------------------------------------------------

STATUS_CREATING = "Creating"
STATUS_LOADING = "Loading"
STATUS_AVAILABLE = "Available"
STATUS_FAILED = "Failed"
STATUS_UPDATING = "Updating"
STATUS_UPDATE_FAILED = "UpdateFailed"
STATUS_DELETING = "Deleting"  # undocumented, seen in public client code after DeleteDataCache

#: The cache is changing: ECI rejects updates (``IncorrectStatus``) and a poll should be fast.
BUSY_STATUSES = frozenset({STATUS_CREATING, STATUS_LOADING, STATUS_UPDATING, STATUS_DELETING})
#: Final failures: only a new spec (update) or a delete changes them.
TERMINAL_FAILURE_STATUSES = frozenset({STATUS_FAILED, STATUS_UPDATE_FAILED})
#: States from which UpdateDataCache is accepted.
UPDATABLE_STATUSES = frozenset({STATUS_AVAILABLE, STATUS_UPDATE_FAILED})

# Option keys whose values are credentials. Matched case-insensitively on the key.
_SENSITIVE_OPTION_KEY = re.compile(r"token|secret|password|passwd|credential|akid|accesskey|(^|_)key$", re.I)


def is_sensitive_option(key: str) -> bool:
    return bool(_SENSITIVE_OPTION_KEY.search(key))


def redacted_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options with credential values replaced by ``***`` (for logs and status)."""
    return {k: ("***" if is_sensitive_option(k) else v) for k, v in options.items()}


def sensitive_values(options: Mapping[str, str] | None) -> list[str]:
    """Values that must never be echoed (used to scrub error messages)."""
    return [v for k, v in (options or {}).items() if v and is_sensitive_option(k)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- requests ------------------------------------------------------------------------


class DataSource(_Frozen):
    type: str = Field(description="URL, OSS, NAS or SNAPSHOT")
    options: dict[str, str] = Field(default_factory=dict, repr=False)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "type", self.type
        yield "options", redacted_options(self.options)


class EipCreateParam(_Frozen):
    bandwidth: int | None = None
    common_bandwidth_package: str | None = None
    internet_charge_type: str | None = None
    public_ip_address_pool_id: str | None = None
    isp: str | None = None


class NetConfig(_Frozen):
    """Network of the temporary instance that builds the cache."""

    security_group_id: str | None = None
    v_switch_id: str | None = None
    eip_instance_id: str | None = None
    eip_create_param: EipCreateParam | None = None


class CreateRequest(_Frozen):
    """CreateDataCache fields (the region and ClientToken are call arguments)."""

    path: str
    bucket: str | None = None
    name: str | None = None
    size: int | None = None
    retention_days: int | None = None
    data_source: DataSource | None = None
    net_config: NetConfig | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    resource_group_id: str | None = None


class UpdateRequest(_Frozen):
    """UpdateDataCache fields; ``None`` = unchanged. Path and region cannot change."""

    bucket: str | None = None
    name: str | None = None
    size: int | None = None
    retention_days: int | None = None
    data_source: DataSource | None = None
    net_config: NetConfig | None = None
    tags: dict[str, str] | None = None
    resource_group_id: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.model_dump(exclude_none=True)


class CopyRequest(_Frozen):
    """CopyDataCache fields describing the new cache in ``destination_region``."""

    destination_region: str
    bucket: str | None = None
    path: str | None = None
    name: str | None = None
    retention_days: int | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    resource_group_id: str | None = None


# ---- observations --------------------------------------------------------------------


class CacheEvent(_Frozen):
    type: str | None = None
    name: str | None = None
    reason: str | None = None
    message: str | None = None
    count: int | None = None
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None


class ObservedCache(_Frozen):
    """One data cache as DescribeDataCaches reports it (see :meth:`from_api`)."""

    data_cache_id: str
    region: str
    name: str | None = None
    bucket: str | None = None
    path: str | None = None
    size: int | None = None
    status: str | None = None
    progress: str | None = None
    creation_time: datetime | None = None
    expire_time: datetime | None = None
    last_matched_time: datetime | None = None
    # Only when ECI states it: DescribeDataCaches documents no RetentionDays field. See
    # `retention_days_estimate` for the value derived from the times.
    retention_days: int | None = None
    data_source_type: str | None = None
    data_source_options: dict[str, str] = Field(default_factory=dict, repr=False)
    tags: dict[str, str] = Field(default_factory=dict)
    resource_group_id: str | None = None
    snapshot_id: str | None = None
    container_group_id: str | None = None
    events: tuple[CacheEvent, ...] = ()
    last_event_message: str | None = None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        yield "data_source_options", redacted_options(self.data_source_options)

    @property
    def progress_percent(self) -> float | None:
        return _parse_percent(self.progress)

    @property
    def retention_days_estimate(self) -> int | None:
        """``expire_time - creation_time`` in whole days. An estimate for display only:
        whether ECI counts retention from creation, from the last update or from the last
        use is undocumented, so after an update this can differ from the days that were
        set. Never diff it against a spec (that would re-send the update forever)."""
        return (
            self.retention_days
            if self.retention_days is not None
            else _retention_days(self.creation_time, self.expire_time)
        )

    @classmethod
    def from_api(cls, item: Mapping[str, Any], region: str) -> ObservedCache:
        """Build from one ``DataCaches[]`` element (PascalCase keys, as on the wire or from
        the SDK model's ``to_map()``). Every field is parsed tolerantly: wrong types and
        odd time formats become ``None`` rather than failing the whole read."""
        data_source = item.get("DataSource") or {}
        if not isinstance(data_source, Mapping):
            data_source = {}
        events = tuple(_parse_event(e) for e in (item.get("Events") or []) if isinstance(e, Mapping))
        return cls(
            data_cache_id=str(item.get("DataCacheId") or ""),
            region=_str(item.get("RegionId")) or region,
            name=_str(item.get("Name")),
            bucket=_str(item.get("Bucket")),
            path=_str(item.get("Path")),
            size=_int(item.get("Size")),
            status=_str(item.get("Status")),
            progress=_str(item.get("Progress")),
            creation_time=parse_time(item.get("CreationTime")),
            expire_time=parse_time(item.get("ExpireDateTime")),
            last_matched_time=parse_time(item.get("LastMatchedTime")),
            retention_days=_int(item.get("RetentionDays")),
            data_source_type=_str(data_source.get("Type")),
            data_source_options=parse_options(data_source.get("Options")),
            tags=_parse_tags(item.get("Tags")),
            resource_group_id=_str(item.get("ResourceGroupId")),
            snapshot_id=_str(item.get("SnapshotId")),
            container_group_id=_str(item.get("ContainerGroupId")),
            events=events,
            last_event_message=_newest_message(events),
        )


# ---- tolerant parsing ----------------------------------------------------------------


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text != "" else None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _parse_percent(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value.strip().rstrip("%"))
    except ValueError:
        return None


def parse_time(value: Any) -> datetime | None:
    """ECI times: ``2023-06-16T02:43Z`` (minutes), ``2021-06-16T02:24:48Z``, with offsets or
    fractions, or epoch seconds/milliseconds. Naive values are UTC. Anything else: None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if text.isdigit():
        return parse_time(int(text))
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _retention_days(created: datetime | None, expires: datetime | None) -> int | None:
    if created is None or expires is None or expires <= created:
        return None
    # Minute-precision timestamps: round to the nearest whole day.
    return round((expires - created) / timedelta(days=1))


def parse_options(value: Any) -> dict[str, str]:
    """``DataSource.Options``: typed ``str`` in the SDK (JSON text), but accept an object,
    and the documented nested form ``{"options": {...}, "type": "NAS"}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    inner = value.get("options")
    if isinstance(inner, Mapping) and set(value) <= {"options", "type", "Type", "Options"}:
        value = inner
    elif isinstance(value.get("Options"), Mapping):
        value = value["Options"]
    return {
        str(k): ("" if v is None else v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()
    }


def _parse_tags(value: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    for tag in value or []:
        if isinstance(tag, Mapping) and tag.get("Key") is not None:
            tags[str(tag["Key"])] = "" if tag.get("Value") is None else str(tag["Value"])
    return tags


def _parse_event(event: Mapping[str, Any]) -> CacheEvent:
    return CacheEvent(
        type=_str(event.get("Type")),
        name=_str(event.get("Name")),
        reason=_str(event.get("Reason")),
        # ECI's build messages quote the data source (URLs with their credentials or tokens):
        # they go to status and events, so only scrubbed.
        message=scrub(_str(event.get("Message"))) or None,
        count=_int(event.get("Count")),
        first_timestamp=parse_time(event.get("FirstTimestamp")),
        last_timestamp=parse_time(event.get("LastTimestamp")),
    )


def _newest_message(events: tuple[CacheEvent, ...]) -> str | None:
    """Message of the newest event: by timestamp when there are any, else the last listed."""
    if not events:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    newest = max(
        enumerate(events),
        key=lambda pair: (pair[1].last_timestamp or pair[1].first_timestamp or oldest, pair[0]),
    )[1]
    return newest.message
