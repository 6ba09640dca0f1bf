"""The plain manifests of `deploy/` (`kubectl apply -k deploy/`, as Argo CD or Flux would) on a
cluster with a node: the same install checks as the chart's, through a kustomize overlay that
points them at the image, the ECI endpoint and a credentials Secret (the README's way)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import yaml
from tests.e2e.stack import CLUSTER_REGION, CREDENTIALS_SECRET, credentials_secret
from tests.e2e.support import (
    BOUND_ANNOTATION,
    REPO,
    Cluster,
    diagnose,
    example,
    lease_holder,
    opted_in_pod,
    restarts,
    wait_cache_ready,
    wait_replicas_ready,
)
from tests.integration.support import wait_for

pytestmark = pytest.mark.timeout(600)

NAMESPACE = "eci-datacache-system"
INSTANCE = "eci-datacache-operator"
TEAM = "team-b"
DEFAULT_IMAGE = "ghcr.io/eci-datacache/eci-datacache-operator"


def overlay(cluster: Cluster) -> str:
    """A kustomization on top of deploy/: the image, the emulator and its credentials."""
    image = cluster.values["image"]
    secret = {"name": CREDENTIALS_SECRET}
    env = [
        {"name": "ECI_ENDPOINT", "value": cluster.values["eci"]["endpoint"]},
        {"name": "ECI_PROTOCOL", "value": "http"},
        {"name": "DATACACHE_HUGGINGFACE_ENDPOINT", "value": cluster.values["hubs"]["huggingfaceEndpoint"]},
        {"name": "DATACACHE_MODELSCOPE_ENDPOINT", "value": cluster.values["hubs"]["modelscopeEndpoint"]},
        {"name": "DATACACHE_CLUSTER_REGION", "value": CLUSTER_REGION},
        {
            "name": "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {**secret, "key": "ALIBABA_CLOUD_ACCESS_KEY_ID"}},
        },
        {
            "name": "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "valueFrom": {"secretKeyRef": {**secret, "key": "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}},
        },
    ]
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": item} for item in env]
    patch.append(
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/imagePullPolicy",
            "value": image["pullPolicy"],
        }
    )
    folder = cluster.workdir / "deploy-overlay"
    folder.mkdir(exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes a base by a relative path only.
                "resources": [os.path.relpath(REPO / "deploy", folder)],
                "images": [{"name": DEFAULT_IMAGE, "newName": image["repository"], "newTag": image["tag"]}],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": INSTANCE},
                        "patch": yaml.safe_dump(patch),
                    }
                ],
            }
        )
    )
    return str(folder)


def test_deploy_manifests_install_run_and_serve(cluster: Cluster) -> None:
    cluster.apply(credentials_secret(NAMESPACE))
    folder = overlay(cluster)
    cluster.kubectl("apply", "--server-side", "-k", folder)
    pods = wait_replicas_ready(cluster, NAMESPACE, INSTANCE)
    assert [restarts(pod) for pod in pods] == [0, 0], diagnose(cluster, NAMESPACE)
    names = {pod["metadata"]["name"] for pod in pods}
    wait_for(lambda: lease_holder(cluster, NAMESPACE) in names, timeout=19, what="a replica holds the Lease")

    cluster.kubectl("create", "namespace", TEAM, check=False)
    cache = example("datacache-url.yaml", TEAM)
    cache["spec"]["region"] = CLUSTER_REGION  # pods run there
    cluster.apply(cache)
    name = cache["metadata"]["name"]
    wait_cache_ready(cluster, TEAM, name)
    pod_name = f"consumer-{uuid.uuid4().hex[:6]}"
    image = cluster.values["image"]
    cluster.apply(opted_in_pod(pod_name, TEAM, f"{name}:/weights", f"{image['repository']}:{image['tag']}"))
    pod: dict[str, Any] | None = cluster.get("pod", pod_name, "-n", TEAM)
    assert pod is not None and BOUND_ANNOTATION in pod["metadata"]["annotations"]
    assert not pod["spec"].get("schedulingGates"), "a pod of a Ready cache is not held back"

    # Deleted while the operator runs: the pod first (in-use protection), then the cache.
    cluster.kubectl("delete", "pod", pod_name, "-n", TEAM, "--grace-period=0", "--force")
    cluster.kubectl("delete", "datacache", name, "-n", TEAM, "--timeout=120s")
    rendered = cluster.kubectl("kustomize", folder).stdout
    operator_objects = [
        d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "CustomResourceDefinition"
    ]
    cluster.kubectl("delete", "-f", "-", "--wait=true", input=yaml.safe_dump_all(operator_objects))
    assert cluster.get("mutatingwebhookconfiguration", INSTANCE) is None
