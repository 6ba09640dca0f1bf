"""Who may take a cache: decided from its owner tags and the administrators' grants alone."""

from __future__ import annotations

from datacache_operator.api.common import ManagementPolicy, may
from datacache_operator.reconcile.common import owner_tags
from datacache_operator.reconcile.ownership import (
    Identity,
    Owner,
    may_take,
    owned_by,
    owner_of,
    parse_grants,
    refusal,
)

HERE = "cluster-1"


def test_a_cache_names_its_owner_by_its_tags_and_an_untagged_one_has_none() -> None:
    assert owner_of(owner_tags(HERE, "u1", "team-a", "qwen")) == Owner(HERE, "team-a", "qwen")
    assert owner_of({"team": "ml"}) is None
    legacy = {"eci.datacache.dev/owner-namespace": "team-a"}  # made before caches named their cluster
    assert owned_by(owner_of(legacy), HERE, "team-a")


def test_only_an_unowned_cache_or_ones_own_may_be_taken_without_a_grant() -> None:
    team_a = owner_of(owner_tags(HERE, "u1", "team-a", "qwen"))
    assert may_take(None, HERE, "team-b", frozenset())
    assert may_take(team_a, HERE, "team-a", frozenset())
    assert not may_take(team_a, HERE, "team-b", frozenset())
    assert may_take(team_a, HERE, "team-b", parse_grants("team-c, team-a"))
    assert may_take(team_a, HERE, "team-b", parse_grants("*"))


def test_another_clusters_namespace_is_granted_only_by_name_or_by_any() -> None:
    elsewhere = owner_of(owner_tags("cluster-2", "u1", "team-a", "qwen"))
    assert not may_take(elsewhere, HERE, "team-a", frozenset())  # same namespace name, other cluster
    assert not may_take(elsewhere, HERE, "team-a", parse_grants("team-a *"))
    assert may_take(elsewhere, HERE, "team-a", parse_grants("cluster-2/team-a"))
    assert may_take(elsewhere, HERE, "team-b", parse_grants("*/*"))


def test_a_refusal_names_the_owner_namespace_and_the_way_out_never_the_data() -> None:
    owner = Owner(HERE, "team-a", "qwen")
    message = refusal(
        owner, HERE, "spec.dataCacheId names a data cache that", "eci.datacache.dev/may-adopt-from"
    )
    assert "namespace team-a" in message and "eci.datacache.dev/may-adopt-from" in message
    assert "qwen" not in message  # not even the other team's object name
    assert "another cluster" in refusal(Owner("c2", "team-a", None), HERE, "x", "a")


def test_a_re_created_object_looks_for_its_caches_by_what_stays() -> None:
    first = Identity(HERE, "ml", "qwen", "uid-1")
    again = Identity(HERE, "ml", "qwen", "uid-2")
    assert first.lookup_tags() == again.lookup_tags() and first.tags() != again.tags()
    assert set(first.lookup_tags()) < set(first.tags())


def test_an_adopted_cache_is_observed_only_unless_the_object_says_more() -> None:
    update, delete = ManagementPolicy.UPDATE, ManagementPolicy.DELETE
    assert may(None, adopted=False, action=update) and may(None, adopted=False, action=delete)
    assert not may(None, adopted=True, action=update) and not may(None, adopted=True, action=delete)
    assert may([ManagementPolicy.OBSERVE, update], adopted=True, action=update)
    assert not may([ManagementPolicy.OBSERVE, update], adopted=True, action=delete)
    assert may([ManagementPolicy.ALL], adopted=True, action=delete)
    assert may([], adopted=True, action=ManagementPolicy.OBSERVE)
