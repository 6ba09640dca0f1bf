"""The DataCache kind: an ECI data cache (API 2018-08-08) as a Kubernetes object.

Spec field names follow Alibaba's own DataCache CRD (`eci.aliyun.com/v1alpha1`), so a
manifest ports by changing `apiVersion`; the fields it lacks (region, name, tags,
resourceGroupId, dataCacheId, deletionPolicy, dataSource.secretRef) are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from datacache_operator import API_VERSION, GROUP, VERSION
from datacache_operator.api.binding import PodDisk
from datacache_operator.api.common import (  # noqa: F401 - DeletionPolicy, ObjectMeta: part of this kind's API too
    DATACACHES,
    MAX_CLOUD_NAME_LENGTH,
    OWNER_TAG_KEYS,
    REGION_PATTERN,
    RESERVED_BUCKET,
    ApiModel,
    CloudTags,
    Condition,
    ConditionType,
    DeletionPolicy,
    ManagementPolicy,
    ObjectMeta,
    cloud_tags_field,
    conditions_schema_extra,
    duration_seconds,
)
from datacache_operator.api.schema import (
    AGE_COLUMN,
    REQUIRED,
    PrinterColumn,
    ResourceDefinition,
    cel_rule,
    cel_rules,
    condition_column,
)

KIND = "DataCache"
PLURAL = DATACACHES
DEFAULT_SIZE_GIB = 20


class DataSourceType(StrEnum):
    """Kind of source the cache is loaded from. Hugging Face and ModelScope are URL with options.repoSource."""

    URL = "URL"
    OSS = "OSS"
    NAS = "NAS"
    SNAPSHOT = "SNAPSHOT"


class InternetChargeType(StrEnum):
    """Billing of the temporary EIP."""

    PAY_BY_BANDWIDTH = "PayByBandwidth"
    PAY_BY_TRAFFIC = "PayByTraffic"


class Isp(StrEnum):
    """Line type of the temporary EIP."""

    BGP = "BGP"
    BGP_PRO = "BGP_PRO"


class SecretKeyToOption(ApiModel):
    """Takes one key of the Secret as one data source option."""

    key: str = Field(min_length=1, description="Key in the Secret's data.")
    option: str = Field(
        min_length=1,
        description="Option key it becomes in dataSource.options, e.g. accessToken, akId or akSecret.",
    )


class SecretOptionsRef(ApiModel):
    """Reads sensitive data source options from a Secret in the object's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret, in the same namespace as the DataCache.")
    items: list[SecretKeyToOption] | None = Field(
        default=None,
        description="Which Secret keys to use and the option each becomes. When unset, every key of the "
        "Secret is used as an option of the same name (e.g. a Secret with akId and akSecret).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )


class MissingSecretKeyError(KeyError):
    """A key listed in dataSource.secretRef.items is not in the Secret; names the key, never a value."""


REPO_SOURCES = ("HuggingFace/Model", "HuggingFace/DataSet", "ModelScope/Model", "ModelScope/DataSet")
# The options each type needs (docs/architecture.md, ECI facts): any one of the alternatives,
# each a set of keys.
REQUIRED_OPTIONS: dict[DataSourceType, tuple[tuple[str, ...], ...]] = {
    DataSourceType.URL: (("url",), ("repoSource", "repoId")),
    DataSourceType.OSS: (("bucket",),),
    DataSourceType.NAS: (("server",),),
    DataSourceType.SNAPSHOT: (("snapshotId",),),
}


def _option_given(key: str) -> str:
    """CEL: option `key` is set, non-empty in options, or named by secretRef.items; a secretRef
    without items may hold any option, which only the operator can tell once it reads the Secret."""
    return (
        f"(has(self.options) && '{key}' in self.options && self.options['{key}'] != '')"
        " || (has(self.secretRef) && (!has(self.secretRef.items)"
        f" || self.secretRef.items.exists(i, i.option == '{key}')))"
    )


def _required_options_rule(source_type: DataSourceType) -> dict[str, str]:
    alternatives = REQUIRED_OPTIONS[source_type]
    given = " || ".join(
        "(" + " && ".join(f"({_option_given(key)})" for key in keys) + ")" for keys in alternatives
    )
    needed = ", or ".join(" with ".join(f"options.{key}" for key in keys) for keys in alternatives)
    return cel_rule(
        f"self.type != '{source_type.value}' || {given}",
        f"type {source_type.value} needs {needed} (in options, or from the Secret through secretRef)",
        ".options",
        reason=REQUIRED,
    )


class DataSource(ApiModel):
    """Where the data comes from."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *(_required_options_rule(source_type) for source_type in DataSourceType),
            cel_rule(
                "self.type != 'URL' || !has(self.options) || !('repoSource' in self.options)"
                f" || self.options['repoSource'] in {list(REPO_SOURCES)}",
                f"options.repoSource is one of {', '.join(REPO_SOURCES)}",
                ".options",
            ),
        )
    )

    type: DataSourceType = Field(
        description="Kind of source: URL (plain link, Hugging Face or ModelScope), OSS, NAS or SNAPSHOT.",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Options of the source, with the plain ECI key names. URL: url, or repoSource "
        "(HuggingFace/Model, HuggingFace/DataSet, ModelScope/Model, ModelScope/DataSet) with repoId and "
        "revision. OSS: bucket, url (endpoint), path, otherOpts, ramRole. NAS: server, path, vers, "
        "options. SNAPSHOT: snapshotId. Keep tokens and keys (accessToken, akId, akSecret) out of here: "
        "use secretRef.",
    )
    secret_ref: SecretOptionsRef | None = Field(
        default=None,
        description="A Secret whose keys become further options, so that tokens and access keys never sit "
        "in the manifest. Values from the Secret take precedence over options with the same key.",
    )

    def resolved_options(self, secret_data: Mapping[str, str] | None = None) -> dict[str, str]:
        """Options to send to ECI: `options` overlaid with the Secret's (already decoded) values.

        Raises MissingSecretKeyError when an item names a key the Secret lacks.
        """
        resolved = dict(self.options)
        if self.secret_ref is None:
            return resolved
        secret_data = secret_data or {}
        if self.secret_ref.items is None:
            resolved.update(secret_data)
            return resolved
        for item in self.secret_ref.items:
            if item.key not in secret_data:
                raise MissingSecretKeyError(f"key {item.key!r} not found in Secret {self.secret_ref.name!r}")
            resolved[item.option] = secret_data[item.key]
        return resolved

    def secret_option_keys(self, secret_data: Mapping[str, str] | None = None) -> set[str]:
        """Option keys whose values come from the Secret: redact these wherever options are shown."""
        if self.secret_ref is None:
            return set()
        if self.secret_ref.items is None:
            return set(secret_data or ())
        return {item.option for item in self.secret_ref.items}


class EipCreateParam(ApiModel):
    """A temporary EIP ECI creates for the build instance and releases afterwards."""

    bandwidth: int | None = Field(default=None, ge=1, description="Bandwidth in Mbit/s (ECI default 5).")
    common_bandwidth_package: str | None = Field(
        default=None, description="ID of a shared bandwidth package to add the EIP to."
    )
    internet_charge_type: InternetChargeType | None = Field(
        default=None, description="Billing of the EIP: PayByBandwidth or PayByTraffic."
    )
    public_ip_address_pool_id: str | None = Field(
        default=None,
        description="ID of the IP address pool to take the EIP from (needs the quota privilege).",
    )
    isp: Isp | None = Field(default=None, description="Line type of the EIP: BGP (ECI default) or BGP_PRO.")


class NetConfig(ApiModel):
    """Network of the temporary instance that builds the cache.

    Internet sources (URL, Hugging Face, ModelScope) need a vSwitch with SNAT or an EIP.
    """

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!(has(self.eipInstanceId) && has(self.eipCreateParam))",
                "set either eipInstanceId or eipCreateParam, not both",
            )
        )
    )

    security_group_id: str | None = Field(
        default=None, description="Security group of the temporary build instance."
    )
    v_switch_id: str | None = Field(default=None, description="vSwitch of the temporary build instance.")
    eip_instance_id: str | None = Field(
        default=None, description="An existing EIP to bind to the build instance; excludes eipCreateParam."
    )
    eip_create_param: EipCreateParam | None = Field(
        default=None, description="Let ECI create a temporary EIP for the build; excludes eipInstanceId."
    )


class RefreshPolicy(ApiModel):
    """Following a hub branch or tag."""

    interval: str = Field(
        description="How often to ask the hub (a duration of 1m or more, e.g. 6h).",
        json_schema_extra=cel_rules(
            cel_rule("duration(self) >= duration('1m')", "refresh.interval must be a duration of 1m or more"),
        ),
    )

    def seconds(self) -> float:
        return duration_seconds(self.interval)


class UpdatePolicy(StrEnum):
    """What a change of the data source (or the size) does to the cache pods use."""

    REPLACE = "Replace"  # a new revision beside the current one; it takes over once Available
    IN_PLACE = "InPlace"  # UpdateDataCache: the cache reloads and is unusable meanwhile


DEFAULT_REVISION_HISTORY_LIMIT = 1


class DataCacheSpec(ApiModel):
    """Desired state of an ECI data cache."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            # Transition rules on optional fields live one level up: a rule on the field
            # itself would not run when the field is added or removed.
            cel_rule(
                "!has(oldSelf.region) || (has(self.region) && self.region == oldSelf.region)",
                "region is immutable once set",
                ".region",
            ),
            cel_rule(
                "!has(oldSelf.dataCacheId) || (has(self.dataCacheId) && self.dataCacheId == oldSelf.dataCacheId)",
                "dataCacheId is immutable once set",
                ".dataCacheId",
            ),
            cel_rule(
                "has(self.bucket) == has(oldSelf.bucket) && (!has(self.bucket) || self.bucket == oldSelf.bucket)",
                "bucket is immutable",
                ".bucket",
            ),
            cel_rule(
                "has(self.dataSource) || has(self.dataCacheId)",
                "dataSource is required unless dataCacheId adopts an existing cache",
                ".dataSource",
            ),
        )
    )

    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        description="Alibaba Cloud region of the cache, e.g. cn-hangzhou. Defaults to the operator's "
        "region. Immutable once set: caches cannot move between regions.",
    )
    bucket: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="ECI bucket, a namespace for cache paths; pods select it with the annotation "
        "k8s.aliyun.com/eci-data-cache-bucket. Defaults to the namespace's own bucket (its name; "
        "ns.default for the namespace default), or to ECI's bucket default when the operator runs "
        "without tenancy. Another bucket must be assigned to the namespace by an administrator "
        "(annotation eci.datacache.dev/buckets on the Namespace). eci-system is reserved. Immutable.",
        json_schema_extra=cel_rules(
            cel_rule(f"self != '{RESERVED_BUCKET}'", f"bucket {RESERVED_BUCKET} is reserved by ECI"),
        ),
    )
    path: str = Field(
        min_length=1,
        description="Path of the cache in the bucket, starting with '/'; pods mount it as a hostPath "
        "volume with this path. Immutable.",
        json_schema_extra=cel_rules(
            cel_rule("self.startsWith('/')", "path must start with '/'"),
            cel_rule("self == oldSelf", "path is immutable"),
        ),
    )
    name: str | None = Field(
        default=None,
        max_length=MAX_CLOUD_NAME_LENGTH,
        description="Display name of the cache in ECI, at most 128 characters. Defaults to the object's "
        "name, and a name longer than 128 characters is cut to 117 and followed by '-' and 10 hex digits "
        "of its digest.",
    )
    size: int = Field(
        default=DEFAULT_SIZE_GIB,
        ge=1,
        description="Size of the cache disk in GiB; it must hold all the data or the build fails. "
        "Changing it rebuilds the cache.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Days before ECI deletes the cache; unset keeps it until the object is deleted.",
    )
    data_source: DataSource | None = Field(
        default=None,
        description="Where the data comes from. Required unless dataCacheId adopts an existing cache. "
        "Changing it reloads the cache.",
    )
    net_config: NetConfig | None = Field(
        default=None, description="Network of the temporary instance that builds the cache."
    )
    tags: CloudTags = cloud_tags_field("cloud cache", OWNER_TAG_KEYS)
    resource_group_id: str | None = Field(default=None, description="Resource group of the cache.")
    data_cache_id: str | None = Field(
        default=None,
        min_length=1,
        description="ID of an existing cache (edc-...) to adopt and manage instead of creating one. "
        "Immutable once set.",
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete removes the cloud cache with the object, Retain leaves it. Unset uses the "
        "operator's default.",
    )
    management_policies: list[ManagementPolicy] | None = Field(
        default=None,
        max_length=4,
        description="What the operator may do to the cloud cache: Observe (read it; always), Update (send "
        "spec changes), Delete (delete it with the object under deletionPolicy Delete), * (all). Unset: * "
        "for a cache this object creates, [Observe] for one it adopts with dataCacheId.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    pod_disk: PodDisk | None = Field(
        default=None,
        description="The disk of each pod that uses the cache through the webhook (annotation "
        "eci.datacache.dev/caches); a pod that sets the ECI annotation itself keeps its own value.",
    )
    update_policy: UpdatePolicy | None = Field(
        default=None,
        description="Replace (the default): a change of dataSource or size builds a new revision at a "
        "path of its own (spec.path + '.rN') while the current one keeps serving, and new pods get the "
        "new one once it is Available. InPlace: UpdateDataCache reloads the one cache, unusable meanwhile, "
        "and pods created before and after it hold different data.",
    )
    revision_history_limit: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Superseded revisions no pod uses that are kept (the newest ones); older unused ones "
        "are deleted under deletionPolicy. One a pod uses is never deleted. Default 1.",
    )

    refresh: RefreshPolicy | None = Field(
        default=None,
        description="For a Hugging Face or ModelScope source named by a branch or tag: how often to ask the "
        "hub which commit it is at; when it moved, a new revision is built from the new commit.",
    )
    expire_after_unused: str | None = Field(
        default=None,
        description="Scale to zero: once no pod has used the cache for this long (a duration, e.g. 168h), "
        "its cloud caches are deleted and the object shows Ready=False, reason Idle; a pod that names it "
        "later waits at the gate while it is built again from the same source. Unset: kept while the "
        "object exists.",
        json_schema_extra=cel_rules(
            cel_rule(
                "duration(self) >= duration('1m')", "expireAfterUnused must be a duration of 1m or more"
            ),
        ),
    )

    def unused_seconds(self) -> float | None:
        return duration_seconds(self.expire_after_unused) if self.expire_after_unused else None

    @property
    def replaces(self) -> bool:
        """Whether a reload builds a new revision (not for an adopted cache: there is one)."""
        return self.update_policy != UpdatePolicy.IN_PLACE and self.data_cache_id is None

    @property
    def history_limit(self) -> int:
        limit = self.revision_history_limit
        return DEFAULT_REVISION_HISTORY_LIMIT if limit is None else limit


