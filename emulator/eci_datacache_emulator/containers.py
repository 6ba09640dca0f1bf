"""The container-group side of ECI that a virtual node needs: CreateContainerGroup,
DescribeContainerGroups (batched) and DeleteContainerGroup, with the data cache parameters
(`DataCacheBucket`, `DataCachePL`, `DataCacheProvisionedIops`, `DataCacheBurstingEnabled`) and
`HostPathVolume`s, to the same wire fidelity as the DataCache operations.

Choices where ECI documents nothing, made visible as container-group events:

* A group is ``Pending`` for ``CloudDurations.container_starting`` (scaled), then ``Running``.
  With ``RestartPolicy`` ``Never`` or ``OnFailure`` (a Job's pod) its containers exit 0 after
  ``CloudDurations.container_running`` and it is ``Succeeded``; with ``Always`` (the default) it
  runs until deleted. Delete removes it at once.
* Each ``HostPathVolume`` is matched, at create, against the caches of the region in the group's
  bucket (``DataCacheBucket``, default ``default``) with exactly that path:
  an ``Available`` cache is the volume's data (event ``Normal DataCacheMatched`` naming it; the
  group gets a disk of its own from the snapshot, ``DataCachePL`` or PL1, released with the
  group; the cache's ``LastMatchedTime`` moves); no cache at that path: an empty directory
  (``Warning DataCacheNotFound``); a cache still building (``Creating``, ``Loading``,
  ``Updating``): an empty directory (``Warning DataCacheNotReady``); any other status
  (``Failed``, ``UpdateFailed``, ``Deleting``): an empty directory (``Warning
  DataCacheUnavailable``). The group starts in every case, as a hostPath that is not a cache is
  an ordinary directory.
* ``ClientToken`` as for the DataCache operations: scoped to (region, action), the same
  parameters give the first answer, others ``IdempotentParameterMismatch``.
* Unknown ``ContainerGroupId`` on Delete: 404 ``InvalidContainerGroup.NotFound``; Describe leaves
  unknown ids out. At most 20 ids a Describe (``ContainerGroupIds``, a JSON array).

Container groups live in memory only (not in the state file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, invalid_parameter, missing_parameter
from .state import AVAILABLE, CREATING, LOADING, UPDATING, CloudState, DataCache, Event, format_second
from .wire import Parameters

DEFAULT_BUCKET = "default"
PENDING, RUNNING, SUCCEEDED = "Pending", "Running", "Succeeded"
RESTART_POLICIES = ("Always", "Never", "OnFailure")
DISK_LEVELS = ("PL0", "PL1", "PL2", "PL3")
MAX_IDS_PER_DESCRIBE = 20
DESCRIBE_LIMIT_RANGE = (1, 20)
VOLUME_TYPES = (
    "HostPathVolume",
    "EmptyDirVolume",
    "ConfigFileVolume",
    "NFSVolume",
    "DiskVolume",
    "FlexVolume",
)
BUILDING = (CREATING, LOADING, UPDATING)


@dataclass
class MatchedCache:
    """A hostPath volume that got a cache's data: which cache and the group's own disk of it."""

    volume: str
    data_cache_id: str
    path: str
    disk_gib: int
    performance_level: str


@dataclass
class ContainerGroup:
    container_group_id: str
    region_id: str
    seq: int
    name: str
    creation_time: float
    restart_policy: str
    containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    bucket: str
    performance_level: str
    provisioned_iops: int | None
    bursting: bool
    tags: list[tuple[str, str]]
    running_at: float
    succeeded_at: float | None
    matched: list[MatchedCache] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def status(self, now: float) -> str:
        if self.succeeded_at is not None and now >= self.succeeded_at:
            return SUCCEEDED
        return RUNNING if now >= self.running_at else PENDING


class ContainerGroupService:
    def __init__(self, state: CloudState, once: Callable[..., dict[str, Any]]) -> None:
        self.state = state
        self._once = once  # the DataCache service's ClientToken bookkeeping
        self.groups: dict[str, dict[str, ContainerGroup]] = {}
        self._next_seq = 1
        self.actions: dict[str, Callable[[Parameters], dict[str, Any]]] = {
            "CreateContainerGroup": self.create,
            "DescribeContainerGroups": self.describe,
            "DeleteContainerGroup": self.delete,
        }

    def reset(self) -> None:
        self.groups.clear()

    # ---- operations ----------------------------------------------------------------------

    def create(self, params: Parameters) -> dict[str, Any]:
        from .operations import _client_token, _region

        region = _region(params, "RegionId")
        token = _client_token(params)
        name = params.text("ContainerGroupName", required=True, max_length=128)
        assert name is not None
        restart_policy = params.text("RestartPolicy") or "Always"
        if restart_policy not in RESTART_POLICIES:
            raise invalid_parameter("RestartPolicy", f"It must be one of {', '.join(RESTART_POLICIES)}.")
        volumes = _volumes(params)
        containers = _containers(params, {v["Name"] for v in volumes})
        level = params.text("DataCachePL") or "PL1"
        if level not in DISK_LEVELS:
            raise invalid_parameter("DataCachePL", f"It must be one of {', '.join(DISK_LEVELS)}.")
        iops = params.integer("DataCacheProvisionedIops", minimum=0, maximum=50_000)
        bursting = (params.text("DataCacheBurstingEnabled") or "false").lower() == "true"
        bucket = params.text("DataCacheBucket") or DEFAULT_BUCKET
        tags = params.tags()

        def perform() -> tuple[dict[str, Any], str | None]:
            group = self._new_group(region, name, restart_policy, containers, volumes, tags)
            group.bucket, group.performance_level = bucket, level
            group.provisioned_iops, group.bursting = iops, bursting
            self._match_caches(group)
            return {"ContainerGroupId": group.container_group_id}, None

        return self._once(region, "CreateContainerGroup", token, params, perform)

    def describe(self, params: Parameters) -> dict[str, Any]:
        from .operations import _decode_next_token, _encode_next_token, _region

        region = _region(params, "RegionId")
        ids = _id_list(params.text("ContainerGroupIds"))
        limit = params.integer("Limit", minimum=DESCRIBE_LIMIT_RANGE[0], maximum=DESCRIBE_LIMIT_RANGE[1])
        limit = limit or DESCRIBE_LIMIT_RANGE[1]
        wanted_name = params.text("ContainerGroupName")
        wanted_status = params.text("Status")
        wanted_tags = params.tags()
        after = _decode_next_token(params.text("NextToken"))
        now = self.state.clock.now()

        def selected(group: ContainerGroup) -> bool:
            if ids and group.container_group_id not in ids:
                return False
            if wanted_name is not None and group.name != wanted_name:
                return False
            if wanted_status is not None and group.status(now) != wanted_status:
                return False
            tags = dict(group.tags)
            return all(key in tags and (not value or tags[key] == value) for key, value in wanted_tags)

        matching = [g for g in self.groups.get(region, {}).values() if selected(g)]
        remaining = [g for g in matching if g.seq > after]
        page = remaining[:limit]
        return {
            "TotalCount": len(matching),
            "NextToken": _encode_next_token(page[-1].seq) if len(remaining) > limit else "",
            "ContainerGroups": [self._api_view(group, now) for group in page],
        }

    def delete(self, params: Parameters) -> dict[str, Any]:
        from .operations import _region

        region = _region(params, "RegionId")
        group_id = params.text("ContainerGroupId", required=True)
        assert group_id is not None
        if self.groups.get(region, {}).pop(group_id, None) is None:
            raise ApiError(
                404,
                "InvalidContainerGroup.NotFound",
                f"The container group {group_id} does not exist in region {region}.",
            )
        self.state.touch()
        return {}

    # ---- the data cache ----------------------------------------------------------------

    def _new_group(
        self,
        region: str,
        name: str,
        restart_policy: str,
        containers: list[dict[str, Any]],
        volumes: list[dict[str, Any]],
        tags: list[tuple[str, str]],
    ) -> ContainerGroup:
        now = self.state.clock.now()
        durations = self.state.durations
        running_at = now + self.state._scaled(durations.container_starting)
        runs_to_the_end = restart_policy in ("Never", "OnFailure")
        group = ContainerGroup(
            container_group_id=self.state.ids.new("eci-"),
            region_id=region,
            seq=self._next_seq,
            name=name,
            creation_time=now,
            restart_policy=restart_policy,
            containers=containers,
            volumes=volumes,
            bucket=DEFAULT_BUCKET,
            performance_level="PL1",
            provisioned_iops=None,
            bursting=False,
            tags=tags,
            running_at=running_at,
            succeeded_at=running_at + self.state._scaled(durations.container_running)
            if runs_to_the_end
            else None,
        )
        self._next_seq += 1
        self.groups.setdefault(region, {})[group.container_group_id] = group
        self._event(group, now, "Normal", "Scheduled", f"Successfully assigned {name} to an instance.")
        self.state.touch()
        return group

    def _match_caches(self, group: ContainerGroup) -> None:
        now = group.creation_time
        caches = [c for c in self.state.caches(group.region_id) if c.bucket == group.bucket]
        for volume in group.volumes:
            path = volume.get("HostPathVolume.Path")
            if volume["Type"] != "HostPathVolume" or not path:
                continue
            cache = _cache_at(caches, path)
            where = f"bucket {group.bucket}, path {path}"
            if cache is None:
                self._event(
                    group,
                    now,
                    "Warning",
                    "DataCacheNotFound",
                    f"No data cache at {where}: an empty directory.",
                )
            elif cache.status == AVAILABLE:
                group.matched.append(
                    MatchedCache(
                        volume["Name"], cache.data_cache_id, path, cache.size, group.performance_level
                    )
                )
                cache.last_matched_time = now
                self._event(
                    group,
                    now,
                    "Normal",
                    "DataCacheMatched",
                    f"Data cache {cache.data_cache_id} at {where} mounted from a {cache.size} GiB "
                    f"{group.performance_level} disk of its own.",
                )
            else:
                reason = "DataCacheNotReady" if cache.status in BUILDING else "DataCacheUnavailable"
                self._event(
                    group,
                    now,
                    "Warning",
                    reason,
                    f"Data cache {cache.data_cache_id} at {where} is {cache.status}: an empty directory.",
                )

    def _event(self, group: ContainerGroup, when: float, kind: str, reason: str, message: str) -> None:
        group.events.append(Event(kind, reason, message, when, when, name=group.name))

    # ---- views --------------------------------------------------------------------------

    def _api_view(self, group: ContainerGroup, now: float) -> dict[str, Any]:
        status = group.status(now)
        events = list(group.events)
        if now >= group.running_at:
            events.append(
                Event("Normal", "Started", "Started the containers.", group.running_at, group.running_at)
            )
        if status == SUCCEEDED and group.succeeded_at is not None:
            at = group.succeeded_at
            events.append(Event("Normal", "Completed", "The containers exited 0.", at, at))
        state = {"Pending": "Waiting", "Running": "Running", "Succeeded": "Terminated"}[status]
        view: dict[str, Any] = {
            "ContainerGroupId": group.container_group_id,
            "ContainerGroupName": group.name,
            "RegionId": group.region_id,
            "Status": status,
            "RestartPolicy": group.restart_policy,
            "CreationTime": format_second(group.creation_time),
            "Containers": [
                {
                    **container,
                    "Ready": status == RUNNING,
                    "RestartCount": 0,
                    "CurrentState": {
                        "State": state,
                        **({"StartTime": format_second(group.running_at)} if now >= group.running_at else {}),
                        **(
                            {"ExitCode": 0, "Reason": "Completed", "FinishTime": format_second(now)}
                            if status == SUCCEEDED
                            else {}
                        ),
                    },
                }
                for container in group.containers
            ],
            "Volumes": [{"Name": v["Name"], "Type": v["Type"]} for v in group.volumes],
            "Tags": [{"Key": key, "Value": value} for key, value in group.tags],
            "Events": [event.to_api() for event in events],
        }
        if status == SUCCEEDED and group.succeeded_at is not None:
            view["SucceededTime"] = format_second(group.succeeded_at)
        return view

    def admin_view(self, group: ContainerGroup) -> dict[str, Any]:
        """The API view plus what the API does not show: the bucket, the hostPath volumes'
        paths and the caches they got."""
        view = self._api_view(group, self.state.clock.now())
        view["DataCacheBucket"] = group.bucket
        view["DataCachePL"] = group.performance_level
        view["HostPaths"] = {
            v["Name"]: v["HostPathVolume.Path"] for v in group.volumes if v["Type"] == "HostPathVolume"
        }
        view["MatchedDataCaches"] = [
            {"Volume": m.volume, "DataCacheId": m.data_cache_id, "Path": m.path, "DiskGiB": m.disk_gib}
            for m in group.matched
        ]
        return view


def _cache_at(caches: list[DataCache], path: str) -> DataCache | None:
    """The cache a pod gets at a path: an Available one first, else the newest."""
    at = [c for c in caches if c.path == path]
    available = [c for c in at if c.status == AVAILABLE]
    chosen = available or at
    return max(chosen, key=lambda c: c.seq) if chosen else None


def _id_list(text: str | None) -> set[str]:
    if not text:
        return set()
    try:
        ids = json.loads(text)
    except ValueError:
        raise invalid_parameter("ContainerGroupIds", "It must be a JSON array of ids.") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid_parameter("ContainerGroupIds", "It must be a JSON array of ids.")
    if len(ids) > MAX_IDS_PER_DESCRIBE:
        raise invalid_parameter("ContainerGroupIds", f"At most {MAX_IDS_PER_DESCRIBE} ids per call.")
    return set(ids)


def _volumes(params: Parameters) -> list[dict[str, Any]]:
    volumes = []
    for index, fields in params.indexed("Volume").items():
        name, kind = fields.get("Name"), fields.get("Type")
        if not name:
            raise missing_parameter(f"Volume.{index}.Name")
        if kind not in VOLUME_TYPES:
            raise invalid_parameter(f"Volume.{index}.Type", f"It must be one of {', '.join(VOLUME_TYPES)}.")
        if kind == "HostPathVolume":
            path = fields.get("HostPathVolume.Path") or ""
            if not path.startswith("/"):
                raise invalid_parameter(f"Volume.{index}.HostPathVolume.Path", "It must be an absolute path.")
        volumes.append({"Name": name, "Type": kind, **{k: v for k, v in fields.items() if "." in k}})
    names = [v["Name"] for v in volumes]
    if len(set(names)) != len(names):
        raise invalid_parameter("Volume.N.Name", "Volume names must be unique.")
    return volumes


def _containers(params: Parameters, volume_names: set[str]) -> list[dict[str, Any]]:
    containers = []
    for index, fields in params.indexed("Container").items():
        name, image = fields.get("Name"), fields.get("Image")
        if not name:
            raise missing_parameter(f"Container.{index}.Name")
        if not image:
            raise missing_parameter(f"Container.{index}.Image")
        mounts = _nested(fields, "VolumeMount")
        for n, mount in mounts.items():
            if mount.get("Name") not in volume_names:
                raise invalid_parameter(
                    f"Container.{index}.VolumeMount.{n}.Name", "It must name a volume of the group."
                )
        containers.append(
            {
                "Name": name,
                "Image": image,
                "VolumeMounts": [
                    {
                        "Name": m["Name"],
                        "MountPath": m.get("MountPath", ""),
                        "ReadOnly": (m.get("ReadOnly") or "false").lower() == "true",
                    }
                    for m in mounts.values()
                ],
            }
        )
    if not containers:
        raise missing_parameter("Container.1.Name")
    return containers


def _nested(fields: dict[str, str], prefix: str) -> dict[int, dict[str, str]]:
    """``VolumeMount.2.MountPath=/m`` in a list item's fields -> ``{2: {"MountPath": "/m"}}``."""
    return Parameters(fields).indexed(prefix)
