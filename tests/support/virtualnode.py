"""A virtual node backed by the ECI emulator, as ACK's virtual node (Virtual Kubelet) is backed
by ECI: a Node with ACK's labels and taint and a Lease heartbeat; each pod scheduled to it
becomes a container group in the cluster's region (CreateContainerGroup through the official
SDK, with the pod's data cache annotations and hostPath volumes), reports the group's phase and
ECI's events, and goes with its pod.

    python -m tests.support.virtualnode --kubeconfig K --endpoint HOST:PORT --region R [--workers 8]

As virtual-kubelet, a fixed number of pod workers (8 by default) do each pod's work: its
CreateContainerGroup, DeleteContainerGroup, status writes and events. A pod goes to the worker
its uid hashes to, so one pod's operations run in the order they were seen (a pod deleted right
after it was created has its group deleted after the create, never left behind) while different
pods proceed in parallel: scaling a Deployment to a thousand replicas must measure the cluster
and the operator, not one thread of this node doing a thousand round trips in a row. The pod
watch only dispatches (pods as JSON, watched on from the last resourceVersion rather than listed
again every few seconds); the status sync describes the groups in batches of 20 from one thread
and hands each pod's status write and events to its worker, one such task queued a pod at most
(a later description replaces the queued one).

A provider of our own in Python rather than virtual-kubelet's Go library: the point is to send
what ACK's node sends through the same official SDK the operator uses, against the same
emulator, and the project's test stack is Python; virtual-kubelet would add a Go build and a Go
ECI client that nothing else here uses. What it maps: containers (name, image, volume mounts),
hostPath and emptyDir volumes, the restart policy, the data cache annotations; other volume
types are left out (ECI has its own, none of which a data cache needs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

log = logging.getLogger("virtualnode")

NODE_NAME = "virtual-kubelet-eci"
# ACK's virtual node: the label nodeSelectors use, and the taint only ECI-bound pods tolerate.
NODE_LABELS = {
    "type": "virtual-kubelet",
    "kubernetes.io/role": "agent",
    "alibabacloud.com/virtual-node": "true",
}
TAINT = {"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}
ANNOTATION_PREFIX = "k8s.aliyun.com/eci-data-cache-"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
SYNC_SECONDS = 1.0
WATCH_SECONDS = 5
ECI_BATCH = 20
DEFAULT_WORKERS = 8
PHASES = {"Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded", "Failed": "Failed"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_group_request(pod: dict[str, Any], region: str) -> Any:
    """What ACK's virtual node sends for a pod (the subset a data cache needs)."""
    from alibabacloud_eci20180808 import models

    meta, spec = pod["metadata"], pod["spec"]
    annotations = meta.get("annotations") or {}
    volumes = []
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            volumes.append(
                models.CreateContainerGroupRequestVolume(
                    name=volume["name"],
                    type="HostPathVolume",
                    host_path_volume=models.CreateContainerGroupRequestVolumeHostPathVolume(
                        path=volume["hostPath"]["path"]
                    ),
                )
            )
        elif "emptyDir" in volume:
            volumes.append(
                models.CreateContainerGroupRequestVolume(name=volume["name"], type="EmptyDirVolume")
            )
    kept = {v.name for v in volumes}
    containers = [
        models.CreateContainerGroupRequestContainer(
            name=c["name"],
            image=c["image"],
            volume_mount=[
                models.CreateContainerGroupRequestContainerVolumeMount(
                    name=m["name"], mount_path=m["mountPath"], read_only=bool(m.get("readOnly"))
                )
                for m in c.get("volumeMounts") or []
                if m["name"] in kept
            ],
        )
        for c in spec["containers"]
    ]
    iops = annotations.get(f"{ANNOTATION_PREFIX}provisionedIops")
    bursting = annotations.get(f"{ANNOTATION_PREFIX}burstingEnabled")
    return models.CreateContainerGroupRequest(
        region_id=region,
        container_group_name=f"{meta['namespace']}-{meta['name']}"[:128],
        restart_policy=spec.get("restartPolicy") or "Always",
        container=containers,
        volume=volumes,
        data_cache_bucket=annotations.get(f"{ANNOTATION_PREFIX}bucket"),
        data_cache_pl=annotations.get(f"{ANNOTATION_PREFIX}pl"),
        data_cache_provisioned_iops=int(iops) if iops else None,
        data_cache_bursting_enabled=bursting.lower() == "true" if bursting else None,
        tag=[
            models.CreateContainerGroupRequestTag(key="k8s.pod.namespace", value=meta["namespace"]),
            models.CreateContainerGroupRequestTag(key="k8s.pod.name", value=meta["name"]),
        ],
        client_token=meta["uid"],  # a retried create never makes a second group
    )


