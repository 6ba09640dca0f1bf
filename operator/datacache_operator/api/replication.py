"""The DataCacheReplication kind: copies of one ECI data cache in other regions (CopyDataCache).

The source is a DataCache in the same namespace or a raw cache id plus its region; each
destination is one region with the copy's own bucket, path, name, retention and tags
(unset ones default to the source's where CopyDataCache allows).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from datacache_operator import API_VERSION, GROUP, VERSION
from datacache_operator.api.common import (
    DATACACHE_REPLICATIONS,
    DESTINATION_REGION_TAG,
    MAX_CLOUD_NAME_LENGTH,
    OWNER_TAG_KEYS,
    REGION_PATTERN,
    RESERVED_BUCKET,
    ApiModel,
    CloudTags,
    Condition,
    ConditionType,
    DeletionPolicy,
    ObjectMeta,
    cloud_tags_field,
    conditions_schema_extra,
)
from datacache_operator.api.schema import (
    AGE_COLUMN,
    PrinterColumn,
    ResourceDefinition,
    cel_rule,
    cel_rules,
    condition_column,
)

KIND = "DataCacheReplication"
PLURAL = DATACACHE_REPLICATIONS
MAX_DESTINATIONS = 32
MAX_REGION_LENGTH = 64
# The tags the operator puts on each copy besides the user's (reconcile/replication.py).
COPY_TAG_KEYS = (*OWNER_TAG_KEYS, DESTINATION_REGION_TAG)


class DataCacheRef(ApiModel):
    """A DataCache in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the DataCache.")


class ReplicationSource(ApiModel):
    """The cache to copy: a DataCache of this namespace, or a raw cache id with its region."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "has(self.dataCacheRef) != has(self.dataCacheId)",
                "set exactly one of dataCacheRef or dataCacheId",
            ),
            cel_rule(
                "!has(self.dataCacheId) || has(self.region)",
                "region is required with dataCacheId",
                ".region",
            ),
            cel_rule(
                "!has(self.dataCacheRef) || !has(self.region)",
                "region comes from the referenced DataCache; set it only with dataCacheId",
                ".region",
            ),
        )
    )

    data_cache_ref: DataCacheRef | None = Field(
        default=None, description="A DataCache in the same namespace; excludes dataCacheId."
    )
    data_cache_id: str | None = Field(
        default=None,
        min_length=1,
        description="ID of a cloud cache (edc-...) to copy; needs region, excludes dataCacheRef.",
    )
    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        max_length=MAX_REGION_LENGTH,
        description="Region of dataCacheId, e.g. cn-hongkong.",
    )


class ReplicationDestination(ApiModel):
    """One copy of the source in another region."""

    region: str = Field(
        pattern=REGION_PATTERN,
        max_length=MAX_REGION_LENGTH,
        description="Region of the copy, e.g. cn-beijing; unique in the list and not the source's.",
    )
    bucket: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="ECI bucket of the copy; defaults to the source's. Like a DataCache's, one of the "
        "namespace's buckets: its own, or one an administrator assigned to it.",
        json_schema_extra=cel_rules(
            cel_rule(f"self != '{RESERVED_BUCKET}'", f"bucket {RESERVED_BUCKET} is reserved by ECI")
        ),
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="Path of the copy in the bucket, starting with '/'; defaults to the source's.",
        json_schema_extra=cel_rules(cel_rule("self.startsWith('/')", "path must start with '/'")),
    )
    name: str | None = Field(
        default=None,
        max_length=MAX_CLOUD_NAME_LENGTH,
        description="Display name of the copy, at most 128 characters; defaults to the source's.",
    )
    retention_days: int | None = Field(
        default=None, ge=1, description="Days before ECI deletes the copy; unset keeps it."
    )
    tags: CloudTags = cloud_tags_field("copy", COPY_TAG_KEYS)
    resource_group_id: str | None = Field(default=None, description="Resource group of the copy.")


class DataCacheReplicationSpec(ApiModel):
    """Desired copies of one data cache."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!has(self.source.region) || self.destinations.all(d, d.region != self.source.region)",
                "a destination region must differ from the source region",
                ".destinations",
            ),
        )
    )

    source: ReplicationSource = Field(description="The cache to copy.")
    destinations: list[ReplicationDestination] = Field(
        min_length=1,
        max_length=MAX_DESTINATIONS,
        description="Regions to copy the cache to, one entry per region. Removing an entry removes its "
        "copy (per deletionPolicy).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["region"]},
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete removes the copies with the object (or with their destination entry), Retain "
        "leaves them. Unset uses the operator's default.",
    )


