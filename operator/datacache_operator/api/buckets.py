"""Which ECI buckets a namespace's caches and pods may use.

ECI lets any pod of the account mount any cache by bucket and path, so buckets are what keeps
one team's pods off another team's data: each namespace has its own bucket (its name), and an
administrator may assign it more on the Namespace (which tenants cannot edit). The same rule
runs in three places, kept equal by tests: here (the operator and the webhook), and in the
ValidatingAdmissionPolicies of `api.policies` (the apiserver, for every pod of the cluster).
"""

from __future__ import annotations

from collections.abc import Mapping

from datacache_operator.api.common import RESERVED_BUCKET

#: Where ECI looks for a pod without `k8s.aliyun.com/eci-data-cache-bucket`: every pod of the
#: account. So no namespace gets it as its own bucket; an administrator may assign it knowingly.
ECI_DEFAULT_BUCKET = "default"

#: On a Namespace: further buckets its caches and pods may use, comma-separated.
BUCKETS_ANNOTATION = "eci.datacache.dev/buckets"

#: A namespace whose name is one of ECI's own buckets gets this prefix. No namespace name holds
#: a '.', so a prefixed bucket is never another namespace's own.
NAMESPACE_BUCKET_PREFIX = "ns."
ECI_BUCKETS = (ECI_DEFAULT_BUCKET, RESERVED_BUCKET)


def namespace_bucket(namespace: str) -> str:
    """The bucket a namespace owns: its name (`ns.default` for the namespace `default`)."""
    return NAMESPACE_BUCKET_PREFIX + namespace if namespace in ECI_BUCKETS else namespace


def default_bucket(namespace: str, tenancy: bool) -> str:
    """The bucket of a cache whose spec names none."""
    return namespace_bucket(namespace) if tenancy else ECI_DEFAULT_BUCKET


def assigned_buckets(annotations: Mapping[str, str] | None) -> frozenset[str]:
    value = (annotations or {}).get(BUCKETS_ANNOTATION) or ""
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def bucket_allowed(bucket: str, namespace: str, annotations: Mapping[str, str] | None) -> bool:
    return bucket == namespace_bucket(namespace) or bucket in assigned_buckets(annotations)


def bucket_refusal(bucket: str, namespace: str) -> str:
    """Why a bucket is refused, in the words the admission policies use."""
    return (
        f"bucket {bucket} is not a bucket of namespace {namespace}: its own is "
        f"{namespace_bucket(namespace)}, and an administrator assigns others with the annotation "
        f"{BUCKETS_ANNOTATION} on the namespace"
    )
