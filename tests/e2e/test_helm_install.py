"""The chart installed as a user installs it, `helm install` onto a cluster with a node, then
used, failed over, upgraded and uninstalled. The tests of this module run in order, on one
release (each step builds on the one before, as a user's day would)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import yaml
from tests.e2e.stack import ACCESS_KEY_ID, ACCESS_KEY_SECRET, CLUSTER_REGION, RELEASE
from tests.e2e.support import (
    BOUND_ANNOTATION,
    CHART,
    GATE,
    Cluster,
    condition,
    diagnose,
    example,
    lease_holder,
    operator_pods,
    opted_in_pod,
    restarts,
    wait_cache_ready,
    wait_replicas_ready,
)
from tests.integration.support import wait_for
from tests.support.controlplane import KubectlError
from tests.support.virtualnode import NODE_NAME as VIRTUAL_NODE

from datacache_operator.api.rollouts import ROLLOUT_ANNOTATION

pytestmark = pytest.mark.timeout(600)

TEAM = "team-a"
CACHE = "qwen2.5-7b-instruct"
PAUSED = "eci.datacache.dev/paused"
# A deleted leader hands the Lease over as soon as its passes have stopped after SIGTERM; the
# other replica takes it at its next retry (2 s) at the latest. Without the early hand-over it
# took 5-7 s after webhook traffic (kopf waits 5 s for the webhook's open connections).
GRACEFUL_HANDOVER_S = 5.0
# The chart's leaseDuration (15 s) and two retry periods (2 s).
LEASE_EXPIRY_S = 19.0


@pytest.fixture(scope="module")
def release(cluster: Cluster, release_namespace: str) -> dict[str, Any]:
    """`helm install` as the README says, timed to both replicas Ready."""
    began = time.monotonic()
    cluster.helm("install", RELEASE, str(CHART), "-n", release_namespace, "-f", str(cluster.values_file()))
    pods = wait_replicas_ready(cluster, release_namespace, RELEASE)
    seconds = time.monotonic() - began
    print(f"helm install to both replicas Ready: {seconds:.1f} s")
    cluster.kubectl("create", "namespace", TEAM, check=False)
    return {"namespace": release_namespace, "pods": pods, "install_to_ready_s": seconds}


def _image(cluster: Cluster) -> str:
    image = cluster.values["image"]
    return f"{image['repository']}:{image['tag']}"


def test_both_replicas_run_ready_without_restarts_and_one_holds_the_lease(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    namespace = release["namespace"]
    pods = operator_pods(cluster, namespace, RELEASE)
    assert len(pods) == 2
    assert [restarts(pod) for pod in pods] == [0, 0], diagnose(cluster, namespace)
    # As the chart runs it: the image's numeric user, no passwd entry needed.
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    names = {pod["metadata"]["name"] for pod in pods}
    # A Lease left by an earlier release (uninstalled with it, its holder could not release it)
    # expires after leaseDuration: one of these pods holds it by then.
    wait_for(
        lambda: lease_holder(cluster, namespace) in names,
        timeout=LEASE_EXPIRY_S,
        what="a replica holds the Lease",
    )


def test_webhook_binds_and_gates_a_pod_then_the_operator_releases_it(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    """The apiserver calls the webhook through its Service, trusting the CA the operator made
    in the cluster; the operator, with the chart's RBAC and its pod's own ServiceAccount token,
    builds the cache and lifts the gate."""
    webhook = cluster.get("mutatingwebhookconfiguration", "-l", f"app.kubernetes.io/instance={RELEASE}")
    (configuration,) = webhook["items"] if webhook else []
    client = configuration["webhooks"][0]["clientConfig"]
    assert client["service"]["namespace"] == release["namespace"] and "url" not in client
    assert client.get("caBundle"), "the operator did not put its CA into the webhook configuration"

    cache = example("datacache-huggingface.yaml", TEAM)
    cache["metadata"].setdefault("annotations", {})[PAUSED] = "true"  # held back: the pod must wait
    cluster.apply(cache)
    pod_name = f"consumer-{uuid.uuid4().hex[:6]}"
    cluster.apply(opted_in_pod(pod_name, TEAM, f"{CACHE}:/models/qwen:ro", _image(cluster)))
    pod = cluster.get("pod", pod_name, "-n", TEAM)
    assert pod is not None and BOUND_ANNOTATION in pod["metadata"]["annotations"]
    assert {"name": GATE} in pod["spec"].get("schedulingGates", [])
    assert any(
        v["hostPath"]["path"] == cache["spec"]["path"] for v in pod["spec"]["volumes"] if "hostPath" in v
    )

    cluster.kubectl("annotate", "datacache", CACHE, "-n", TEAM, f"{PAUSED}-")
    ready = wait_cache_ready(cluster, TEAM, CACHE)
    assert ready["status"]["dataCacheId"]

    def released() -> dict[str, Any] | None:
        found = cluster.get("pod", pod_name, "-n", TEAM)
        return found if found and not found["spec"].get("schedulingGates") else None

    pod = wait_for(released, timeout=60, what="the gate lifted")
    # Past the gate, on ECI only: the virtual node makes a container group with the cache.
    running = wait_for(lambda: phase(cluster, TEAM, pod_name) == "Running", timeout=90, what="Running on ECI")
    assert running
    assert cluster.get("pod", pod_name, "-n", TEAM)["spec"]["nodeName"] == VIRTUAL_NODE  # type: ignore[index]
    group = container_group(cluster, TEAM, pod_name)
    matched = [e.message for e in group.events if e.reason == "DataCacheMatched"]
    # The cache, in the namespace's own bucket, at its path.
    assert matched and matched[0].startswith(
        f"Data cache {ready['status']['dataCacheId']} at bucket {TEAM}, path {cache['spec']['path']}"
    ), matched


def test_a_job_bound_to_the_cache_runs_to_completion_on_eci_and_its_consumers_fall_to_zero(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    # The running consumer of the test before counts (the chart's resync is every 30 s) ...
    wait_for(lambda: consumers(cluster) == 1, timeout=90, what="status.consumers = 1")
    cluster.kubectl("delete", "pod", "-n", TEAM, "-l", "app=e2e-consumer", "--wait=true")
    name = f"batch-{uuid.uuid4().hex[:6]}"
    template = opted_in_pod(f"{name}-pod", TEAM, f"{CACHE}:/models/qwen:ro", _image(cluster))
    del (
        template["apiVersion"],
        template["kind"],
        template["metadata"]["name"],
        template["metadata"]["namespace"],
    )
    template["metadata"]["labels"]["app"] = "e2e-batch"
    template["spec"]["restartPolicy"] = "Never"
    cluster.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": TEAM},
            "spec": {"backoffLimit": 0, "template": template},
        }
    )
    cluster.kubectl("wait", "--for=condition=Complete", f"job/{name}", "-n", TEAM, "--timeout=120s")
    (pod,) = cluster.get("pods", "-n", TEAM, "-l", f"job-name={name}")["items"]  # type: ignore[index]
    assert (pod["status"]["phase"], pod["spec"]["nodeName"]) == ("Succeeded", VIRTUAL_NODE)
    group = container_group(cluster, TEAM, pod["metadata"]["name"])
    assert group.status == "Succeeded" and "DataCacheMatched" in [e.reason for e in group.events]
    # ... and no pod once it is gone and the Job's pod has ended.
    wait_for(lambda: consumers(cluster) == 0, timeout=90, what="status.consumers back to 0")


def consumers(cluster: Cluster) -> int:
    return int((cluster.get("datacache", CACHE, "-n", TEAM) or {}).get("status", {}).get("consumers") or 0)


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    found = cluster.get("pod", name, "-n", namespace)
    return (found or {}).get("status", {}).get("phase")


def eci_client(cluster: Cluster) -> Any:
    """The official SDK's client for the cloud the chart points at (the emulator)."""
    from alibabacloud_eci20180808.client import Client
    from alibabacloud_tea_openapi.models import Config

    eci = cluster.values["eci"]
    return Client(
        Config(
            access_key_id=ACCESS_KEY_ID,
            access_key_secret=ACCESS_KEY_SECRET,
            endpoint=eci["endpoint"],
            protocol=eci["protocol"],
        )
    )


