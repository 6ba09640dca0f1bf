"""The virtual node (tests/support/virtualnode.py) against the real apiserver and the emulator:
a Node like ACK's, pods placed on it become ECI container groups through the official SDK,
carry their data cache, report their phase and ECI's events, and go with their pods.
(No scheduler here: the pods name the node, as the scheduler would; the chain through the
webhook and the scheduler is in tests/e2e.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
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


def test_forty_pods_at_once_run_in_parallel_each_with_one_group_and_leave_none(
    node: VirtualNode, kube: Kube, eci: Any
) -> None:
    """The node's workers (8) take pods in parallel, each pod's operations in order: with every
    ECI call slowed to 300 ms, 40 pods done one after the other would take 12 s
    of creates; here the creates overlap, every pod runs with exactly one group (its uid the
    ClientToken of every create sent for it), and pods deleted as soon as they were created
    (the delete queued behind the create in flight) leave no group. Then all go, and their
    groups with them."""
    eci.set_faults(fault_latency_ms=300)  # every call (the faults' action filter is for caches only)
    names = [f"many-{n:02d}" for n in range(40)]
    flash = [f"flash-{n}" for n in range(4)]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [pod(n, kube.namespace, "/models/none") for n in names + flash],
        }
    )
    kube.kubectl("delete", "pod", *flash, "--wait=false")

    def pods() -> dict[str, dict[str, Any]]:
        listed = json.loads(kube.kubectl("get", "pods", "-o", "json").stdout)["items"]
        return {p["metadata"]["name"]: p for p in listed}

    def all_running() -> dict[str, dict[str, Any]] | None:
        found = pods()
        running = [n for n in names if found.get(n, {}).get("status", {}).get("phase") == "Running"]
        return found if len(running) == len(names) and not set(flash) & set(found) else None

    found = wait_for(all_running, timeout=90, interval=0.5, what="40 pods Running, the flash pods gone")
    assert found is not None
    uids = {name: found[name]["metadata"]["uid"] for name in names}
    groups = [g for g in eci.container_groups() if g["ContainerGroupName"].startswith(f"{kube.namespace}-")]
    by_name: dict[str, list[str]] = {}
    for group in groups:
        by_name.setdefault(group["ContainerGroupName"], []).append(group["ContainerGroupId"])
    assert {n: len(by_name.get(f"{kube.namespace}-{n}", [])) for n in names} == dict.fromkeys(names, 1)
    assert not [n for n in flash if f"{kube.namespace}-{n}" in by_name], "a deleted pod's group stayed"

    creates = [
        c
        for c in eci.calls(action="CreateContainerGroup")
        if c["params"]["ContainerGroupName"].startswith(f"{kube.namespace}-many-")
    ]
    tokens: dict[str, set[str]] = {}
    for call in creates:
        name = call["params"]["ContainerGroupName"].removeprefix(f"{kube.namespace}-")
        tokens.setdefault(name, set()).add(call["params"]["ClientToken"])
    assert tokens == {n: {uids[n]} for n in names}
    # Done one by one, the last create would end at least 11.7 s after the first (the log's
    # times are to the second).
    times = sorted(datetime.fromisoformat(c["time"].replace("Z", "+00:00")) for c in creates)
    span = (times[-1] - times[0]).total_seconds()
    assert span <= 7, f"the creates took {span} s from first to last: not in parallel"

    kube.kubectl("delete", "pods", *names, "--wait=false")
    wait_for(lambda: not set(names) & set(pods()), timeout=60, interval=0.5, what="the 40 pods to go")
    left = [g["ContainerGroupName"] for g in eci.container_groups()]
    assert not [g for g in left if g.startswith(f"{kube.namespace}-")], left
