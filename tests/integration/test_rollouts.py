"""Rolling workloads onto a cache's new revision, on the real apiserver with
kube-controller-manager: `roll` records the revision on the pod templates of the opted-in
Deployments and StatefulSets that use the cache, and their own controllers roll them (a new
ReplicaSet, a new StatefulSet revision); nothing else is touched, a second call patches
nothing, and with the chart's RBAC the operator may do it only when `rollouts.enabled`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.integration.support import Kube, wait_for
from tests.integration.test_rbac import As, chart_rbac
from tests.support.controlplane import ControlPlane

from datacache_operator import kube as operator_kube
from datacache_operator.api.binding import CACHES_ANNOTATION, INJECT_LABEL
from datacache_operator.api.rollouts import ROLLOUT_ANNOTATION, revision_annotation
from datacache_operator.controllers.rollouts import roll

CACHE = "qwen"
TIMEOUT = 60


def template(app: str, caches: str) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {"app": app, INJECT_LABEL: "true"},
            "annotations": {CACHES_ANNOTATION: caches},
        },
        "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]},
    }


def deployment(name: str, caches: str, opt_in: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {ROLLOUT_ANNOTATION: "true"} if opt_in else {}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            # No kubelet here: no pod ever becomes available, so the rollout goes as far as
            # maxSurge lets it (one new pod), which is the controller's own pacing.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template(name, caches),
        },
    }


def statefulset(name: str, caches: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "annotations": {ROLLOUT_ANNOTATION: "true"}},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": template(name, caches),
        },
    }


def replica_sets(kube: Kube, app: str) -> list[dict[str, Any]]:
    found = json.loads(kube.kubectl("get", "replicasets", "-l", f"app={app}", "-o", "json").stdout)
    return list(found["items"])


def two_scaled_up(kube: Kube, app: str) -> list[dict[str, Any]] | None:
    """The Deployment's two ReplicaSets once both have replicas, else None."""
    sets = replica_sets(kube, app)
    return sets if len(sets) == 2 and all(s["spec"]["replicas"] for s in sets) else None


def revision_of(obj: dict[str, Any] | None) -> str | None:
    annotations = ((obj or {})["spec"]["template"]["metadata"]).get("annotations") or {}
    return annotations.get(revision_annotation(CACHE))


@pytest.fixture
def workloads(controlplane: ControlPlane, kube: Kube) -> dict[str, dict[str, Any]]:
    """Four Deployments and a StatefulSet, as their controllers made them: one ReplicaSet each,
    the StatefulSet at its first revision."""
    if not controlplane.has_controller_manager:
        pytest.skip("no kube-controller-manager: nothing would roll the workloads")
    made = {
        "infer": deployment("infer", f"{CACHE}:/models/qwen:ro"),
        "both": deployment("both", f"sdxl:/models/sdxl,{CACHE}:/models/qwen"),
        "manual": deployment("manual", f"{CACHE}:/models/qwen:ro", opt_in=False),
        "other": deployment("other", "sdxl:/models/sdxl"),
        "shards": statefulset("shards", f"{CACHE}:/models/qwen"),
    }
    for manifest in made.values():
        kube.apply(manifest)
    for name in ("infer", "both", "manual", "other"):
        wait_for(lambda n=name: len(replica_sets(kube, n)) == 1, timeout=TIMEOUT, what=f"{name}'s ReplicaSet")
    wait_for(
        lambda: (kube.get("statefulset", "shards") or {}).get("status", {}).get("updateRevision"),
        timeout=TIMEOUT,
        what="the StatefulSet's first revision",
    )
    return {name: kube.get(m["kind"].lower(), name) or {} for name, m in made.items()}


@pytest.mark.usefixtures("kube_in_process")
def test_opted_in_workloads_using_the_cache_are_rolled_by_their_own_controllers(
    controlplane: ControlPlane, kube: Kube, workloads: dict[str, dict[str, Any]]
):
    rolled = asyncio.run(roll(kube.namespace, CACHE, "r2"))
    assert rolled == ["Deployment/both", "Deployment/infer", "StatefulSet/shards"]

    for name in ("infer", "both"):
        found = kube.get("deployment", name)
        assert revision_of(found) == "r2"
        # The controller-manager's rolling update: a second ReplicaSet whose pods carry the
        # revision, scaled up as far as maxSurge allows; the old one still serves.
        sets = wait_for(
            lambda n=name: two_scaled_up(kube, n), timeout=TIMEOUT, what=f"{name}'s new ReplicaSet"
        )
        new = next(s for s in sets if revision_of(s) == "r2")
        old = next(s for s in sets if s is not new)
        assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        assert (new["spec"]["replicas"], old["spec"]["replicas"]) == (1, 2), "more than maxSurge at once"
        # Only the pod template's annotation changed: the caches it names are the same.
        assert (
            new["spec"]["template"]["metadata"]["annotations"][CACHES_ANNOTATION]
            == (workloads[name]["spec"]["template"]["metadata"]["annotations"][CACHES_ANNOTATION])
        )

    first = workloads["shards"]["status"]["updateRevision"]
    updated = wait_for(
        lambda: (
            (s := kube.get("statefulset", "shards"))
            and s["status"].get("updateRevision") not in (None, first)
            and s
        ),
        timeout=TIMEOUT,
        what="the StatefulSet's new revision",
    )
    assert revision_of(updated) == "r2"

    # Not opted in, or another cache: not touched at all (no new generation, no annotation).
    for name in ("manual", "other"):
        found = kube.get("deployment", name) or {}
        assert found["metadata"]["generation"] == workloads[name]["metadata"]["generation"] == 1
        assert revision_of(found) is None and len(replica_sets(kube, name)) == 1

    # Again with the same revision: nothing is patched (no workload gets a new generation).
    generations = {
        n: (kube.get(w["kind"].lower(), n) or {})["metadata"]["generation"] for n, w in workloads.items()
    }
    assert asyncio.run(roll(kube.namespace, CACHE, "r2")) == []
    again = {
        n: (kube.get(w["kind"].lower(), n) or {})["metadata"]["generation"] for n, w in workloads.items()
    }
    assert again == generations
    assert len(replica_sets(kube, "infer")) == 2

    # Another cache's revision rolls the opted-in workloads that use that one.
    assert asyncio.run(roll(kube.namespace, "sdxl", "r9")) == ["Deployment/both", "Deployment/other"]