def container_group(cluster: Cluster, namespace: str, pod_name: str) -> Any:
    """A pod's container group as ECI shows it (DescribeContainerGroups through the official SDK),
    found by the name the virtual node gave it."""
    from alibabacloud_eci20180808 import models

    request = models.DescribeContainerGroupsRequest(
        region_id=CLUSTER_REGION, container_group_name=f"{namespace}-{pod_name}"
    )
    (group,) = eci_client(cluster).describe_container_groups(request).body.container_groups
    return group


def pod_events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    """The pod's events as `kubectl get events` shows them: (type, reason)."""
    found = cluster.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return [(e["type"], e["reason"]) for e in (found or {}).get("items", [])]


def test_pods_on_a_cache_deleted_outside_get_what_eci_gives_and_new_ones_the_rebuilt_cache(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    """The issue's "a pod on a deleted or replaced cache shows what ECI would show", through the
    operator, the webhook, kube-scheduler and the virtual node (the scheduler is only here, so
    the test is too).

    Deleted outside the operator (DeleteDataCache through the official SDK):

    * A pod already running on the cache keeps running: ECI gave its group a disk of its own
      from the cache, which a deleted cache does not take back.
    * Until the operator next looks at the cache (the stable poll, 30 s with these values, at a
      moment nobody outside can see), the DataCache still says Ready: the webhook binds a new
      pod without a gate, and ECI starts its group with an empty directory at the path and a
      `Warning DataCacheNotFound` event, which the pod shows. The test holds that window open
      with the paused annotation: the operator leaves a paused cache alone, its Ready as last
      seen, just as when it has not looked yet.
    * Once it looks, the operator builds the cache again at the same bucket and path (a new id
      in status). Until the new cache is Available the DataCache is Ready=False and a pod
      created then waits at the gate, as for any cache still building; then the gate lifts and
      the pod's group gets the new cache (ECI's DataCacheMatched names it). (The rebuild takes
      seconds here: the test pauses the DataCache again once it shows Ready=False, so the pod
      is created while it is not Ready on a machine of any speed.)"""
    from alibabacloud_eci20180808 import models

    eci = eci_client(cluster)

    def in_the_cloud(cache_id: str) -> bool:
        request = models.DescribeDataCachesRequest(region_id=CLUSTER_REGION, data_cache_id=[cache_id])
        return bool(eci.describe_data_caches(request).body.data_caches)

    name, path = "qwen-rebuilt", "/models/qwen-rebuilt"
    cache = example("datacache-huggingface.yaml", TEAM)
    cache["metadata"]["name"], cache["spec"]["path"] = name, path
    cluster.apply(cache)
    old = wait_cache_ready(cluster, TEAM, name)["status"]["dataCacheId"]
    mount = f"{name}:/models/qwen:ro"
    suffix = uuid.uuid4().hex[:6]
    running, orphan, waiting = f"running-{suffix}", f"orphan-{suffix}", f"waiting-{suffix}"

    def matched(pod_name: str) -> list[str]:
        group = container_group(cluster, TEAM, pod_name)
        return [e.message for e in group.events if e.reason == "DataCacheMatched"]

    def runs(pod_name: str) -> None:
        wait_for(lambda: phase(cluster, TEAM, pod_name) == "Running", timeout=90, what=f"{pod_name} Running")

    def gated(pod_name: str) -> bool:
        found = cluster.get("pod", pod_name, "-n", TEAM) or {}
        return {"name": GATE} in found.get("spec", {}).get("schedulingGates", [])

    def ready_condition() -> dict[str, Any]:
        return condition(cluster.get("datacache", name, "-n", TEAM), "Ready") or {}

    cluster.apply(opted_in_pod(running, TEAM, mount, _image(cluster)))
    try:
        runs(running)
        assert matched(running)[0].startswith(f"Data cache {old} at bucket {TEAM}, path {path}")

        # (a) The cloud cache goes while the operator is not looking.
        cluster.kubectl("annotate", "datacache", name, "-n", TEAM, f"{PAUSED}=true")
        wait_for(
            lambda: (
                (condition(cluster.get("datacache", name, "-n", TEAM), "Synced") or {}).get("reason")
                == "ReconcilePaused"
            ),
            timeout=60,
            what="the pause taken",
        )
        eci.delete_data_cache(models.DeleteDataCacheRequest(region_id=CLUSTER_REGION, data_cache_id=old))
        wait_for(lambda: not in_the_cloud(old), timeout=60, what=f"{old} gone from the cloud")
        assert ready_condition().get("status") == "True"  # what the webhook goes by

        cluster.apply(opted_in_pod(orphan, TEAM, mount, _image(cluster)))
        assert not gated(orphan)
        runs(orphan)
        group = container_group(cluster, TEAM, orphan)
        assert [e.reason for e in group.events if e.type == "Warning"] == ["DataCacheNotFound"], group.events
        assert not matched(orphan)
        wait_for(
            lambda: ("Warning", "DataCacheNotFound") in pod_events(cluster, TEAM, orphan),
            timeout=60,
            what="ECI's warning on the pod",
        )
        assert phase(cluster, TEAM, running) == "Running"
        assert container_group(cluster, TEAM, running).status == "Running"

        # (b) The operator looks again and builds it anew.
        cluster.kubectl("annotate", "datacache", name, "-n", TEAM, f"{PAUSED}-")
        began = time.monotonic()
        noticed = wait_for(
            lambda: ready_condition().get("status") == "False" and ready_condition(),
            timeout=90,
            interval=0.2,
            what="the DataCache not Ready once the operator sees its cache gone",
        )
        # Held not Ready by the pause again, so the pod below is created while it is, however
        # slow the machine (the rebuild takes seconds here).
        cluster.kubectl("annotate", "datacache", name, "-n", TEAM, f"{PAUSED}=true")
        assert ready_condition().get("status") == "False", "the rebuilt cache was Ready before the pause"

        def the_webhook_gates_now() -> bool:  # its watch of DataCaches has caught up
            probe = yaml.safe_dump(opted_in_pod(f"probe-{suffix}", TEAM, mount, _image(cluster)))
            answer = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=probe)
            return {"name": GATE} in json.loads(answer.stdout)["spec"].get("schedulingGates", [])

        wait_for(the_webhook_gates_now, timeout=30, what="the webhook seeing the cache not Ready")
        cluster.apply(opted_in_pod(waiting, TEAM, mount, _image(cluster)))
        assert gated(waiting), "a pod created while the cache was being rebuilt was not gated"
        cluster.kubectl("annotate", "datacache", name, "-n", TEAM, f"{PAUSED}-")
        new = wait_cache_ready(cluster, TEAM, name)["status"]["dataCacheId"]
        print(f"Ready=False ({noticed}), Ready again with {new} after {time.monotonic() - began:.1f} s")
        assert new and new != old and in_the_cloud(new)
        wait_for(lambda: not gated(waiting), timeout=60, what="the gate lifted")
        runs(waiting)
        assert matched(waiting)[0].startswith(f"Data cache {new} at bucket {TEAM}, path {path}")
        # The pods from before run on, as they started.
        assert phase(cluster, TEAM, running) == "Running" and phase(cluster, TEAM, orphan) == "Running"
    finally:
        cluster.kubectl(
            "delete", "pod", running, orphan, waiting, "-n", TEAM, "--ignore-not-found", "--wait=false"
        )
        cluster.kubectl("annotate", "datacache", name, "-n", TEAM, f"{PAUSED}-", check=False)
        cluster.kubectl("delete", "datacache", name, "-n", TEAM, "--ignore-not-found", "--wait=false")


