"""Which buckets a namespace's caches and pods may use (the same rule the admission policies
run in the apiserver: tests/integration/test_bucket_policies.py)."""

from __future__ import annotations

from datacache_operator.api.buckets import (
    BUCKETS_ANNOTATION,
    assigned_buckets,
    bucket_allowed,
    default_bucket,
    namespace_bucket,
)


def test_a_namespace_owns_the_bucket_of_its_name_but_never_ecis_own_buckets() -> None:
    assert namespace_bucket("team-a") == "team-a"
    assert namespace_bucket("default") == "ns.default"  # where every pod without the annotation looks
    assert namespace_bucket("eci-system") == "ns.eci-system"  # reserved by ECI


def test_without_tenancy_an_unset_bucket_is_ecis_default() -> None:
    assert default_bucket("team-a", tenancy=True) == "team-a"
    assert default_bucket("team-a", tenancy=False) == "default"


def test_administrators_assign_more_buckets_on_the_namespace() -> None:
    annotations = {BUCKETS_ANNOTATION: " shared-models,, models-b "}
    assert assigned_buckets(annotations) == {"shared-models", "models-b"}
    assert assigned_buckets(None) == frozenset()
    assert bucket_allowed("shared-models", "team-b", annotations)
    assert bucket_allowed("team-b", "team-b", None)
    assert not bucket_allowed("team-a", "team-b", annotations)
    assert not bucket_allowed("default", "default", None)