def pod_status(pod: dict[str, Any], group: Any, pod_ip: str) -> dict[str, Any]:
    """The pod's status from its container group, as a kubelet would write it."""
    phase = PHASES.get(group.status or "", "Pending")
    running = phase == "Running"
    started = next(
        (
            c.current_state.start_time
            for c in group.containers or []
            if c.current_state and c.current_state.start_time
        ),
        None,
    )
    statuses = []
    for spec_container, container in zip(pod["spec"]["containers"], group.containers or [], strict=False):
        state = container.current_state
        if phase == "Running":
            shown: dict[str, Any] = {"running": {"startedAt": state.start_time}}
        elif phase in ("Succeeded", "Failed"):
            shown = {
                "terminated": {
                    "exitCode": state.exit_code or 0,
                    "reason": state.reason or ("Completed" if phase == "Succeeded" else "Error"),
                    "startedAt": state.start_time,
                    "finishedAt": state.finish_time,
                }
            }
        else:
            shown = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(
            {
                "name": spec_container["name"],
                "image": spec_container["image"],
                "imageID": "",
                "ready": running,
                "restartCount": 0,
                "started": running,
                "state": shown,
                "containerID": f"eci://{group.container_group_id}/{spec_container['name']}",
            }
        )
    ready = "True" if running else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": ready},
        {"type": "Ready", "status": ready},
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": statuses,
        "hostIP": "127.0.0.1",
        "startTime": started or _now(),
        "message": f"ECI container group {group.container_group_id} is {group.status}.",
    }
    if phase != "Pending":
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