class _CopyFields(ApiModel):
    """What the status records of one copy, the serving one or another."""

    data_cache_id: str | None = Field(default=None, description="ID of the copy (edc-...).")
    status: str | None = Field(
        default=None, description="Cloud status of the copy: Creating, Loading, Available, Failed..."
    )
    reason: str | None = Field(default=None, description="Why the copy is in this state, CamelCase.")
    message: str | None = Field(default=None, description="Details of the state, for humans.")
    bucket: str | None = Field(default=None, description="ECI bucket of the copy, as ECI reports it.")
    path: str | None = Field(
        default=None,
        description="Path of the copy in its bucket, as ECI reports it: what pods in the region mount.",
    )
    source_data_cache_id: str | None = Field(
        default=None, description="ID of the source cache this copy was made from."
    )
    source_revision: str | None = Field(
        default=None,
        description="The source revision this copy holds (see status.sourceRevision); a newer one "
        "refreshes the copy.",
    )
    revision: str | None = Field(
        default=None,
        description="The source DataCache's revision (its status.currentRevision, e.g. r2) this copy "
        "holds; unset for a source given by id.",
    )
    retention_days: int | None = Field(
        default=None, ge=1, description="The retentionDays the operator last applied to the copy."
    )
    copy_generation: int | None = Field(
        default=None,
        ge=0,
        description="How many copies the operator has started for this region; part of the ClientToken, "
        "so a retried copy never makes two.",
    )
    failed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation whose copy failed; a newer spec tries again.",
    )
    last_sync_time: datetime | None = Field(
        default=None,
        description="When the operator last read the copy from the cloud and wrote the status; "
        "a read that finds nothing new leaves it until it is ten stable poll intervals old.",
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the copy's cloud status last changed."
    )


class CopyStatus(_CopyFields):
    """A copy of one destination besides the one its pods get: the copy of the source's new
    revision being made, or one of an earlier revision kept while pods use it."""

    consumers: int | None = Field(
        default=None, ge=0, description="Pods of the region (not yet terminated) bound to this copy."
    )


class DestinationStatus(_CopyFields):
    """Observed state of the copy in one destination region: the one new pods there get."""

    region: str = Field(description="Region of the copy.")
    building: CopyStatus | None = Field(
        default=None,
        description="The copy of the source's new revision, made while this entry's copy keeps serving; "
        "once it is Available this entry switches to it in one status write.",
    )
    previous: list[CopyStatus] | None = Field(
        default=None,
        description="Copies of earlier revisions that pods of the region may still use: each is deleted "
        "(per deletionPolicy) once no pod is bound to it.",
    )


class DataCacheReplicationStatus(ApiModel):
    """Observed state of the copies, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready (every destination Available), Synced and Stalled (True when only a change of "
        "the spec can help).",
        json_schema_extra=conditions_schema_extra(),
    )
    source_data_cache_id: str | None = Field(default=None, description="ID of the resolved source cache.")
    source_region: str | None = Field(default=None, description="Region of the resolved source cache.")
    account: str | None = Field(
        default=None,
        description="The EciAccount whose credentials the copies are made, read and deleted with; empty: "
        "the operator's own. Copies stay in the account they were made in.",
    )
    source_revision: str | None = Field(
        default=None,
        description="Digest of the source's id and data source: it changes when the source is re-created "
        "or loaded from another data source, and each copy records the revision it holds.",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="The last value of the eci.datacache.dev/reconcile-requested-at annotation acted "
        "on; a new value retries failed copies.",
    )
    destinations: list[DestinationStatus] | None = Field(
        default=None, description="One entry per destination region (and per copy still being removed)."
    )
    ready_destinations: str | None = Field(
        default=None, description="Available copies out of the destinations in the spec, e.g. 2/3."
    )
    consumers: int | None = Field(
        default=None,
        ge=0,
        description="Pods (not yet terminated) bound by the webhook to one of the copies; a copy in use "
        "is not deleted. Unset when none ever was.",
    )


class DataCacheReplication(ApiModel):
    """A whole DataCacheReplication object, e.g. parsed from a kopf body."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DataCacheReplicationSpec
    status: DataCacheReplicationStatus = Field(default_factory=DataCacheReplicationStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DataCacheReplication:
        return cls.model_validate(
            {
                "apiVersion": body.get("apiVersion", API_VERSION),
                "kind": body.get("kind", KIND),
                "metadata": dict(body.get("metadata") or {}),
                "spec": dict(body.get("spec") or {}),
                "status": dict(body.get("status") or {}),
            }
        )


DATACACHE_REPLICATION = ResourceDefinition(
    group=GROUP,
    version=VERSION,
    kind=KIND,
    plural=PLURAL,
    singular="datacachereplication",
    short_names=("edcr",),
    # Not the category "datacache": kubectl would expand `kubectl get datacache` (the
    # DataCache singular) to the whole category and refuse it as more than one resource.
    categories=("eci",),
    description="Copies of one Alibaba Cloud ECI data cache in other regions, made with CopyDataCache "
    "once the source is Available.",
    spec_model=DataCacheReplicationSpec,
    status_model=DataCacheReplicationStatus,
    printer_columns=(
        condition_column("Ready", ConditionType.READY, description="Whether every copy is Available."),
        PrinterColumn("Source", ".status.sourceDataCacheId", description="ID of the source cache."),
        PrinterColumn(
            "Destinations", ".status.readyDestinations", description="Available copies out of all."
        ),
        condition_column(
            "Reason", ConditionType.READY, "reason", description="Reason of the Ready condition.", priority=1
        ),
        PrinterColumn(
            "Source Region", ".status.sourceRegion", description="Region of the source.", priority=1
        ),
        PrinterColumn("Account", ".status.account", description="EciAccount of the copies.", priority=1),
        AGE_COLUMN,
    ),
    labels={"app.kubernetes.io/part-of": "eci-datacache-operator"},
)


def cloud_statuses(status: Mapping[str, Any]) -> tuple[str, ...]:
    """The cloud status of each copy, as the metrics count them."""
    return tuple(sorted(d.get("status") or "Unknown" for d in status.get("destinations") or []))