@pytest.mark.usefixtures("kube_in_process")
def test_a_concurrent_change_of_the_template_is_kept(kube: Kube):
    """Between the read and the patch someone else annotates the template: the `test` fails,
    `roll` reads the Deployment again and records the revision beside that change."""
    kube.apply(deployment("raced", f"{CACHE}:/m"))

    async def read_then_race(namespace: str) -> list[dict[str, Any]]:
        listed = await operator_kube.list_workloads(namespace)
        kube.kubectl("patch", "deployment", "raced", "--type=merge", "-p",
                     json.dumps({"spec": {"template": {"metadata": {"annotations": {"team": "ml"}}}}}))  # fmt: skip
        return listed

    assert asyncio.run(roll(kube.namespace, CACHE, "r2", list_workloads=read_then_race)) == [
        "Deployment/raced"
    ]
    annotations = (kube.get("deployment", "raced") or {})["spec"]["template"]["metadata"]["annotations"]
    assert annotations["team"] == "ml" and annotations[revision_annotation(CACHE)] == "r2"


# `roll` as the operator's process runs it, with nothing but a token of the chart's ServiceAccount.
ROLL_AS = """
import asyncio, json, sys
from kubernetes.client.exceptions import ApiException
from datacache_operator.controllers.rollouts import roll
try:
    print(json.dumps({"rolled": asyncio.run(roll(*sys.argv[1:4]))}))
except ApiException as error:
    body = error.body.decode() if isinstance(error.body, bytes) else error.body
    print(json.dumps({"status": error.status, "message": json.loads(body)["message"]}))
"""


def roll_as(controlplane: ControlPlane, kubeconfig: Path, namespace: str, revision: str) -> dict[str, Any]:
    env = {**controlplane.env(), "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run(
        [sys.executable, "-c", ROLL_AS, namespace, CACHE, revision],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_the_chart_lets_the_operator_roll_workloads_only_when_rollouts_are_enabled(
    mode: str, controlplane: ControlPlane, kube: Kube, namespace: str
):
    kube.apply(deployment("web", f"{CACHE}:/m"))
    kube.apply(statefulset("db", f"{CACHE}:/m"))
    namespaced = mode == "namespaced"

    account, docs = chart_rbac(controlplane, namespace, namespaced)
    controlplane.apply(docs)
    operator = As(controlplane, namespace, account)
    wait_for(
        lambda: operator.kubectl("-n", namespace, "auth", "can-i", "create", "events")
        .stdout.strip() == "yes",
        what="the chart's roles in force",
    )  # fmt: skip
    for verb in ("get", "list", "patch"):
        for resource in ("deployments.apps", "statefulsets.apps"):
            assert operator.kubectl("-n", namespace, "auth", "can-i", verb, resource).stdout.strip() == "no"
    refused = roll_as(controlplane, operator.kubeconfig, namespace, "r1")
    assert refused.get("status") == 403, refused
    assert 'cannot list resource "deployments" in API group "apps"' in refused["message"]
    assert revision_of(kube.get("deployment", "web")) is None

    account, docs = chart_rbac(controlplane, namespace, namespaced, "--set", "rollouts.enabled=true")
    controlplane.apply(docs)
    operator = As(controlplane, namespace, account)
    wait_for(
        lambda: operator.kubectl("-n", namespace, "auth", "can-i", "patch", "statefulsets.apps")
        .stdout.strip() == "yes",
        what="the chart's rollout rules in force",
    )  # fmt: skip
    assert roll_as(controlplane, operator.kubeconfig, namespace, "r1") == {
        "rolled": ["Deployment/web", "StatefulSet/db"]
    }
    assert revision_of(kube.get("deployment", "web")) == revision_of(kube.get("statefulset", "db")) == "r1"
    # Never more than that: no create or delete of workloads, nothing on their pods' controllers.
    for verb, resource in [
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("update", "statefulsets.apps"),
        ("patch", "replicasets.apps"),
        ("patch", "daemonsets.apps"),
        ("watch", "deployments.apps"),
    ]:
        assert operator.kubectl("-n", namespace, "auth", "can-i", verb, resource).stdout.strip() == "no"
    if namespaced:  # only in the watched namespace
        assert (
            operator.kubectl("-n", "default", "auth", "can-i", "list", "deployments.apps").stdout.strip()
            == "no"
        )
