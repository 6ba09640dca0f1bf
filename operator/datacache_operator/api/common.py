"""Bits shared by every kind: the model base class and the metav1.Condition shape."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from datacache_operator.api.schema import FORBIDDEN, cel_rule, cel_rules

RESERVED_BUCKET = "eci-system"
REGION_PATTERN = r"^[a-z]{2,}(-[a-z0-9]+)+$"

MAX_CLOUD_NAME_LENGTH = 128
"""ECI's limit on a cache's Name (as on its other names)."""

# Alibaba Cloud's tag rules: at most 20 tags on a resource, keys of 1-128 characters,
# values of at most 128, no key beginning with `aliyun` or `acs:`, no key or value
# containing `http://` or `https://`. Matched in any case, as the emulator matches them.
MAX_CLOUD_TAGS = 20
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 128
RESERVED_TAG_KEY_PREFIXES = ("aliyun", "acs:")
FORBIDDEN_TAG_TEXTS = ("http://", "https://")

# Tags the operator puts on every cache it creates, to find it again (reconcile/common.py).
# Each kind's plural (its resource name), by which other kinds and the webhook read its objects.
DATACACHES = "datacaches"
DATACACHE_REPLICATIONS = "datacachereplications"

OWNER_UID_TAG = "eci.datacache.dev/owner-uid"
OWNER_CLUSTER_TAG = "eci.datacache.dev/owner-cluster"
OWNER_NAMESPACE_TAG = "eci.datacache.dev/owner-namespace"
OWNER_NAME_TAG = "eci.datacache.dev/owner-name"
OWNER_TAG_KEYS = (OWNER_UID_TAG, OWNER_CLUSTER_TAG, OWNER_NAMESPACE_TAG, OWNER_NAME_TAG)
#: On a DataCacheReplication's copies only: which destination a copy is (and that it is a copy).
DESTINATION_REGION_TAG = "eci.datacache.dev/destination-region"

#: On a Namespace (which its tenants cannot edit): the other namespaces whose caches its objects
#: may adopt or copy by id, comma-separated (`team-a`, `<cluster id>/team-a`, `*`, `*/*`).
MAY_ADOPT_FROM_ANNOTATION = "eci.datacache.dev/may-adopt-from"


def fit_name(name: str, limit: int) -> str:
    """`name` when it fits in `limit` characters, else its head, '-' and 10 hex digits of its
    SHA-256: the same name always gives the same result, and names with the same head differ.
    Kubernetes names run to 253 characters; label names, ECI names and tag values are shorter."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name[: limit - 11].rstrip("-.") + "-" + digest


def _none_of(text: str, words: Sequence[str], test: str) -> str:
    return " && ".join(f"!{text}.lowerAscii().{test}('{word}')" for word in words)


# A bound for the apiserver's estimate of what the CEL rules cost, far above the tag limit,
# so that the rules' own messages are what anyone with a real manifest sees.
_TAGS_COST_BOUND = 64

CloudTags = dict[str, Annotated[str, Field(max_length=MAX_TAG_VALUE_LENGTH)]]
"""User tags; a value over 128 characters is refused by the schema (naming its key)."""


def cloud_tags_field(owner: str, operator_tags: Sequence[str]) -> Any:
    """The `tags` field of a kind whose caches get `operator_tags` besides the user's."""
    limit = MAX_CLOUD_TAGS - len(operator_tags)
    reserved = " or ".join(RESERVED_TAG_KEY_PREFIXES)
    forbidden = " or ".join(FORBIDDEN_TAG_TEXTS)
    return Field(
        default_factory=dict,
        max_length=_TAGS_COST_BOUND,
        description=f"Tags on the {owner}, besides the {len(operator_tags)} the operator adds to find it: at "
        f"most {limit}, keys of 1-{MAX_TAG_KEY_LENGTH} and values of up to {MAX_TAG_VALUE_LENGTH} characters, "
        f"no key beginning with {reserved}, none containing {forbidden} (Alibaba Cloud's tag rules).",
        json_schema_extra=cel_rules(
            cel_rule(
                f"size(self) <= {limit}",
                f"at most {limit} tags: ECI allows {MAX_CLOUD_TAGS} on a cache and the operator adds "
                f"{len(operator_tags)} of its own ({', '.join(operator_tags)})",
            ),
            cel_rule(
                f"self.all(k, size(k) >= 1 && size(k) <= {MAX_TAG_KEY_LENGTH})",
                f"a tag key is 1 to {MAX_TAG_KEY_LENGTH} characters long",
            ),
            cel_rule(
                f"self.all(k, {_none_of('k', RESERVED_TAG_KEY_PREFIXES, 'startsWith')})",
                f"a tag key must not begin with {reserved} (in any case): Alibaba Cloud reserves them",
                reason=FORBIDDEN,
            ),
            cel_rule(
                f"self.all(k, {_none_of('k', FORBIDDEN_TAG_TEXTS, 'contains')}"
                f" && {_none_of('self[k]', FORBIDDEN_TAG_TEXTS, 'contains')})",
                f"a tag key or value must not contain {forbidden} (in any case)",
                reason=FORBIDDEN,
            ),
        ),
    )


