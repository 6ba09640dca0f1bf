"""The emulated cloud's data: caches per region, the virtual clock and the phase schedule.

Time is virtual: ``now = wall clock + offset``, and ``POST /_emulator/clock/advance`` grows
the offset. Phases (Creating, Loading, Updating, Deleting) last their cloud duration times
``time_scale``. Retention is not scaled: ``ExpireDateTime`` is always ``CreationTime +
RetentionDays`` as the cloud shows it, and tests reach it by advancing the clock.

Transitions are not driven by timers: every read first *settles* the state, applying in
time order all transitions whose moment has passed. So advancing the clock makes loading
and expiry happen at once, and the outcome does not depend on how busy the machine is.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import CloudDurations
from .outcomes import Outcome, RuleBook, SourceAssessment, size_failure
from .wire import redact_options

log = logging.getLogger(__name__)

CREATING, LOADING, AVAILABLE, FAILED = "Creating", "Loading", "Available", "Failed"
UPDATING, UPDATE_FAILED, DELETING = "Updating", "UpdateFailed", "Deleting"
UPDATABLE_STATUSES = frozenset({AVAILABLE, UPDATE_FAILED})
DELETABLE_STATUSES = frozenset({AVAILABLE, FAILED, UPDATE_FAILED})
SECONDS_PER_DAY = 86_400
MAX_EVENTS_PER_CACHE = 50
STATE_FORMAT_VERSION = 1
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


# Describe renders the same timestamps over and over; formatting them dominated its cost.
@functools.lru_cache(maxsize=65_536)
def format_minute(epoch_seconds: float) -> str:
    """Cache times as the API shows them: ``2023-06-16T02:43Z``."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


@functools.lru_cache(maxsize=65_536)
def format_second(epoch_seconds: float) -> str:
    """Event times as the API shows them: ``2021-06-16T02:24:48Z``."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class VirtualClock:
    def __init__(self, offset: float = 0.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.offset = offset
        self._wall_clock = wall_clock

    def now(self) -> float:
        return self._wall_clock() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


class IdFactory:
    """Ids like the cloud's (``edc-`` + lowercase letters and digits); reproducible with a seed."""

    def __init__(self, seed: int | None, issued: int = 0) -> None:
        self._seed = seed
        self.issued = issued

    def new(self, prefix: str, length: int = 20) -> str:
        self.issued += 1
        if self._seed is None:
            raw = secrets.token_bytes(16)
        else:
            raw = hashlib.sha256(f"{self._seed}:{self.issued}".encode()).digest()
        number = int.from_bytes(raw, "big")
        characters = []
        for _ in range(length):
            number, digit = divmod(number, 36)
            characters.append(_BASE36[digit])
        return prefix + "".join(characters)


@dataclass
class Event:
    type: str
    reason: str
    message: str
    first: float
    last: float
    count: int = 1
    name: str = "datacache"

    def to_api(self) -> dict[str, Any]:
        return {
            "Type": self.type,
            "Name": self.name,
            "Reason": self.reason,
            "Message": self.message,
            "Count": self.count,
            "FirstTimestamp": format_second(self.first),
            "LastTimestamp": format_second(self.last),
        }