class RevisionStatus(ApiModel):
    """One revision of the cache: its own cloud cache at its own path."""

    name: str = Field(description="r1, r2, ...: numbered in the order they were built.")
    data_cache_id: str | None = Field(default=None, description="ID of its cloud cache.")
    path: str | None = Field(default=None, description="Path of its cloud cache in the bucket.")
    status: str | None = Field(default=None, description="Cloud status of its cache.")
    bucket: str | None = Field(default=None, description="Bucket of its cloud cache.")
    size: int | None = Field(default=None, ge=0, description="Size of its cloud cache in GiB.")
    source: str | None = Field(
        default=None, description="What it was built from: the source type and the options naming the data."
    )
    source_key: str | None = Field(
        default=None, description="Digest of the data source and size it was built from (no Secret values)."
    )
    consumers: int | None = Field(default=None, ge=0, description="Pods bound to it.")
    creation_time: datetime | None = Field(default=None, description="When ECI created its cache.")
    expire_time: datetime | None = Field(default=None, description="When ECI deletes its cache.")
    message: str | None = Field(default=None, description="Latest event ECI reported for its cache.")
    reason: str | None = Field(default=None, description="Why its build was refused (the ECI code).")
    retention_days: int | None = Field(default=None, ge=1, description="The retentionDays last applied.")
    cache_generation: int | None = Field(
        default=None, ge=0, description="Caches created for this revision (part of its ClientToken)."
    )
    failed_generation: int | None = Field(
        default=None, ge=0, description="The generation whose spec failed to build it (not retried for it)."
    )


