"""Who owns a cache, and whether an object may take it (adopt it, copy it, delete it).

ECI knows nothing of namespaces: any cache of the account is reachable by its id. The owner
tags the operator puts on every cache it makes (cluster, namespace, object) are what keeps one
team's objects off another team's caches. Pure: the controllers read the tags and the grants.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from datacache_operator.api.common import (
    MAX_TAG_VALUE_LENGTH,
    OWNER_CLUSTER_TAG,
    OWNER_NAME_TAG,
    OWNER_NAMESPACE_TAG,
    fit_name,
)
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.reconcile.common import owner_tags

ANY_NAMESPACE = "*"
ANY_CLUSTER = "*/*"


@dataclass(frozen=True)
class Identity:
    """The object caches are made for: its tags on them, and how they are found again. The
    uid tells one incarnation of the object from the next (ClientTokens); cluster, namespace
    and name stay when the object is re-created, so a re-created object finds its caches."""

    cluster: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, cluster: str, meta: Mapping[str, str]) -> Identity:
        return cls(cluster, meta["namespace"], meta["name"], meta["uid"])

    def tags(self) -> dict[str, str]:
        return owner_tags(self.cluster, self.uid, self.namespace, self.name)

    def lookup_tags(self) -> dict[str, str]:
        return {
            OWNER_CLUSTER_TAG: self.cluster,
            OWNER_NAMESPACE_TAG: self.namespace,
            OWNER_NAME_TAG: fit_name(self.name, MAX_TAG_VALUE_LENGTH),
        }


@dataclass(frozen=True)
class Owner:
    """The object a cache's tags name (`cluster` None: made before caches named their cluster)."""

    cluster: str | None
    namespace: str
    name: str | None


def owner_of(tags: Mapping[str, str]) -> Owner | None:
    """The owner the tags name; None for a cache no object of any cluster made."""
    namespace = tags.get(OWNER_NAMESPACE_TAG)
    if not namespace:
        return None
    return Owner(tags.get(OWNER_CLUSTER_TAG), namespace, tags.get(OWNER_NAME_TAG))


def owned_by(owner: Owner | None, cluster: str, namespace: str) -> bool:
    """The cache belongs to `namespace` of this cluster (a cache tagged before clusters were
    named counts as this cluster's)."""
    return owner is not None and owner.namespace == namespace and owner.cluster in (cluster, None)


def made_by(cluster: str, namespace: str) -> Callable[[ObservedCache], bool]:
    """Whether a cache as read is `namespace`'s of this cluster by its tags: what may be deleted
    (never on the word of a status alone)."""
    return lambda cache: owned_by(owner_of(cache.tags), cluster, namespace)


def may_take(owner: Owner | None, cluster: str, namespace: str, granted: Collection[str]) -> bool:
    """Whether an object of `namespace` may adopt or copy a cache of `owner`: one no one owns,
    one of its own namespace, or one of a namespace an administrator granted it in the
    namespace's annotation: `team-a` (of this cluster), `<cluster id>/team-a` (of another
    cluster sharing the account), `*` (every namespace of this cluster), `*/*` (any)."""
    if owner is None or owned_by(owner, cluster, namespace):
        return True
    if ANY_CLUSTER in granted:
        return True
    if owner.cluster in (cluster, None):
        return ANY_NAMESPACE in granted or owner.namespace in granted
    return f"{owner.cluster}/{owner.namespace}" in granted


def parse_grants(value: str | None) -> frozenset[str]:
    """The namespaces an annotation value names: comma- or space-separated."""
    return frozenset(part for part in (value or "").replace(",", " ").split() if part)


def path_in_use(occupant_id: str, owner: Owner | None, cluster: str, bucket: str, path: str) -> str:
    """Why nothing is created at a bucket and path: the cache there and whose it is (its owner
    object is named only within this cluster's namespace, as the bucket is the namespace's)."""
    if owner is None:
        whose = "not made by this operator"
    elif owner.cluster in (cluster, None):
        whose = f"of {owner.namespace}/{owner.name}" if owner.name else f"of namespace {owner.namespace}"
    else:
        whose = "of another cluster"
    return (
        f"Data cache {occupant_id} ({whose}) is already at bucket {bucket}, path {path}: pods could get "
        "either cache. Choose another path, or delete that cache; this is checked again at each poll."
    )


def refusal(owner: Owner, cluster: str, what: str, annotation: str) -> str:
    """Why an object may not take a cache: its owner, never its data."""
    where = f"namespace {owner.namespace}" + (
        "" if owner.cluster in (cluster, None) else " of another cluster"
    )
    return (
        f"{what} belongs to {where}; an administrator can allow it with the annotation "
        f"{annotation} on this namespace."
    )