class VirtualNode:
    def __init__(
        self,
        kubeconfig: str,
        endpoint: str,
        region: str,
        access_key_id: str,
        access_key_secret: str,
        name: str = NODE_NAME,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        from alibabacloud_eci20180808.client import Client
        from alibabacloud_tea_openapi.models import Config
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        # A connection each for the workers, the watch, the sync and the heartbeat.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, workers + 4)
        api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.eci = Client(
            Config(
                access_key_id=access_key_id,
                access_key_secret=access_key_secret,
                endpoint=endpoint,
                protocol="http",
            )
        )
        self.region = region
        self.name = name
        self.stopping = threading.Event()
        self.groups: dict[str, str] = {}  # pod uid -> container group id
        self.pods: dict[str, dict[str, Any]] = {}  # pod uid -> the pod as last seen
        self.events_sent: dict[str, int] = {}  # pod uid -> ECI events already posted
        self.statuses: dict[str, dict[str, Any]] = {}  # pod uid -> the status last written
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ips = (f"198.19.{n // 254}.{n % 254 + 1}" for n in range(254 * 256))
        self.pod_ips: dict[str, str] = {}
        self._workers = [_PodWorker(f"virtualnode-pods-{n}", self.stopping) for n in range(workers)]
        self._to_sync: dict[str, Any] = {}  # pod uid -> its group as described, for its worker

    # ---- the node -------------------------------------------------------------------------

    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    **NODE_LABELS,
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/region": self.region,
                },
            },
            "spec": {"taints": [TAINT]},
        }
        try:
            self.core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.patch_node(
                self.name, {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]}
            )
        self._node_status()

    def _node_status(self) -> None:
        now = _now()
        # As ACK's virtual node: room for any pod, GPUs included (ECI picks the instance type).
        capacity = {
            "cpu": "1000",
            "memory": "4Ti",
            "pods": "10000",
            "ephemeral-storage": "10Ti",
            "nvidia.com/gpu": "1000",
        }
        self.core.patch_node_status(
            self.name,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "ECI virtual node (emulator) is ready",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "nodeInfo": {
                        "kubeletVersion": "v1.37.2-eci-emulator",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "eci://emulator",
                        "kernelVersion": "",
                        "osImage": "",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    def _renew_lease(self) -> None:
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
        }
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat(self) -> None:
        while not self.stopping.is_set():
            try:
                self._renew_lease()
                self._node_status()
            except Exception:  # a failed beat is retried at the next one
                log.exception("heartbeat failed")
            self.stopping.wait(HEARTBEAT_SECONDS)

    # ---- pods -----------------------------------------------------------------------------

    def _dispatch(self, uid: str, task: Callable[[], None]) -> None:
        """Queue a pod's task on its worker: the same uid, the same worker, in order (a stable
        hash: Python's own is salted per process)."""
        self._workers[zlib.crc32(uid.encode()) % len(self._workers)].tasks.put(task)

    def _watch(self) -> None:
        from kubernetes import watch

        selector = f"spec.nodeName={self.name}"
        while not self.stopping.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                body = json.loads(listed.data)
                for pod in body["items"]:
                    self._dispatch(pod["metadata"]["uid"], partial(self._seen, pod))
                present = {pod["metadata"]["uid"] for pod in body["items"]}
                with self._lock:  # deleted while the watch was down: no DELETED came for them
                    missed = [pod for uid, pod in self.pods.items() if uid not in present]
                for pod in missed:
                    self._dispatch(pod["metadata"]["uid"], partial(self._gone, pod))
                version = body["metadata"]["resourceVersion"]
                while not self.stopping.is_set():  # watched on from where it ended, not listed again
                    stream = watch.Watch().stream(
                        self.core.list_pod_for_all_namespaces,
                        field_selector=selector,
                        resource_version=version,
                        timeout_seconds=WATCH_SECONDS,  # a stop is noticed within this
                        deserialize=False,  # the pods as JSON: no model objects for a thousand pods
                    )
                    for event in stream:
                        if self.stopping.is_set():
                            return
                        pod = event["object"]
                        version = pod["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            self._dispatch(pod["metadata"]["uid"], partial(self._gone, pod))
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._dispatch(pod["metadata"]["uid"], partial(self._seen, pod))
            except Exception:  # listed and watched again (a 410 Gone among others)
                if not self.stopping.is_set():
                    log.exception("pod watch failed; watching again")
                    self.stopping.wait(1.0)

    def _seen(self, pod: dict[str, Any]) -> None:
        """On the pod's worker: a new pod gets its group, a deleted one loses it."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            self.pods[uid] = pod
            known = uid in self.groups
        if pod["metadata"].get("deletionTimestamp"):
            self._delete(pod)
        elif not known:
            self._create(pod)

    def _create(self, pod: dict[str, Any]) -> None:
        from alibabacloud_tea_openapi.exceptions import ClientException

        meta = pod["metadata"]
        try:
            group_id = str(
                self.eci.create_container_group(
                    container_group_request(pod, self.region)
                ).body.container_group_id
            )
        except ClientException as error:
            log.warning(
                "pod %s/%s: CreateContainerGroup failed: %s", meta["namespace"], meta["name"], error.code
            )
            self._write_status(
                pod,
                {
                    "phase": "Failed",
                    "reason": "ProviderFailed",
                    "message": f"CreateContainerGroup: {error.code}: {error.message}",
                },
            )
            return
        with self._lock:
            self.groups[meta["uid"]] = group_id
            self.pod_ips[meta["uid"]] = next(self._ips, "198.19.255.254")
        log.info("pod %s/%s -> container group %s", meta["namespace"], meta["name"], group_id)

    def _delete(self, pod: dict[str, Any]) -> None:
        from alibabacloud_eci20180808 import models
        from alibabacloud_tea_openapi.exceptions import ClientException
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        with self._lock:
            group_id = self.groups.pop(meta["uid"], None)
        if group_id is not None:
            try:
                self.eci.delete_container_group(
                    models.DeleteContainerGroupRequest(region_id=self.region, container_group_id=group_id)
                )
            except ClientException as error:
                if error.code != "InvalidContainerGroup.NotFound":
                    raise
        try:  # as a kubelet does once the containers are gone: the pod object goes
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body={"preconditions": {"uid": meta["uid"]}, "gracePeriodSeconds": 0},
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _gone(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            still = uid in self.groups
            self.pods.pop(uid, None)
            self.events_sent.pop(uid, None)
            self.statuses.pop(uid, None)
            self.pod_ips.pop(uid, None)
        if still:
            self._delete(pod)

    # ---- status -------------------------------------------------------------------------

    def _sync(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sync_once()
            except Exception:
                log.exception("status sync failed")
            self.stopping.wait(SYNC_SECONDS)

    def sync_once(self) -> None:
        """Describe every group (20 a call) and hand each pod's status and events to its worker;
        a pod whose last one is still queued gets the newer group, not a second task."""
        from alibabacloud_eci20180808 import models

        with self._lock:
            by_group = {group: uid for uid, group in self.groups.items()}
        ids = list(by_group)
        for start in range(0, len(ids), ECI_BATCH):
            chunk = ids[start : start + ECI_BATCH]
            found = self.eci.describe_container_groups(
                models.DescribeContainerGroupsRequest(
                    region_id=self.region, container_group_ids=json.dumps(chunk)
                )
            ).body.container_groups
            for group in found or []:
                uid = by_group[group.container_group_id]
                with self._lock:
                    queued = uid in self._to_sync
                    self._to_sync[uid] = group
                if not queued:
                    self._dispatch(uid, partial(self._sync_pod, uid))

    def _sync_pod(self, uid: str) -> None:
        """On the pod's worker: its status from its group, and ECI's events not yet posted."""
        with self._lock:
            group = self._to_sync.pop(uid, None)
            pod = self.pods.get(uid)
            current = self.groups.get(uid)
            written = self.statuses.get(uid)
            ip = self.pod_ips.get(uid, "198.19.255.254")
        if group is None or pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        if current != group.container_group_id:  # deleted since it was described
            return
        status = pod_status(pod, group, ip)
        # What this node wrote last, when the watch has not brought it back yet.
        if _differs(written or pod.get("status") or {}, status):
            self._write_status(pod, status)
            with self._lock:
                if uid in self.pods:
                    self.statuses[uid] = status
        self._post_events(pod, group)

    def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, _preload_content=False
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def _post_events(self, pod: dict[str, Any], group: Any) -> None:
        meta = pod["metadata"]
        events = group.events or []
        with self._lock:
            sent = self.events_sent.get(meta["uid"], 0)
            self.events_sent[meta["uid"]] = len(events)
        for event in events[sent:]:
            self.core.create_namespaced_event(
                meta["namespace"],
                {
                    "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                    "involvedObject": {
                        "kind": "Pod",
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                        "apiVersion": "v1",
                    },
                    "type": event.type,
                    "reason": event.reason,
                    "message": event.message,
                    "source": {"component": "eci-virtual-node", "host": self.name},
                    "firstTimestamp": _now(),
                    "lastTimestamp": _now(),
                    "count": 1,
                },
                _preload_content=False,
            )

    # ---- running ------------------------------------------------------------------------

    def start(self) -> VirtualNode:
        self.register()
        self._renew_lease()
        for worker in self._workers:
            worker.thread.start()
        for target in (self._heartbeat, self._watch, self._sync):
            thread = threading.Thread(target=target, name=f"virtualnode-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """The watch, the sync and the heartbeat end, then the workers: each finishes the task
        it is in, drops what is queued behind it and is joined."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_SECONDS + 5)
        for worker in self._workers:
            worker.tasks.put(None)
        for worker in self._workers:
            if worker.thread.is_alive():
                worker.thread.join(timeout=WATCH_SECONDS + 5)
        stuck = [t.name for t in [*self._threads, *(w.thread for w in self._workers)] if t.is_alive()]
        if stuck:
            log.warning("threads still running after stop: %s", ", ".join(stuck))

    def __enter__(self) -> VirtualNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _PodWorker:
    """One of the node's pod workers: a thread running the tasks of its queue one at a time, in
    the order they came; None ends it. Once the node stops, queued tasks are dropped."""

    def __init__(self, name: str, stopping: threading.Event) -> None:
        self.tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stopping = stopping
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while (task := self.tasks.get()) is not None:
            if self._stopping.is_set():
                continue
            try:
                task()
            except Exception:  # the pod's next event or sync tries again
                log.exception("pod task failed")


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the pod's status needs writing (times aside: they only move with a change)."""

    def essence(status: dict[str, Any]) -> Iterator[Any]:
        yield status.get("phase")
        yield tuple((c.get("type"), c.get("status")) for c in status.get("conditions") or [])
        yield tuple(
            (c.get("name"), c.get("ready"), tuple(sorted((c.get("state") or {}).keys())))
            for c in status.get("containerStatuses") or []
        )

    return tuple(essence(current)) != tuple(essence(wanted))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--endpoint", default=os.environ.get("ECI_ENDPOINT"), help="the ECI emulator's host:port"
    )
    parser.add_argument("--region", default="cn-hangzhou", help="the cluster's region")
    parser.add_argument("--name", default=NODE_NAME)
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="pod workers: pods are worked on in parallel, each pod's operations in order",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s virtualnode %(levelname)s %(message)s")
    node = VirtualNode(
        args.kubeconfig,
        args.endpoint,
        args.region,
        os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
        os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
        args.name,
        args.workers,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with node:
        print(f"virtual node {args.name} ready in {args.region}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
