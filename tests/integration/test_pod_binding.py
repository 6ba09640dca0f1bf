"""Pods use caches by name: the real apiserver calls the operator's webhook over TLS, the
kube-controller-manager makes the Deployments' pods, the emulator builds the caches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.integration.support import Kube, OperatorProcess, opted_in_pod, wait_for
from tests.integration.test_datacache_lifecycle import caches_owned_by, datacache, unique
from tests.integration.test_replication import replication

from datacache_operator.api.buckets import BUCKETS_ANNOTATION

GATE = "eci.datacache.dev/cache-ready"
BOUND = "eci.datacache.dev/bound"
BUCKET = "k8s.aliyun.com/eci-data-cache-bucket"


@pytest.fixture(autouse=True)
def assigned_buckets(kube: Kube) -> None:
    """The buckets these tests name, assigned to their namespace by an administrator."""
    kube.controlplane.kubectl(
        "annotate", "namespace", kube.namespace, f"{BUCKETS_ANNOTATION}=models, one, two", "--overwrite"
    )


def deployment(name: str, caches: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "eci.datacache.dev/inject": "true"},
                    "annotations": {"eci.datacache.dev/caches": caches},
                },
                "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]},
            },
        },
    }


def pods_of(kube: Kube, app: str) -> list[dict[str, Any]]:
    found = json.loads(kube.kubectl("get", "pods", "-l", f"app={app}", "-o", "json").stdout)
    return list(found["items"])


def gates(pod: dict[str, Any]) -> list[str]:
    return [g["name"] for g in pod["spec"].get("schedulingGates") or []]


def events_of(kube: Kube, name: str) -> str:
    return kube.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}").stdout


def create_pod(kube: Kube, pod: dict[str, Any], *extra: str) -> Any:
    return kube.controlplane.kubectl(
        "create", "-n", kube.namespace, "-f", "-", *extra, input=json.dumps(pod), check=False
    )


def test_deployment_pods_are_bound_and_held_until_the_cache_is_ready(
    kube: Kube, binding_operator: OperatorProcess, eci: Any
):
    name = unique("qwen")
    eci.add_rule("stall", path=f"/models/{name}", operations=["create"])
    kube.apply(datacache(name, bucket="models"))
    kube.wait_condition("datacache", name, "Ready", "False")
    kube.apply(deployment("infer", f"{name}:/models/qwen:ro", replicas=2))

    pods = wait_for(lambda: (p := pods_of(kube, "infer")) and len(p) == 2 and p, what="two pods")
    for pod in pods:
        annotations, spec = pod["metadata"]["annotations"], pod["spec"]
        assert annotations[BUCKET] == "models"
        volume = next(v for v in spec["volumes"] if v["name"] == f"datacache-{name}")
        assert volume["hostPath"]["path"] == f"/models/{name}"
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == f"datacache-{name}")
        assert mount["mountPath"] == "/models/qwen" and mount["readOnly"] is True
        assert gates(pod) == [GATE]
        bound = json.loads(annotations[BOUND])
        assert [(b["name"], b["region"], b["bucket"], b["path"]) for b in bound] == [
            (name, "cn-hangzhou", "models", f"/models/{name}")
        ]
    wait_for(
        lambda: (kube.get("datacache", name) or {}).get("status", {}).get("consumers") == 2,
        what="status.consumers = 2",
    )

    eci.clear_rules()  # the build finishes
    kube.wait_condition("datacache", name, "Ready", "True", timeout=60)
    # Well before the 30 s resync: the cache turning Ready is what ungates them.
    ungated = wait_for(
        lambda: all(not gates(p) for p in pods_of(kube, "infer")) and pods_of(kube, "infer"),
        timeout=20,
        what="the gates removed",
    )
    for pod in ungated:
        bound = json.loads(pod["metadata"]["annotations"][BOUND])
        assert bound[0]["dataCacheId"].startswith("edc-")  # known now, recorded for `kubectl describe`
        assert "eci.datacache.dev/gated" not in pod["metadata"]["labels"]
        assert "CachesReady" in wait_for(
            lambda p=pod: events_of(kube, p["metadata"]["name"]) or None, what="event"
        )


def test_a_cache_in_another_region_is_bound_through_its_copy(
    kube: Kube, binding_operator: OperatorProcess, eci: Any
):
    source = unique("hk")
    kube.apply(datacache(source, region="cn-hongkong"))
    kube.wait_condition("datacache", source, "Ready", "True")
    copies = unique("rep")
    kube.apply(
        replication(
            copies, {"dataCacheRef": {"name": source}}, {"region": "cn-hangzhou", "path": f"/copies/{source}"}
        )
    )
    kube.wait_condition("datacachereplication", copies, "Ready", "True", timeout=90)

    pod = opted_in_pod("reader", f"{source}:/data")
    assert create_pod(kube, pod).returncode == 0
    created = kube.get("pod", "reader")
    assert created is not None
    bound = json.loads(created["metadata"]["annotations"][BOUND])[0]
    copy_id = kube.get("datacachereplication", copies)["status"]["destinations"][0]["dataCacheId"]
    assert (bound["region"], bound["path"], bound["replication"], bound["dataCacheId"]) == (
        "cn-hangzhou",
        f"/copies/{source}",
        copies,
        copy_id,
    )
    assert not gates(created)  # the copy is Available
    vol = next(v for v in created["spec"]["volumes"] if v["name"] == f"datacache-{source}")
    assert vol["hostPath"]["path"] == f"/copies/{source}"

    # No copy into the cluster's region: denied, naming both regions.
    lonely = unique("sg")
    kube.apply(datacache(lonely, region="ap-southeast-1"))
    refused = create_pod(kube, opted_in_pod("lonely", f"{lonely}:/data"))
    assert refused.returncode != 0
    assert "ap-southeast-1" in refused.stderr and "cn-hangzhou" in refused.stderr


@pytest.mark.parametrize(
    ("caches", "spec", "message"),
    [
        ("missing-cache:/m", {}, "DataCache missing-cache not found in namespace {ns}"),
        ("{a}", {}, "is not NAME:MOUNTPATH"),
        (
            "{a}:/m",
            {
                "containers": [
                    {"name": "c", "image": "i", "volumeMounts": [{"name": "x", "mountPath": "/m"}]}
                ],
                "volumes": [{"name": "x", "emptyDir": {}}],
            },
            "container c already mounts volume x at /m",
        ),
        ("{a}:/m,{b}:/n", {}, "are in different buckets"),
    ],
    ids=["missing", "malformed", "mount-path-in-use", "two-buckets"],
)
def test_denials_name_the_problem(
    kube: Kube, binding_operator: OperatorProcess, caches: str, spec: dict[str, Any], message: str
):
    a, b = unique("a"), unique("b")
    kube.apply(datacache(a, bucket="one"))
    kube.apply(datacache(b, bucket="two"))
    refused = create_pod(kube, opted_in_pod("denied", caches.format(a=a, b=b), **spec))
    assert refused.returncode != 0
    assert "denied the request" in refused.stderr
    assert message.format(ns=kube.namespace) in refused.stderr
    assert kube.get("pod", "denied") is None


def test_a_server_side_dry_run_binds_but_creates_nothing(kube: Kube, binding_operator: OperatorProcess):
    name = unique("dry")
    kube.apply(datacache(name))
    kube.wait_condition("datacache", name, "Ready", "True")
    result = create_pod(kube, opted_in_pod("dry", f"{name}:/m"), "--dry-run=server", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metadata"]["annotations"][BUCKET] == kube.namespace
    assert kube.get("pod", "dry") is None


def test_pods_without_the_label_never_reach_the_webhook(
    kube: Kube, binding_operator: OperatorProcess, namespace: str
):
    binding_operator.stop()
    plain = opted_in_pod("plain", "anything:/m")
    del plain["metadata"]["labels"]
    assert create_pod(kube, plain).returncode == 0
    # An opted-in pod is refused while nobody answers: it must not start unbound.
    refused = create_pod(kube, opted_in_pod("opted-in", "anything:/m"))
    assert refused.returncode != 0 and "failed calling webhook" in refused.stderr


def test_an_in_use_datacache_keeps_its_cloud_cache_until_the_last_pod_ends(
    kube: Kube, binding_operator: OperatorProcess, eci: Any
):
    name = unique("used")
    kube.apply(datacache(name))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    uid, cache_id = obj["metadata"]["uid"], obj["status"]["dataCacheId"]
    kube.apply(deployment("user", f"{name}:/m", replicas=1))
    wait_for(lambda: len(pods_of(kube, "user")) == 1, what="the pod")

    kube.kubectl("delete", "datacache", name, "--wait=false")
    kept = kube.wait_condition("datacache", name, "Ready", "False", reason="InUse")
    pod_name = pods_of(kube, "user")[0]["metadata"]["name"]
    assert pod_name in next(c["message"] for c in kept["status"]["conditions"] if c["type"] == "Ready")
    assert f"{kube.namespace}/{pod_name}" in events_of(kube, name)
    assert eci.cache(cache_id) is not None and not [
        c for c in eci.calls(action="DeleteDataCache") if c["params"].get("DataCacheId") == cache_id
    ]
    # A new pod cannot bind to a cache that is going away.
    refused = create_pod(kube, opted_in_pod("late", f"{name}:/m"))
    assert "is being deleted" in refused.stderr

    kube.kubectl("scale", "deployment", "user", "--replicas=0")
    wait_for(lambda: kube.get("datacache", name) is None, timeout=60, what="the DataCache gone")
    wait_for(lambda: not caches_owned_by(eci, uid), timeout=30, what="the cloud cache deleted")


def test_a_failed_cache_tells_its_waiting_pods_and_keeps_them_gated(
    kube: Kube, binding_operator: OperatorProcess, eci: Any
):
    name = unique("broken")
    paused = datacache(name)
    paused["metadata"]["annotations"] = {"eci.datacache.dev/paused": "true"}  # no cloud call yet
    kube.apply(paused)
    kube.wait_condition("datacache", name, "Synced", "False", reason="ReconcilePaused")
    assert create_pod(kube, opted_in_pod("waiting", f"{name}:/m")).returncode == 0
    eci.add_rule("fail", "the repository is gone", path=f"/models/{name}", operations=["create"])
    kube.kubectl("annotate", "datacache", name, "eci.datacache.dev/paused-")
    kube.wait_condition("datacache", name, "Stalled", "True", timeout=60)
    text = wait_for(lambda: "CacheNotUsable" in (e := events_of(kube, "waiting")) and e, what="a warning")
    assert "the repository is gone" in text
    assert gates(kube.get("pod", "waiting")) == [GATE]
