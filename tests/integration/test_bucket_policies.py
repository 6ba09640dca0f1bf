"""The chart's ValidatingAdmissionPolicies in the real apiserver: each namespace's DataCaches,
replication destinations and pods (every pod, opted in to the webhook or not) keep to the
namespace's own ECI bucket and the ones an administrator assigned on the Namespace; what they
decide matches `api.buckets`, which the operator and the webhook use.

The policies are the chart's file, under names of this test's own (the chart installs the
real ones in other tests that share the apiserver), and their bindings match only this test's
namespaces, with the chart's deny action."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration.support import REPO, wait_for
from tests.integration.test_datacache_lifecycle import datacache
from tests.support.controlplane import ControlPlane

from datacache_operator.api.binding import ECI_BUCKET_ANNOTATION
from datacache_operator.api.buckets import BUCKETS_ANNOTATION, bucket_allowed, bucket_refusal
from datacache_operator.api.policies import render
from datacache_operator.api.replication import API_VERSION

POLICY_FILE = REPO / "charts" / "eci-datacache-operator" / "files" / "admission-policies.yaml"


def test_the_charts_policy_file_is_the_generated_one() -> None:
    assert POLICY_FILE.read_text() == render(), "regenerate with `make crds`"


class Teams:
    def __init__(self, controlplane: ControlPlane, label: str) -> None:
        self.controlplane = controlplane
        self.label = label

    def namespace(self, name: str) -> str:
        self.controlplane.kubectl("create", "namespace", name)
        self.controlplane.kubectl("label", "namespace", name, f"{self.label}=true")
        return name

    def assign(self, namespace: str, buckets: str | None) -> None:
        value = f"{BUCKETS_ANNOTATION}-" if buckets is None else f"{BUCKETS_ANNOTATION}={buckets}"
        self.controlplane.kubectl("annotate", "namespace", namespace, value, "--overwrite")

    def create(self, namespace: str, manifest: dict[str, Any], *, dry_run: bool = True) -> tuple[bool, str]:
        args = ["create", "-n", namespace, "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        result = self.controlplane.kubectl(*args, input=yaml.safe_dump(manifest), check=False)
        return result.returncode == 0, result.stderr

    def patch(self, namespace: str, kind: str, name: str, patch: dict[str, Any]) -> tuple[bool, str]:
        result = self.controlplane.kubectl(
            "patch", kind, name, "-n", namespace, "--type", "merge", "-p", json.dumps(patch), check=False
        )
        return result.returncode == 0, result.stderr

    def decided(self, namespace: str, manifest: dict[str, Any], allowed: bool) -> str:
        """Waits (the policies and Namespace changes reach the apiserver's informers within a
        second or two) until creating `manifest` is decided as `allowed`; the error if refused."""
        outcome: list[str] = []

        def settled() -> bool:
            ok, error = self.create(namespace, manifest)
            outcome[:] = [error]
            return ok == allowed

        wait_for(settled, timeout=30, what=f"{'admitted' if allowed else 'refused'}: {outcome}")
        return outcome[0]


@pytest.fixture
def teams(controlplane: ControlPlane, datacache_crds: list[str]) -> Iterator[Teams]:
    label = f"policies-{uuid.uuid4().hex[:8]}"
    documents = [copy.deepcopy(doc) for doc in yaml.safe_load_all(POLICY_FILE.read_text()) if doc]
    for doc in documents:
        doc["metadata"]["name"] = f"{label}.{doc['metadata']['name']}"
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = f"{label}.{doc['spec']['policyName']}"
            doc["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {label: "true"}}}
    controlplane.apply(documents)
    try:
        yield Teams(controlplane, label)
    finally:
        for doc in reversed(documents):
            controlplane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
        controlplane.kubectl("label", "namespace", "default", f"{label}-", check=False)


def pod(name: str, bucket: str | None) -> dict[str, Any]:
    annotations = {ECI_BUCKET_ANNOTATION: bucket} if bucket is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "registry.invalid/app:1"}],
        },
    }


def copy_to(name: str, *buckets: str | None) -> dict[str, Any]:
    destinations = [
        {"region": f"cn-region{i}", **({"bucket": b} if b else {})} for i, b in enumerate(buckets)
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "DataCacheReplication",
        "metadata": {"name": name},
        "spec": {"source": {"dataCacheRef": {"name": "model"}}, "destinations": destinations},
    }


def test_datacaches_keep_to_their_namespaces_buckets(teams: Teams) -> None:
    suffix = uuid.uuid4().hex[:6]
    team_a, team_b = teams.namespace(f"team-a-{suffix}"), teams.namespace(f"team-b-{suffix}")

    # No bucket: the namespace's own, always allowed. Its own named: allowed.
    teams.decided(team_b, datacache("own"), allowed=True)
    teams.decided(team_b, datacache("named", bucket=team_b), allowed=True)

    # Team A's bucket (or ECI's shared default) from team B: refused at apply, naming the rule.
    error = teams.decided(team_b, datacache("theirs", bucket=team_a), allowed=False)
    assert f"spec.bucket: {bucket_refusal(team_a, team_b)}" in error, error
    assert not bucket_allowed(team_a, team_b, {})
    error = teams.decided(team_b, datacache("shared", bucket="default"), allowed=False)
    assert "is not a bucket of namespace" in error

    # An administrator assigns team B a shared bucket: allowed, and only that one.
    teams.assign(team_b, " shared-models , models-b")
    teams.decided(team_b, datacache("shared", bucket="shared-models"), allowed=True)
    teams.decided(team_b, datacache("b2", bucket="models-b"), allowed=True)
    teams.decided(team_b, datacache("theirs", bucket=team_a), allowed=False)
    annotations = {BUCKETS_ANNOTATION: " shared-models , models-b"}
    assert bucket_allowed("models-b", team_b, annotations) and not bucket_allowed(team_a, team_b, annotations)

    # Taken back: refused again.
    teams.assign(team_b, None)
    teams.decided(team_b, datacache("shared", bucket="shared-models"), allowed=False)


def test_every_pod_keeps_to_its_namespaces_buckets(teams: Teams, controlplane: ControlPlane) -> None:
    suffix = uuid.uuid4().hex[:6]
    team_a, team_b = teams.namespace(f"team-a-{suffix}"), teams.namespace(f"team-b-{suffix}")

    # A pod that never asked the webhook for anything, carrying team A's bucket by hand.
    error = teams.decided(team_b, pod("by-hand", team_a), allowed=False)
    assert f"metadata.annotations[{ECI_BUCKET_ANNOTATION}]: {bucket_refusal(team_a, team_b)}" in error
    teams.decided(team_b, pod("own", team_b), allowed=True)
    teams.decided(team_b, pod("plain", None), allowed=True)  # no bucket: not the policy's business

    # Admitted while the bucket was assigned, the pod stays changeable after it is taken back;
    # another pod (or the same pod switching buckets) is refused.
    teams.assign(team_b, "shared-models")
    teams.decided(team_b, pod("probe", "shared-models"), allowed=True)
    assert teams.create(team_b, pod("kept", "shared-models"), dry_run=False)[0]
    teams.assign(team_b, None)
    teams.decided(team_b, pod("probe", "shared-models"), allowed=False)
    ok, error = teams.patch(team_b, "pod", "kept", {"metadata": {"labels": {"still": "changeable"}}})
    assert ok, error
    ok, error = teams.patch(
        team_b, "pod", "kept", {"metadata": {"annotations": {ECI_BUCKET_ANNOTATION: team_a}}}
    )
    assert not ok and "is not a bucket of namespace" in error
    controlplane.kubectl("delete", "pod", "kept", "-n", team_b, "--wait=false")


def test_the_default_namespace_does_not_own_ecis_default_bucket(
    teams: Teams, controlplane: ControlPlane
) -> None:
    """ECI pods without the annotation all look in the bucket `default`: no namespace owns it."""
    controlplane.kubectl("label", "namespace", "default", f"{teams.label}=true", "--overwrite")
    error = teams.decided("default", pod("shared", "default"), allowed=False)
    assert "its own is ns.default" in error, error
    teams.decided("default", pod("own", "ns.default"), allowed=True)
    assert bucket_allowed("ns.default", "default", {}) and not bucket_allowed("default", "default", {})


def test_replication_destinations_keep_to_their_namespaces_buckets(teams: Teams) -> None:
    suffix = uuid.uuid4().hex[:6]
    team_a, team_b = teams.namespace(f"team-a-{suffix}"), teams.namespace(f"team-b-{suffix}")

    teams.decided(team_b, copy_to("defaulted", None, team_b), allowed=True)
    error = teams.decided(team_b, copy_to("theirs", None, team_a, "default"), allowed=False)
    assert f"spec.destinations[].bucket: bucket {team_a}, default is not a bucket" in error, error

    # Admitted with an assigned bucket, then taken back: the object can still be changed (and
    # so deleted, finalizers and all), but no destination with a foreign bucket can be added.
    teams.assign(team_b, "shared-models")
    teams.decided(team_b, copy_to("probe", "shared-models"), allowed=True)
    assert teams.create(team_b, copy_to("kept", "shared-models"), dry_run=False)[0]
    teams.assign(team_b, None)
    teams.decided(team_b, copy_to("probe", "shared-models"), allowed=False)
    ok, error = teams.patch(team_b, "edcr", "kept", {"metadata": {"labels": {"still": "changeable"}}})
    assert ok, error
    destinations = copy_to("kept", "shared-models", team_a)["spec"]["destinations"]
    ok, error = teams.patch(team_b, "edcr", "kept", {"spec": {"destinations": destinations}})
    assert not ok and f"bucket {team_a} is not a bucket of namespace {team_b}" in error, error
