"""The virtual node (tests/support/virtualnode.py) against the real apiserver and the emulator:
a Node like ACK's, pods placed on it become ECI container groups through the official SDK,
carry their data cache, report their phase and ECI's events, and go with their pods.
(No scheduler here: the pods name the node, as the scheduler would; the chain through the
webhook and the scheduler is in tests/e2e.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_eci20180808 import models
from tests.integration.support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Kube, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.virtualnode import NODE_NAME, TAINT, VirtualNode

from datacache_operator.api.binding import ECI_BUCKET_ANNOTATION

REGION = "cn-hangzhou"


@pytest.fixture
def node(controlplane: ControlPlane, emulator: Any) -> Iterator[VirtualNode]:
    with VirtualNode(
        str(controlplane.kubeconfig), emulator.endpoint, REGION, ACCESS_KEY_ID, ACCESS_KEY_SECRET
    ) as vn:
        yield vn


def available_cache(node: VirtualNode, eci: Any, bucket: str, path: str) -> str:
    request = models.CreateDataCacheRequest(
        region_id=REGION,
        bucket=bucket,
        path=path,
        data_source=models.CreateDataCacheRequestDataSource(
            type="URL", options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"}
        ),
    )
    cache_id = str(node.eci.create_data_cache(request).body.data_cache_id)
    eci.advance(3600)
    assert eci.cache(cache_id)["Status"] == "Available", eci.cache(cache_id)["Events"]
    return cache_id


def pod(name: str, bucket: str | None, path: str | None, restart: str = "Always") -> dict[str, Any]:
    annotations = {ECI_BUCKET_ANNOTATION: bucket} if bucket else {}
    volumes = [{"name": "model", "hostPath": {"path": path, "type": "Directory"}}] if path else []
    mounts = [{"name": "model", "mountPath": "/model", "readOnly": True}] if path else []
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": NODE_NAME,
            "restartPolicy": restart,
            "automountServiceAccountToken": False,
            "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": volumes,
            "containers": [{"name": "main", "image": "vllm/vllm-openai:v0", "volumeMounts": mounts}],
        },
    }


def phase(kube: Kube, name: str, wanted: str) -> dict[str, Any]:
    return wait_for(
        lambda: (p := kube.get("pod", name)) and p.get("status", {}).get("phase") == wanted and p,
        timeout=60,
        what=f"pod {name} {wanted}",
    )


def events(kube: Kube, name: str) -> list[tuple[str, str]]:
    listed = json.loads(
        kube.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout
    )
    return [(e["type"], e["reason"]) for e in listed["items"]]


def groups_of(eci: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    return [g for g in eci.container_groups() if g["ContainerGroupName"] == f"{namespace}-{name}"]


def test_the_node_looks_like_acks_virtual_node(node: VirtualNode, controlplane: ControlPlane) -> None:
    found = json.loads(controlplane.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    assert found["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert TAINT in found["spec"]["taints"]  # (and the not-ready one, which no node controller here lifts)
    ready = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease = json.loads(
        controlplane.kubectl("get", "lease", NODE_NAME, "-n", "kube-node-lease", "-o", "json").stdout
    )
    assert lease["spec"]["holderIdentity"] == NODE_NAME


def test_a_pod_at_a_caches_bucket_and_path_runs_with_it_and_goes_with_its_pod(
    node: VirtualNode, kube: Kube, eci: Any
) -> None:
    cache_id = available_cache(node, eci, kube.namespace, "/models/qwen")
    kube.apply(pod("infer", kube.namespace, "/models/qwen"))
    running = phase(kube, "infer", "Running")
    assert running["status"]["containerStatuses"][0]["ready"] is True
    (group,) = groups_of(eci, "infer", kube.namespace)
    assert group["DataCacheBucket"] == kube.namespace
    assert group["MatchedDataCaches"] == [
        {"Volume": "model", "DataCacheId": cache_id, "Path": "/models/qwen", "DiskGiB": 20}
    ]
    wait_for(lambda: ("Normal", "DataCacheMatched") in events(kube, "infer"), what="ECI's event on the pod")
    assert eci.cache(cache_id)["LastMatchedTime"]

    kube.kubectl("delete", "pod", "infer", "--wait=false")
    wait_for(lambda: kube.get("pod", "infer") is None, timeout=30, what="the pod to go")
    assert groups_of(eci, "infer", kube.namespace) == []


def test_a_pod_without_a_cache_there_runs_and_says_so_and_a_jobs_pod_succeeds(
    node: VirtualNode, kube: Kube, eci: Any
) -> None:
    kube.apply(pod("nothing-there", kube.namespace, "/models/none"))
    phase(kube, "nothing-there", "Running")
    wait_for(lambda: ("Warning", "DataCacheNotFound") in events(kube, "nothing-there"), what="the warning")

    kube.apply(pod("job", None, None, restart="Never"))
    phase(kube, "job", "Running")
    eci.advance(3600)
    done = phase(kube, "job", "Succeeded")
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