class DataCacheStatus(ApiModel):
    """Observed state of the cache, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready, Synced and Stalled (True when only a change of the spec can help).",
        json_schema_extra=conditions_schema_extra(),
    )
    data_cache_id: str | None = Field(default=None, description="ID of the cloud cache (edc-...).")
    region: str | None = Field(default=None, description="Region the cache lives in.")
    account: str | None = Field(
        default=None,
        description="The EciAccount whose credentials the cache is built, read and deleted with; empty: "
        "the operator's own. A cache stays in the account it was built in.",
    )
    status: str | None = Field(
        default=None,
        description="Cloud status: Creating, Loading, Available, Updating, Failed, UpdateFailed, Deleting; "
        "Expired when retention ended. Pods can use the cache only when Available.",
    )
    bucket: str | None = Field(default=None, description="Bucket of the cloud cache.")
    path: str | None = Field(default=None, description="Path of the cloud cache, to mount as hostPath.")
    size: int | None = Field(default=None, ge=0, description="Size of the cloud cache in GiB.")
    progress: str | None = Field(
        default=None,
        description="Build progress reported by ECI, e.g. 45%; while only it moves, rewritten every 30 s.",
    )
    creation_time: datetime | None = Field(default=None, description="When ECI created the cache.")
    expire_time: datetime | None = Field(
        default=None,
        description="When ECI deletes the cache (from retentionDays); unset when it never expires.",
    )
    last_matched_time: datetime | None = Field(
        default=None, description="When a pod or instance last used the cache."
    )
    last_sync_time: datetime | None = Field(
        default=None,
        description="When the operator last read the cache from the cloud and wrote the status; "
        "a read that finds nothing new leaves it until it is ten stable poll intervals old.",
    )
    message: str | None = Field(default=None, description="Latest build event ECI reported for the cache.")
    retention_days: int | None = Field(
        default=None, ge=1, description="The retentionDays the operator last applied to the cache."
    )
    cache_generation: int | None = Field(
        default=None,
        ge=0,
        description="How many caches the operator has created for this object (a new one follows a cache "
        "deleted outside the operator); part of the ClientToken, so a retried create never makes two.",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="The last value of the eci.datacache.dev/reconcile-requested-at annotation acted "
        "on; a new value retries a terminal error or a Failed build without a spec change.",
    )
    consumers: int | None = Field(
        default=None,
        ge=0,
        description="Pods (not yet terminated) bound to this cache by the webhook; while there are any, "
        "deleting the object keeps the cloud cache. Unset when none ever was.",
    )
    unused_since: datetime | None = Field(
        default=None,
        description="When the last pod using the cache ended (unset while one does); with "
        "expireAfterUnused, what makes it idle.",
    )
    source_requested: str | None = Field(
        default=None,
        description="The hub repository and branch or tag last resolved (repoSource:repoId@ref).",
    )
    source_commit: str | None = Field(
        default=None, description="The commit that branch or tag was at: what revisions are built from."
    )
    source_resolved_time: datetime | None = Field(
        default=None, description="When the hub was last asked (spec.refresh.interval asks again)."
    )
    idle_since: datetime | None = Field(
        default=None,
        description="When its cloud caches were deleted for want of use (spec.expireAfterUnused); unset "
        "once a pod asks for it again.",
    )
    current_revision: str | None = Field(
        default=None,
        description="The revision new pods get (r1, r2, ...); dataCacheId, path and status above are its.",
    )
    rolled_out_revision: str | None = Field(
        default=None,
        description="The revision the opted-in Deployments and StatefulSets using the cache were last "
        "rolled onto (with the chart's rollouts.enabled).",
    )
    revisions: list[RevisionStatus] | None = Field(
        default=None,
        description="Every revision the object holds: the current one, one being built, superseded ones "
        "still used by pods or kept by revisionHistoryLimit.",
        max_length=16,
    )


class DataCache(ApiModel):
    """A whole DataCache object, e.g. parsed from a kopf body."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DataCacheSpec
    status: DataCacheStatus = Field(default_factory=DataCacheStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DataCache:
        """Parses a kopf body (or any object dict); accepts kopf's read-only mapping views."""
        return cls.model_validate(
            {
                "apiVersion": body.get("apiVersion", API_VERSION),
                "kind": body.get("kind", KIND),
                "metadata": dict(body.get("metadata") or {}),
                "spec": dict(body.get("spec") or {}),
                "status": dict(body.get("status") or {}),
            }
        )


DATACACHE = ResourceDefinition(
    group=GROUP,
    version=VERSION,
    kind=KIND,
    plural=PLURAL,
    singular="datacache",
    short_names=("edc",),
    categories=("eci", "datacache"),
    description="An Alibaba Cloud ECI data cache: data (a model, a dataset, files) pulled once into a "
    "snapshot that ECI pods mount as a hostPath volume at spec.path of spec.bucket.",
    spec_model=DataCacheSpec,
    status_model=DataCacheStatus,
    printer_columns=(
        condition_column("Ready", ConditionType.READY, description="Whether the cache is usable."),
        PrinterColumn("Status", ".status.status", description="Cloud status of the cache."),
        PrinterColumn("ID", ".status.dataCacheId", description="ID of the cloud cache."),
        PrinterColumn("Region", ".status.region", description="Region of the cloud cache."),
        PrinterColumn("Consumers", ".status.consumers", type="integer", description="Pods using the cache."),
        condition_column(
            "Reason", ConditionType.READY, "reason", description="Reason of the Ready condition.", priority=1
        ),
        PrinterColumn("Bucket", ".status.bucket", description="ECI bucket of the cache.", priority=1),
        PrinterColumn("Path", ".spec.path", description="Path of the cache in the bucket.", priority=1),
        PrinterColumn("Progress", ".status.progress", description="Build progress.", priority=1),
        PrinterColumn(
            "Revision", ".status.currentRevision", description="The revision new pods get.", priority=1
        ),
        PrinterColumn("Account", ".status.account", description="EciAccount of the cache.", priority=1),
        AGE_COLUMN,
    ),
    labels={"app.kubernetes.io/part-of": "eci-datacache-operator"},
    # Once the operator has recorded where the cache lives, a spec that names another
    # region or cache (set where it was unset: the spec rules allow that) would orphan it.
    # The apiserver validates main-resource updates against the stored status.
    object_rules=(
        cel_rule(
            "!has(self.status) || !has(self.status.region) || !has(self.spec.region)"
            " || self.spec.region == self.status.region",
            "spec.region must equal status.region, the region the cache lives in",
            ".spec.region",
        ),
        cel_rule(
            "!has(self.status) || !has(self.status.dataCacheId) || !has(self.spec.dataCacheId)"
            " || self.spec.dataCacheId == self.status.dataCacheId",
            "spec.dataCacheId must equal status.dataCacheId, the cache this object already manages",
            ".spec.dataCacheId",
        ),
    ),
)


def cloud_statuses(status: Mapping[str, Any]) -> tuple[str, ...]:
    """The cloud status of the object's cache, as the metrics count it."""
    return (status.get("status") or "Unknown",)