def test_deleting_the_leader_pod_hands_over(cluster: Cluster, release: dict[str, Any]) -> None:
    namespace = release["namespace"]
    leader = wait_for(lambda: lease_holder(cluster, namespace), timeout=30, what="a Lease holder")
    began = time.monotonic()
    cluster.kubectl("delete", "pod", leader, "-n", namespace, "--wait=false")

    def new_holder() -> str | None:
        holder = lease_holder(cluster, namespace)
        return holder if holder and holder != leader else None

    try:
        successor = wait_for(new_holder, timeout=GRACEFUL_HANDOVER_S, interval=0.2, what="a new Lease holder")
    except AssertionError as error:
        lease = cluster.kubectl("get", "lease", "-n", namespace, "-o", "yaml", check=False).stdout
        raise AssertionError(f"{error}\n{lease}\n{diagnose(cluster, namespace)}") from None
    print(f"leader pod deleted -> {successor} holds the Lease after {time.monotonic() - began:.1f} s")
    assert successor in {p["metadata"]["name"] for p in operator_pods(cluster, namespace, RELEASE)}
    wait_replicas_ready(cluster, namespace, RELEASE)


def test_helm_upgrade_rolls_both_replicas_while_pods_are_admitted(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    """A changed pod template rolls the replicas one by one; opted-in pods created all the
    while are admitted (failurePolicy Fail: a gap in the webhook would refuse them)."""
    namespace = release["namespace"]
    wait_cache_ready(cluster, TEAM, CACHE)
    before = {p["metadata"]["name"] for p in operator_pods(cluster, namespace, RELEASE)}
    refused: list[str] = []
    created: list[str] = []
    done = threading.Event()

    def create_pods() -> None:
        while not done.is_set():
            name = f"during-upgrade-{uuid.uuid4().hex[:8]}"
            try:
                cluster.apply(opted_in_pod(name, TEAM, f"{CACHE}:/models/qwen:ro", _image(cluster)))
                created.append(name)
            except KubectlError as error:
                refused.append(str(error))
            time.sleep(0.3)

    creator = threading.Thread(target=create_pods, daemon=True)
    creator.start()
    try:
        values = cluster.values_file(podAnnotations={"e2e/rollout": uuid.uuid4().hex})
        cluster.helm(
            "upgrade", RELEASE, str(CHART), "-n", namespace, "-f", str(values), "--wait", "--timeout=5m"
        )
        after = wait_replicas_ready(cluster, namespace, RELEASE)
    finally:
        done.set()
        creator.join(timeout=60)
    assert not refused, f"{len(refused)} of {len(refused) + len(created)} pods refused: {refused[:3]}"
    assert len(created) >= 10, f"only {len(created)} pods were created during the upgrade"
    assert not before & {p["metadata"]["name"] for p in after}, "a replica was not replaced"
    for name in created:
        pod = cluster.get("pod", name, "-n", TEAM)
        assert pod is not None and BOUND_ANNOTATION in pod["metadata"]["annotations"], name
    cluster.kubectl("delete", "pods", "-n", TEAM, "-l", "app=e2e-consumer", "--wait=false")


def test_a_revision_bump_rolls_a_deployment_onto_it_with_no_pod_on_a_revision_not_available(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    """The issue's revision bump under a Deployment of 5 pods serving the old one, with a 30 s
    build: the new revision is built beside the old (which keeps serving: no pod is refused or
    gated), becomes current once Available, the Deployment (opted in, rollouts enabled in the
    chart) is rolled by its own controller onto it, and the old revision is deleted once its
    last pod is gone. Every sample taken meanwhile finds each bound pod on a revision that is
    Available. Prints the time from the bump to all 5 pods Running on the new revision, and
    the build alone."""
    from eci_datacache_emulator.admin_client import EmulatorAdmin

    assert cluster.emulator_admin is not None
    admin = EmulatorAdmin(cluster.emulator_admin)
    namespace = release["namespace"]
    values = cluster.values_file(rollouts={"enabled": True})
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", namespace, "-f", str(values), "--wait", "--timeout=5m")
    wait_replicas_ready(cluster, namespace, RELEASE)

    name, path, repo = "qwen-revisions", "/models/qwen-revisions", "Qwen/Qwen2.5-7B-Instruct"
    cache = example("datacache-huggingface.yaml", TEAM)
    cache["metadata"]["name"], cache["spec"]["path"] = name, path
    cache["spec"]["revisionHistoryLimit"] = 0
    cluster.apply(cache)
    first = wait_cache_ready(cluster, TEAM, name)["status"]
    assert first["currentRevision"] == "r1" and first["sourceCommit"]

    template = opted_in_pod("unused", TEAM, f"{name}:/models/qwen:ro", _image(cluster))
    del template["apiVersion"], template["kind"]
    template["metadata"] = {"labels": {**template["metadata"]["labels"], "app": "e2e-rollout"},
                            "annotations": template["metadata"]["annotations"]}  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": TEAM, "annotations": {ROLLOUT_ANNOTATION: "true"}},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "e2e-rollout"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        },
    }
    cluster.apply(deployment)
    copy_region = "cn-beijing"  # the model copied to a mainland region too
    cluster.apply(
        {
            "apiVersion": "eci.datacache.dev/v1alpha1",
            "kind": "DataCacheReplication",
            "metadata": {"name": f"{name}-mainland", "namespace": TEAM},
            "spec": {"source": {"dataCacheRef": {"name": name}}, "destinations": [{"region": copy_region}]},
        }
    )

    def copy_entry() -> dict[str, Any]:
        found = cluster.get("datacachereplication", f"{name}-mainland", "-n", TEAM) or {}
        return next(iter((found.get("status") or {}).get("destinations") or []), {})

    wait_for(
        lambda: copy_entry().get("status") == "Available" and copy_entry().get("revision") == "r1",
        timeout=180,
        interval=1,
        what="the copy of r1 Available",
    )
    first_copy = copy_entry()["dataCacheId"]

    def serving() -> list[dict[str, Any]]:
        found = cluster.get("pods", "-n", TEAM, "-l", "app=e2e-rollout") or {"items": []}
        return [p for p in found["items"] if not p["metadata"].get("deletionTimestamp")]

    def bound_revision(pod: dict[str, Any]) -> str | None:
        bound = json.loads(pod["metadata"].get("annotations", {}).get(BOUND_ANNOTATION) or "[]")
        return next((b.get("revision") for b in bound if b.get("name") == name), None)

    def all_running_on(revision: str) -> bool:
        pods = serving()
        return len(pods) == 5 and all(
            p["status"].get("phase") == "Running" and bound_revision(p) == revision for p in pods
        )

    wait_for(lambda: all_running_on("r1"), timeout=180, interval=1, what="5 pods Running on r1")

    build = {"creating": 500.0, "loading": 1000.0}  # 30 s at the emulator's time scale of 0.02
    before = admin.durations()
    assert (build["creating"] + build["loading"]) * before["timeScale"] == 30.0
    admin.set_hub_commit("huggingface", repo, "v2", "2" * 40)
    admin.set_durations(**build)
    bumped = time.monotonic()
    try:
        cluster.kubectl(
            "patch", "datacache", name, "-n", TEAM, "--type=merge",
            "-p", json.dumps({"spec": {"dataSource": {"options": {"revision": "v2"}}}}),
        )  # fmt: skip
        current_at: float | None = None
        deadline = bumped + 300
        while not all_running_on("r2"):
            assert time.monotonic() < deadline, f"not all on r2 after 300 s: {diagnose(cluster, TEAM)}"
            pods = serving()  # then the status, at least as new as what each pod was bound by
            status = (cluster.get("datacache", name, "-n", TEAM) or {}).get("status") or {}
            usable = {r["name"] for r in status.get("revisions") or [] if r.get("status") == "Available"}
            for pod in pods:
                revision = bound_revision(pod)
                assert revision in usable, f"pod {pod['metadata']['name']} on {revision}; Available: {usable}"
                assert not pod["spec"].get("schedulingGates"), f"{pod['metadata']['name']} was gated"
            if current_at is None and status.get("currentRevision") == "r2":
                current_at = time.monotonic()
            time.sleep(0.5)
        on_new = time.monotonic()
    finally:
        admin.set_durations(creating=before["creating"], loading=before["loading"])
    assert current_at is not None
    print(
        f"revision bump -> r2 current (its build alone): {current_at - bumped:.1f} s; "
        f"-> all 5 pods Running on r2: {on_new - bumped:.1f} s"
    )
    rs = cluster.get("replicasets", "-n", TEAM, "-l", "app=e2e-rollout") or {"items": []}
    for replica_set in rs["items"]:  # no pod refused by the webhook
        assert not [c for c in replica_set["status"].get("conditions") or [] if c["type"] == "ReplicaFailure"]

    def old_revision_gone() -> bool:
        status = (cluster.get("datacache", name, "-n", TEAM) or {}).get("status") or {}
        return [r["name"] for r in status.get("revisions") or []] == ["r2"]

    wait_for(old_revision_gone, timeout=120, interval=1, what="r1 deleted once no pod uses it")
    # The copy follows: the copy of r2 made beside the copy of r1, which goes once it has taken over.
    wait_for(
        lambda: (
            copy_entry().get("revision") == "r2"
            and copy_entry().get("status") == "Available"
            and not copy_entry().get("previous")
        ),
        timeout=180,
        interval=1,
        what=f"{copy_region} on the copy of r2, the copy of r1 gone",
    )
    assert copy_entry()["dataCacheId"] != first_copy
    assert (
        admin.cache(first["dataCacheId"]) is None or admin.cache(first["dataCacheId"])["Status"] == "Deleting"
    )
    cluster.kubectl("delete", "deployment", "serve", "-n", TEAM, "--wait=false")
    cluster.kubectl("delete", "datacachereplication", f"{name}-mainland", "-n", TEAM, "--wait=false")


def test_helm_uninstall_leaves_no_pod_and_no_webhook_that_refuses_pods(
    cluster: Cluster, release: dict[str, Any]
) -> None:
    namespace = release["namespace"]
    cluster.helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=2m")
    wait_for(lambda: not operator_pods(cluster, namespace, RELEASE), timeout=120, what="no operator pod")
    webhooks = cluster.get("mutatingwebhookconfiguration", "-l", f"app.kubernetes.io/instance={RELEASE}")
    assert webhooks is not None and webhooks["items"] == []
    # What stays, as the README says: the CRDs (Helm never deletes them) and the DataCaches.
    assert cluster.get("crd", "datacaches.eci.datacache.dev") is not None
    assert cluster.get("datacache", CACHE, "-n", TEAM) is not None
    # An opted-in pod is no longer refused for want of a webhook: nothing answers for it.
    name = f"after-uninstall-{uuid.uuid4().hex[:6]}"
    cluster.apply(opted_in_pod(name, TEAM, f"{CACHE}:/models/qwen:ro", _image(cluster)))
    pod = cluster.get("pod", name, "-n", TEAM)
    assert pod is not None and BOUND_ANNOTATION not in pod["metadata"].get("annotations", {})
    cluster.kubectl("delete", "pod", name, "-n", TEAM, "--wait=false")