RECONCILE_REQUEST_ANNOTATION = "eci.datacache.dev/reconcile-requested-at"
"""Set it to a new value (e.g. the time) to reconcile now and retry what failed; the value
handled last is kept in ``status.lastHandledReconcileAt`` (Crossplane's and Flux's convention)."""


PAUSED_ANNOTATION = "eci.datacache.dev/paused"
"""`"true"` stops every cloud call for the object (its deletion waits until unpaused)."""


def object_name(namespace: str | None, name: str) -> str:
    """namespace/name as messages name an object, the name alone for a cluster-scoped one."""
    return f"{namespace}/{name}" if namespace else name


def is_paused(meta: Mapping[str, Any]) -> bool:
    return str((meta.get("annotations") or {}).get(PAUSED_ANNOTATION, "")).lower() == "true"


def reconcile_request(meta: Mapping[str, Any]) -> str | None:
    """The value of the reconcile-request annotation, if set."""
    return (meta.get("annotations") or {}).get(RECONCILE_REQUEST_ANNOTATION)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(duration: str) -> float:
    """A Go duration as CEL's duration() reads it (`1h30m`, `90m`, `3600s`), in seconds."""
    parts = _DURATION_PART.findall(duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"not a duration: {duration!r} (e.g. 1h, 90m, 3600s)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class ApiModel(BaseModel):
    """Base of every CRD model: snake_case in Python, camelCase on the wire.

    Unknown keys are ignored rather than rejected: the apiserver already prunes them, and
    an object stored under an older schema must still parse.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the apiserver expects (camelCase, RFC 3339 times, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def alias(cls, field: str) -> str:
        """A field's name on the wire (`cache_generation` -> `cacheGeneration`)."""
        return cls.model_fields[field].alias or field

    def to_patch(self) -> dict[str, Any]:
        """The fields given to this instance, as a merge patch of them: camelCase, RFC 3339
        times, and a field given as None removed. How controllers write status, typed."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ConditionStatus(StrEnum):
    """Status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The condition types our kinds write (kstatus and Argo CD read Ready and Stalled)."""

    READY = "Ready"
    """The cloud resource exists, matches the spec and is usable."""
    SYNCED = "Synced"
    """The last reconcile reached the cloud API and applied the spec."""
    STALLED = "Stalled"
    """Only a change of the spec can help (a terminal cloud error); kstatus reports Failed."""


# The validation metav1.Condition carries in every built-in API, copied so that our
# conditions read (and fail) the same way; the reason also admits '.', because ECI error
# codes (the reasons of failed conditions) look like `InvalidParameter.Size`.
CONDITION_TYPE_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_.,:]*[A-Za-z0-9_])?$"
CONDITION_REASON_MAX_LENGTH = 1024
CONDITION_MESSAGE_MAX_LENGTH = 32768


class Condition(ApiModel):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Type of the condition in CamelCase: Ready, Synced or Stalled.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the condition was computed from; when it is older than "
        "metadata.generation, the condition is out of date.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another.",
    )
    reason: str = Field(
        min_length=1,
        max_length=CONDITION_REASON_MAX_LENGTH,
        pattern=CONDITION_REASON_PATTERN,
        description="Programmatic identifier of the reason for the last transition, in CamelCase "
        "(the ECI error code when the cloud returned one).",
    )
    message: str = Field(
        max_length=CONDITION_MESSAGE_MAX_LENGTH,
        description="Human readable details about the last transition; may be empty.",
    )


def conditions_schema_extra() -> dict[str, Any]:
    """Schema keys for a `conditions` list: merged by type under server-side apply."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ManagementPolicy(StrEnum):
    """What the operator may do to a cloud cache (Crossplane's managementPolicies)."""

    ALL = "*"
    OBSERVE = "Observe"  # read it and report it in status
    UPDATE = "Update"  # send spec changes (and the operator's owner tags) to it
    DELETE = "Delete"  # delete it with the object, when deletionPolicy is Delete


def may(policies: list[ManagementPolicy] | None, adopted: bool, action: ManagementPolicy) -> bool:
    """Whether `action` is allowed: unset policies are everything for a cache the object made and
    Observe for one it adopted (a cache it did not make is not changed unless it says so)."""
    if policies is None:
        return not adopted or action == ManagementPolicy.OBSERVE
    return ManagementPolicy.ALL in policies or action in policies or action == ManagementPolicy.OBSERVE


class DeletionPolicy(StrEnum):
    """What happens to the cloud cache when the object is deleted."""

    DELETE = "Delete"
    RETAIN = "Retain"


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads."""

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: datetime | None = None