@dataclass
class DataCache:
    data_cache_id: str
    region_id: str
    seq: int
    bucket: str
    path: str
    size: int
    creation_time: float
    status: str
    operation: str  # the load in flight or last done: "create", "copy" or "update"
    name: str | None = None
    resource_group_id: str | None = None
    retention_days: int | None = None
    expire_at: float | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)
    data_source_type: str | None = None
    # Secret option values are never stored: only a fingerprint tells whether a source changed.
    data_source_options: dict[str, str] = field(default_factory=dict)
    data_source_fingerprint: str = ""
    source_description: str = ""
    source_failure: str | None = None
    data_size_gib: int = 0
    network: dict[str, Any] = field(default_factory=dict)
    container_group_id: str = ""
    snapshot_id: str | None = None
    flash_snapshot_id: str | None = None
    phase_started_at: float | None = None
    phase_ends_at: float | None = None
    progress: int = 0
    copied_from: dict[str, str] | None = None
    events: list[Event] = field(default_factory=list)
    last_matched_time: float | None = None  # a container group last got it (CreateContainerGroup)

    def rule_fields(self) -> dict[str, str | None]:
        return {
            "dataCacheId": self.data_cache_id,
            "name": self.name,
            "path": self.path,
            "bucket": self.bucket,
            "regionId": self.region_id,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataCache:
        data = dict(data)
        data["events"] = [Event(**event) for event in data.get("events", [])]
        data["tags"] = [tuple(tag) for tag in data.get("tags", [])]
        return cls(**data)


@dataclass
class TokenRecord:
    """What a ClientToken was first used for, so a retry gets the same answer."""

    region_id: str
    action: str
    token: str
    fingerprint: str
    response: dict[str, Any]
    data_cache_id: str | None = None


@functools.lru_cache(maxsize=4096)
def _options_json(sorted_options: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(sorted_options), ensure_ascii=False)


def source_fingerprint(source_type: str | None, options: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps([source_type, sorted(options.items())]).encode()).hexdigest()


class CloudState:
    def __init__(
        self,
        *,
        time_scale: float,
        durations: CloudDurations,
        rules: RuleBook,
        seed: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: VirtualClock | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        # One account's cloud. The accounts of an emulator share the clock and the id factory
        # (ids are unique across accounts, as in the cloud), each has its own caches and tokens.
        self.time_scale = time_scale
        self.durations = durations
        self.rules = rules
        self.clock = clock or VirtualClock(wall_clock=wall_clock)
        self.ids = ids or IdFactory(seed)
        self.regions: dict[str, dict[str, DataCache]] = {}
        self.tokens: dict[tuple[str, str, str], TokenRecord] = {}
        self.removed: deque[dict[str, Any]] = deque(maxlen=1000)
        self.revision = 0  # grows on every change; persistence saves when it moved
        self._schedule: list[tuple[float, int, str, str, str]] = []
        self._schedule_order = itertools.count()
        self._next_seq = 1
        self._seed = seed

    # ---- queries -------------------------------------------------------------------------

    def caches(self, region_id: str) -> list[DataCache]:
        # Insertion order is creation order, which paging relies on.
        return list(self.regions.get(region_id, {}).values())

    def all_caches(self) -> Iterator[DataCache]:
        for region in self.regions.values():
            yield from region.values()

    def find(self, region_id: str, data_cache_id: str) -> DataCache | None:
        return self.regions.get(region_id, {}).get(data_cache_id)

    def find_anywhere(self, data_cache_id: str) -> DataCache | None:
        return next((cache for cache in self.all_caches() if cache.data_cache_id == data_cache_id), None)

    def count(self, region_id: str) -> int:
        return len(self.regions.get(region_id, {}))

    # ---- changes -------------------------------------------------------------------------

    def touch(self) -> None:
        self.revision += 1

    def new_cache(
        self,
        *,
        region_id: str,
        bucket: str,
        path: str,
        size: int,
        operation: str,
        source_type: str | None,
        options: dict[str, str],
        assessment: SourceAssessment,
    ) -> DataCache:
        """Register a cache that starts Creating now (a create or the destination of a copy)."""
        now = self.clock.now()
        cache = DataCache(
            data_cache_id=self.ids.new("edc-"),
            region_id=region_id,
            seq=self._next_seq,
            bucket=bucket,
            path=path,
            size=size,
            creation_time=now,
            status=CREATING,
            operation=operation,
            container_group_id=self.ids.new("eci-"),
        )
        self._next_seq += 1
        self.set_source(cache, source_type, options, assessment)
        self.regions.setdefault(region_id, {})[cache.data_cache_id] = cache
        self.add_event(cache, now, "Normal", "Started", "Successfully check data cache resource.")
        creating = self.durations.copy_creating if operation == "copy" else self.durations.creating
        self._begin_phase(cache, CREATING, now, creating)
        self.touch()
        return cache

    def set_source(
        self, cache: DataCache, source_type: str | None, options: dict[str, str], assessment: SourceAssessment
    ) -> None:
        cache.data_source_type = source_type
        cache.data_source_options = redact_options(options)
        cache.data_source_fingerprint = source_fingerprint(source_type, options)
        cache.source_description = assessment.description
        cache.source_failure = assessment.failure
        cache.data_size_gib = assessment.data_size_gib

    def set_retention(self, cache: DataCache, days: int, counted_from: float) -> None:
        cache.retention_days = days
        cache.expire_at = counted_from + days * SECONDS_PER_DAY
        self._schedule_at(cache.expire_at, cache, "expire")
        self.touch()

    def begin_update(self, cache: DataCache) -> None:
        now = self.clock.now()
        cache.operation = "update"
        self.add_event(
            cache, now, "Normal", "Updating", f"Start to update data cache from {cache.source_description}."
        )
        self._begin_phase(cache, UPDATING, now, self.durations.updating)
        self.touch()

    def begin_delete(self, cache: DataCache) -> None:
        now = self.clock.now()
        self.add_event(cache, now, "Normal", "Deleting", "Start to delete data cache.")
        self._begin_phase(cache, DELETING, now, self.durations.deleting)
        self.touch()

    def remove(self, cache: DataCache, reason: str) -> None:
        """The cache is gone: deleted, expired, or removed out of band."""
        region = self.regions.get(cache.region_id, {})
        if region.pop(cache.data_cache_id, None) is None:
            return
        # A token that created or changed a cache that no longer exists is forgotten, so a
        # later create with it makes a new cache (what drift recovery needs); delete tokens stay.
        for key, record in list(self.tokens.items()):
            if record.data_cache_id == cache.data_cache_id and record.action != "DeleteDataCache":
                del self.tokens[key]
        self.removed.append(
            {
                "DataCacheId": cache.data_cache_id,
                "RegionId": cache.region_id,
                "Reason": reason,
                "Time": format_second(self.clock.now()),
            }
        )
        log.info("data cache %s in %s is gone (%s)", cache.data_cache_id, cache.region_id, reason)
        self.touch()

    def add_event(self, cache: DataCache, when: float, kind: str, reason: str, message: str) -> None:
        last = cache.events[-1] if cache.events else None
        if last is not None and last.reason == reason and last.message == message:
            last.count += 1
            last.last = when
            return
        cache.events.append(Event(kind, reason, message, when, when))
        del cache.events[:-MAX_EVENTS_PER_CACHE]

    def reset(self) -> None:
        self.regions.clear()
        self.tokens.clear()
        self.removed.clear()
        self._schedule.clear()
        self.clock.offset = 0.0
        self.touch()

    # ---- time ----------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.touch()
        self.settle()

    def settle(self) -> None:
        """Apply, in time order, every transition whose moment has come."""
        now = self.clock.now()
        while self._schedule and self._schedule[0][0] <= now:
            when, _, region_id, data_cache_id, kind = heapq.heappop(self._schedule)
            cache = self.find(region_id, data_cache_id)
            if cache is None:
                continue
            if kind == "expire":
                if cache.expire_at == when:
                    self.remove(cache, "expired")
            elif cache.phase_ends_at == when:
                self._finish_phase(cache, when)
                self.touch()

    def _scaled(self, cloud_seconds: float) -> float:
        return cloud_seconds * self.time_scale

    def _begin_phase(self, cache: DataCache, status: str, start: float, cloud_seconds: float) -> None:
        cache.status = status
        cache.phase_started_at = start
        cache.phase_ends_at = start + self._scaled(cloud_seconds)
        self._schedule_at(cache.phase_ends_at, cache, "phase")

    def _schedule_at(self, when: float, cache: DataCache, kind: str) -> None:
        entry = (when, next(self._schedule_order), cache.region_id, cache.data_cache_id, kind)
        heapq.heappush(self._schedule, entry)

    def _finish_phase(self, cache: DataCache, when: float) -> None:
        if cache.status == CREATING:
            loading = self.durations.copy_loading if cache.operation == "copy" else self.durations.loading
            source = cache.copied_from["DataCacheId"] if cache.copied_from else cache.source_description
            self.add_event(cache, when, "Normal", "Pulling", f"Start to pull data from {source}.")
            self._begin_phase(cache, LOADING, when, loading)
        elif cache.status in (LOADING, UPDATING):
            self._finish_load(cache, when)
        elif cache.status == DELETING:
            self.remove(cache, "deleted")

    def _finish_load(self, cache: DataCache, when: float) -> None:
        outcome = self._decide(cache)
        if outcome.kind == "stall":
            # Look again one loading period later; removing the rule lets it finish then.
            self._begin_phase(cache, cache.status, when, self.durations.loading)
            cache.phase_started_at = when - self._scaled(self.durations.loading)
            return
        cache.phase_started_at = cache.phase_ends_at = None
        if outcome.kind == "succeed":
            cache.status = AVAILABLE
            cache.progress = 100
            cache.snapshot_id = self.ids.new("s-")
            cache.flash_snapshot_id = self.ids.new("s-")
            done = "updated" if cache.operation == "update" else "created"
            self.add_event(cache, when, "Normal", "Completed", f"Successfully {done} data cache.")
            return
        cache.status = UPDATE_FAILED if cache.operation == "update" else FAILED
        loaded = cache.size * 100 // cache.data_size_gib if cache.data_size_gib > cache.size else 0
        cache.progress = min(99, loaded)
        self.add_event(cache, when, "Warning", "Failed", outcome.message or "Loading failed.")

    def _decide(self, cache: DataCache) -> Outcome:
        ruled = self.rules.decide(cache.rule_fields(), cache.operation)
        if ruled is not None:
            return ruled
        if cache.operation != "copy":
            failure = cache.source_failure or size_failure(cache.data_size_gib, cache.size)
            if failure:
                return Outcome("fail", failure)
        return Outcome("succeed")

    # ---- views ---------------------------------------------------------------------------

    def progress(self, cache: DataCache) -> int:
        if cache.status in (LOADING, UPDATING) and cache.phase_ends_at is not None:
            started = cache.phase_started_at or cache.phase_ends_at
            span = max(cache.phase_ends_at - started, 1e-9)
            return max(0, min(99, int(100 * (self.clock.now() - started) / span)))
        if cache.status == CREATING:
            return 0
        if cache.status == AVAILABLE:
            return 100
        return cache.progress

    def api_view(self, cache: DataCache) -> dict[str, Any]:
        """A cache as DescribeDataCaches returns it; absent values are left out."""
        view: dict[str, Any] = {
            "DataCacheId": cache.data_cache_id,
            "RegionId": cache.region_id,
            "Name": cache.name,
            "Bucket": cache.bucket,
            "Path": cache.path,
            "Size": cache.size,
            "ResourceGroupId": cache.resource_group_id,
            "Status": cache.status,
            "Progress": f"{self.progress(cache)}%",
            "CreationTime": format_minute(cache.creation_time),
            "ExpireDateTime": format_minute(cache.expire_at) if cache.expire_at is not None else None,
            "LastMatchedTime": format_second(cache.last_matched_time)
            if cache.last_matched_time is not None
            else None,
            "ContainerGroupId": cache.container_group_id,
            "SnapshotId": cache.snapshot_id,
            "FlashSnapshotId": cache.flash_snapshot_id,
            "Tags": [{"Key": key, "Value": value} for key, value in cache.tags],
            "Events": [event.to_api() for event in cache.events],
        }
        if cache.data_source_type is not None:
            # The SDK models Options as a string: the cloud sends the map JSON-encoded.
            view["DataSource"] = {
                "Type": cache.data_source_type,
                "Options": _options_json(tuple(sorted(cache.data_source_options.items()))),
            }
        return {key: value for key, value in view.items() if value is not None}

    def admin_view(self, cache: DataCache) -> dict[str, Any]:
        """The API view plus what only the emulator knows (tokens, phase times, data size)."""
        view = self.api_view(cache)
        view["DataSource"] = {"Type": cache.data_source_type, "Options": dict(cache.data_source_options)}
        tokens = [
            {"Action": record.action, "ClientToken": record.token}
            for record in self.tokens.values()
            if record.data_cache_id == cache.data_cache_id
        ]
        view.update(
            {
                "RetentionDays": cache.retention_days,
                "ExpireAt": format_second(cache.expire_at) if cache.expire_at is not None else None,
                "PhaseEndsAt": format_second(cache.phase_ends_at)
                if cache.phase_ends_at is not None
                else None,
                "DataSizeGiB": cache.data_size_gib,
                "SourceProblem": cache.source_failure,
                "Network": dict(cache.network),
                "CopiedFrom": cache.copied_from,
                "ClientTokens": tokens,
            }
        )
        return view

    # ---- persistence ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_FORMAT_VERSION,
            "clockOffset": self.clock.offset,
            "nextSeq": self._next_seq,
            "idsIssued": self.ids.issued,
            "caches": [cache.to_json() for cache in self.all_caches()],
            "tokens": [asdict(record) for record in self.tokens.values()],
        }

    def load_json(self, data: dict[str, Any]) -> None:
        if data.get("version") != STATE_FORMAT_VERSION:
            raise ValueError(f"unsupported state file version {data.get('version')!r}")
        self.reset()
        self.clock.offset = float(data["clockOffset"])
        self._next_seq = int(data["nextSeq"])
        self.ids.issued = max(self.ids.issued, int(data["idsIssued"]))
        for item in sorted(data["caches"], key=lambda item: item["seq"]):
            cache = DataCache.from_json(item)
            self.regions.setdefault(cache.region_id, {})[cache.data_cache_id] = cache
            if cache.phase_ends_at is not None:
                self._schedule_at(cache.phase_ends_at, cache, "phase")
            if cache.expire_at is not None:
                self._schedule_at(cache.expire_at, cache, "expire")
        for item in data["tokens"]:
            record = TokenRecord(**item)
            self.tokens[(record.region_id, record.action, record.token)] = record
        self.settle()
