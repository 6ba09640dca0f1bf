"""Pod-side scale: a thousand pods bound to caches start as fast as pods whose cache
annotation and hostPath were written by hand, and a thousand pods waiting for a cache are
released at the apiserver's pace.

One local cluster as `make run` has it, in one run: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (their clients at QPS 200, burst 400, as large
clusters set them, so the operator's part is not hidden behind the defaults' 20 and 50), the
ECI emulator and the virtual ECI node (each a process of its own), and the operator serving its
webhook over TLS, with the chart's admission policies. Figures:

* ``webhook_all_running_s`` against ``by_hand_all_running_s``: a Deployment scaled 0 -> N
  (default 1,000) bound to a Ready cache by the webhook, then the same pods with the bucket
  annotation, hostPath, nodeSelector and toleration written in the template (no webhook):
  seconds from the scale to the N-th pod Running on the virtual node (``ratio`` <= 1.2);
* ``patch_rate_per_s``: the apiserver's pod-patch rate in this run: N pods with a gate of the
  benchmark's own, released by this process 16 patches at a time with the operator's patch
  shape (test, remove the gate, add an annotation);
* ``ungate_all_s``: N pods created and gated while a cache loads (45 s in the emulator), then
  from the DataCache's Ready=True seen on a watch to the N-th gate gone on a watch, against
  ``ungate_limit_s`` = 1.2 x N / ``patch_rate_per_s``;
* ``create_opted_in_p99_ms`` against ``create_plain_p99_ms``: pod creates through the
  apiserver at 100 a second, opted in (the webhook gates them on a cache not Ready) or plain
  (gated by the benchmark): the webhook's p99 <= 2 x the plain one's.

    .venv/bin/python benchmarks/pods_bench.py [--pods 1000] [--rate 100] [--seconds 20]

writes ``benchmarks/results/pods.json``, ``benchmarks/results/pods.png`` and its table in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import binding_bench as bench  # its import sets the environment (proxies off)
from benchmarks.floors import percentile, rnd
from benchmarks.machine import cpu_seconds, machine, wait_healthy
from benchmarks.readme import put_table

from datacache_operator.api.binding import CACHES_ANNOTATION, INJECT_LABEL
from datacache_operator.controllers.pods import UNGATE_CONCURRENCY

REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = Path(__file__).parent / "results" / "pods.json"
PICTURE_FILE = Path(__file__).parent / "results" / "pods.png"
NAMESPACE = bench.NAMESPACE
REGION = "cn-hangzhou"
CLIENT_QPS = ("--kube-api-qps=200", "--kube-api-burst=400")
LOADING_S = 45.0  # how long the cache that pods wait for loads, in the emulator
HELD_GATE = "bench.example/held"  # the benchmark's own gate, which the operator never touches
PATCHERS = UNGATE_CONCURRENCY  # as many at once as the operator
TARGETS = {"ratio": 1.2, "ungate_over_limit": 1.0, "admission_p99_ratio": 2.0}


class PodWatch:
    """The pods of one label as a watch shows them, with when each was first seen, first seen
    without gates and first seen Running (this process's clock)."""

    def __init__(self, core: Any, selector: str) -> None:
        self.core, self.selector = core, selector
        self.created: dict[str, float] = {}
        self.ungated: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.gone: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                listed = json.loads(
                    self.core.list_namespaced_pod(
                        NAMESPACE, label_selector=self.selector, _preload_content=False
                    ).data
                )
                for pod in listed["items"]:
                    self._see("ADDED", pod)
                version = listed["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    for event in watch.Watch().stream(
                        self.core.list_namespaced_pod,
                        NAMESPACE,
                        label_selector=self.selector,
                        resource_version=version,
                        timeout_seconds=5,
                        deserialize=False,
                    ):
                        if event["type"] == "ERROR":  # 410 Gone: list again
                            raise RuntimeError(str(event["object"]))
                        version = event["object"]["metadata"]["resourceVersion"]
                        self._see(event["type"], event["object"])
            except Exception as error:  # the times seen so far stand; the list brings the rest
                print(f"pod watch ({self.selector}) ended: {error}; listing again", flush=True)

    def _see(self, kind: str, pod: dict[str, Any]) -> None:
        now, name = time.time(), pod["metadata"]["name"]
        if kind == "DELETED":
            self.gone.add(name)
            return
        self.created.setdefault(name, now)
        if not pod["spec"].get("schedulingGates"):
            self.ungated.setdefault(name, now)
        if (pod.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(name, now)

    def stop(self) -> None:
        self._stop.set()


def deployment(name: str, replicas: int, template: dict[str, Any]) -> dict[str, Any]:
    template = {**template, "metadata": {**template["metadata"]}}
    template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), "app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template},
    }


def bound_template(cache: str) -> dict[str, Any]:
    """An opted-in pod: the webhook writes its cache volume, bucket and placement."""
    return {
        "metadata": {
            "labels": {INJECT_LABEL: "true"},
            "annotations": {CACHES_ANNOTATION: f"{cache}:/models/m:ro"},
        },
        "spec": {"containers": [{"name": "c", "image": "vllm"}], "terminationGracePeriodSeconds": 0},
    }


def by_hand_template(made: dict[str, Any]) -> dict[str, Any]:
    """What the webhook wrote into `made` (a pod it bound), written by hand into a template:
    the bucket annotation, the hostPath volume and mount, the nodeSelector and toleration."""
    spec = made["spec"]
    return {
        "metadata": {
            "annotations": {
                k: v for k, v in made["metadata"]["annotations"].items() if k.startswith("k8s.aliyun.com/")
            }
        },
        "spec": {
            "containers": [
                {"name": c["name"], "image": c["image"], "volumeMounts": c.get("volumeMounts", [])}
                for c in spec["containers"]
            ],
            "volumes": spec.get("volumes", []),
            "nodeSelector": spec.get("nodeSelector", {}),
            "tolerations": [
                t for t in spec.get("tolerations", []) if t.get("key", "").startswith("virtual-kubelet")
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }


class Cluster:
    """The clients of one run, and how to wait for its pods to go."""

    def __init__(self, plane: Any) -> None:
        from kubernetes import client

        api = bench.api_client(plane)
        self.core, self.apps, self.custom = (
            client.CoreV1Api(api),
            client.AppsV1Api(api),
            client.CustomObjectsApi(api),
        )

    def pods(self, selector: str) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=selector, _preload_content=False)
        return list(json.loads(listed.data)["items"])

    def remove(self, name: str) -> None:
        """The Deployment and every pod of it (the virtual node deletes their container groups)."""
        self.apps.delete_namespaced_deployment(name, NAMESPACE, propagation_policy="Background")
        bench.wait(lambda: not self.pods(f"app={name}"), 600, f"the pods of {name} gone")

    def cache_ready(self, name: str) -> bool:
        return bench.ready(
            self.custom.get_namespaced_custom_object(
                bench.GROUP, bench.VERSION, NAMESPACE, "datacaches", name
            )
        )


def scale_up(cluster: Cluster, name: str, template: dict[str, Any], pods: int) -> dict[str, Any]:
    """A Deployment at 0 scaled to `pods`: seconds from the scale to each pod Running."""
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment(name, 0, template))
    seen = PodWatch(cluster.core, f"app={name}")
    time.sleep(1)  # the watch established
    began = time.time()
    cluster.apps.patch_namespaced_deployment_scale(name, NAMESPACE, {"spec": {"replicas": pods}})
    bench.wait(lambda: len(seen.running) >= pods, 900, f"{pods} pods of {name} Running")
    seen.stop()
    running = sorted(t - began for t in seen.running.values())
    cluster.remove(name)
    return {
        "all_running_s": rnd(running[-1], 2),
        "half_running_s": rnd(running[len(running) // 2], 2),
        "curve": [[rnd(t, 2), i + 1] for i, t in enumerate(running)],
    }


def patch_rate(cluster: Cluster, template: dict[str, Any], pods: int) -> dict[str, Any]:
    """`pods` pods held by a gate of ours, released `PATCHERS` at a time with the operator's
    patch shape: the apiserver's pod-patch rate, under the same load (they then run)."""
    held = {**template, "spec": {**template["spec"], "schedulingGates": [{"name": HELD_GATE}]}}
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("held", pods, held))
    bench.wait(lambda: len(cluster.pods("app=held")) >= pods, 600, f"{pods} held pods created")
    names = [p["metadata"]["name"] for p in cluster.pods("app=held")]
    operations = [
        {"op": "test", "path": "/spec/schedulingGates/0", "value": {"name": HELD_GATE}},
        {"op": "remove", "path": "/spec/schedulingGates/0"},
        {"op": "add", "path": "/metadata/annotations/bench.example~1released", "value": "true"},
    ]
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=PATCHERS) as pool:
        list(
            pool.map(
                lambda n: cluster.core.patch_namespaced_pod(n, NAMESPACE, operations, _preload_content=False),
                names,
            )
        )
    took = time.perf_counter() - began
    bench.wait(lambda: sum(1 for p in cluster.pods("app=held") if (p.get("status") or {}).get("phase") == "Running") >= pods,
         900, "the held pods Running")  # fmt: skip
    cluster.remove("held")
    return {
        "patched": len(names),
        "patch_seconds": rnd(took, 2),
        "patch_rate_per_s": rnd(len(names) / took, 1),
    }


def ungate(cluster: Cluster, pods: int) -> dict[str, Any]:
    """A cache created with `pods` pods bound to it while it loads: from its Ready=True seen on
    a watch to each gate gone on a watch."""
    from kubernetes import watch

    cluster.custom.create_namespaced_custom_object(
        bench.GROUP, bench.VERSION, NAMESPACE, "datacaches", bench.datacache("fresh")
    )
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("waiting", pods, bound_template("fresh")))
    seen = PodWatch(cluster.core, "app=waiting")
    ready_at: list[float] = []

    def watch_cache() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            cluster.custom.list_namespaced_custom_object, bench.GROUP, bench.VERSION, NAMESPACE, "datacaches",
            field_selector="metadata.name=fresh", timeout_seconds=600,
        ):  # fmt: skip
            if bench.ready(event["object"]):
                ready_at.append(time.time())
                stream.stop()

    watcher = threading.Thread(target=watch_cache, daemon=True)
    watcher.start()
    bench.wait(lambda: len(seen.created) >= pods, 600, f"{pods} waiting pods created")
    all_created = max(seen.created.values())
    watcher.join(600)
    bench.wait(lambda: len(seen.ungated) >= pods, 600, f"{pods} waiting pods ungated")
    if not ready_at or all_created >= ready_at[0] or min(seen.ungated.values()) < ready_at[0]:
        raise RuntimeError(
            "the cache turned Ready before every pod was created and gated: load it for longer"
        )
    bench.wait(lambda: len(seen.running) >= pods, 900, f"{pods} waiting pods Running")
    seen.stop()
    released = sorted(t - ready_at[0] for t in seen.ungated.values())
    running = sorted(t - ready_at[0] for t in seen.running.values())
    cluster.remove("waiting")
    return {
        "created_before_ready_s": rnd(ready_at[0] - all_created, 2),
        "ungate_all_s": rnd(released[-1], 2),
        "ungate_p50_s": rnd(released[len(released) // 2], 2),
        "ready_to_all_running_s": rnd(running[-1], 2),
        "ungate_curve": [[rnd(t, 2), i + 1] for i, t in enumerate(released)],
    }


class Probe:
    """Where a phase's time went: CPU of the operator and the apiserver per pod, and the mean
    time of the webhook as the apiserver saw it and as the operator's handler took it."""

    WEBHOOK = "apiserver_admission_webhook_admission_duration_seconds"
    HANDLER = "datacache_operator_pod_admission_duration_seconds"

    def __init__(self, plane: Any, pids: dict[str, int], metrics_port: int) -> None:
        self.plane, self.pids, self.metrics_port = plane, pids, metrics_port

    def _sums(self) -> dict[str, float]:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        texts = [self.plane.kubectl("get", "--raw", "/metrics").stdout]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            texts.append(response.read().decode())
        found = {f"{name}_{part}": 0.0 for name in (self.WEBHOOK, self.HANDLER) for part in ("sum", "count")}
        for text in texts:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if (
                        sample.name in found
                        and sample.labels.get("name", "pods.eci.datacache.dev") == "pods.eci.datacache.dev"
                    ):
                        found[sample.name] += sample.value
        return found

    def sample(self) -> dict[str, float]:
        cpu = {f"cpu_{name}": cpu_seconds(pid) for name, pid in self.pids.items()}
        return {**cpu, **self._sums()}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        after = self.sample()
        return {key: after[key] - before[key] for key in after}

    def shown(self, delta: dict[str, float], pods: int) -> dict[str, float | None]:
        """CPU ms per pod of each process, the webhook's mean ms as each side saw it."""
        shown: dict[str, float | None] = {
            f"{key}_ms_per_pod": rnd(value * 1000 / pods, 2)
            for key, value in delta.items()
            if key.startswith("cpu_")
        }
        for name, label in ((self.WEBHOOK, "webhook_seen_by_apiserver"), (self.HANDLER, "webhook_handler")):
            count = delta.get(f"{name}_count", 0.0)
            shown[f"{label}_mean_ms"] = rnd(delta[f"{name}_sum"] * 1000 / count, 2) if count else None
        return shown


def admission(cluster: Cluster, rate: float, seconds: float, probe: Probe, rounds: int = 4) -> dict[str, Any]:
    """Pod creates at `rate` a second for `seconds` of each kind, plain and opted in, in
    `rounds` alternating turns (what slows the machine for a moment slows both kinds alike);
    none of the pods runs (the plain ones carry a gate of ours, the opted-in ones wait for a
    paused cache)."""
    count = int(rate * seconds / rounds)
    plain = {
        "metadata": {"labels": {}},
        "spec": {"containers": [{"name": "c", "image": "i"}], "schedulingGates": [{"name": HELD_GATE}]},
    }
    kinds = {"plain": plain, "opted_in": bound_template("paused")}
    durations: dict[str, list[float]] = {kind: [] for kind in kinds}
    spent: dict[str, dict[str, float]] = {kind: {} for kind in kinds}

    def creator(kind: str, turn: int) -> Callable[[int], None]:
        template, label = kinds[kind], f"admit-{kind.replace('_', '-')}"

        def create(index: int) -> None:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    **template["metadata"],
                    "name": f"{label}-{turn}-{index}",
                    "labels": {**template["metadata"]["labels"], "app": "admit"},
                },
                "spec": template["spec"],
            }
            cluster.core.create_namespaced_pod(NAMESPACE, body, _preload_content=False)

        return create

    for kind in kinds:  # warm-up: connections, imports, the webhook's first answers
        bench.paced(50, rate, creator(kind, -1), workers=16)
    for turn in range(rounds):
        for kind in list(kinds)[:: 1 if turn % 2 == 0 else -1]:
            before = probe.sample()
            durations[kind].extend(bench.paced(count, rate, creator(kind, turn), workers=16))
            for key, value in probe.since(before).items():
                spent[kind][key] = spent[kind].get(key, 0.0) + value
    cluster.core.delete_collection_namespaced_pod(
        NAMESPACE, label_selector="app=admit", grace_period_seconds=0
    )
    bench.wait(lambda: not cluster.pods("app=admit"), 300, "the admission pods gone")
    figures: dict[str, Any] = {"creates_per_kind": count * rounds, "admission_rounds": rounds}
    for kind in kinds:
        figures.update(
            {f"{kind}_{key}": value for key, value in probe.shown(spent[kind], count * rounds).items()}
        )
        figures[f"create_{kind}_p50_ms"] = rnd(percentile(durations[kind], 0.5) * 1000, 2)  # type: ignore[operator]
        figures[f"create_{kind}_p99_ms"] = rnd(percentile(durations[kind], 0.99) * 1000, 2)  # type: ignore[operator]
    return figures


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603
        command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
    )


def start_emulator(work: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable, "-m", "eci_datacache_emulator", "--port", "0",
            "--access-key-id", bench.ACCESS_KEY_ID, "--access-key-secret", bench.ACCESS_KEY_SECRET,
            "--time-scale", "1", "--quota", "0", "--log-level", "WARNING",
            "--duration", "creating=1", "--duration", f"loading={LOADING_S}", "--duration", "container_starting=1",
        ],
        stdout=subprocess.PIPE, stderr=(work / "emulator.log").open("ab"), text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    endpoint = process.stdout.readline().strip().partition("=")[2]
    if not endpoint:
        raise RuntimeError("the emulator did not start")
    return process, endpoint


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.controlplane import ControlPlane, free_port
    from tests.support.webhook import webhook_configuration

    work = Path(tempfile.mkdtemp(prefix="pods-bench-"))
    processes: list[subprocess.Popen[Any]] = []
    with ControlPlane(controller_manager_flags=CLIENT_QPS) as plane:
        scheduler_binary = plane.assets / "kube-scheduler"
        if not scheduler_binary.exists():
            raise SystemExit("no kube-scheduler among the control plane's binaries: run `make controlplane`")
        plane.install_crds(REPO / "deploy" / "crds")
        plane.apply(
            (REPO / "charts" / "eci-datacache-operator" / "files" / "admission-policies.yaml").read_text()
        )
        plane.kubectl("create", "namespace", NAMESPACE)
        port = free_port()
        plane.apply(
            webhook_configuration("bench", port, {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}})
        )
        try:
            emulator, endpoint = start_emulator(work)
            processes.append(emulator)
            env = {**os.environ, **plane.env(), "PYTHONPATH": str(REPO)}
            processes.append(start(
                [str(scheduler_binary), f"--kubeconfig={plane.kubeconfig}", "--leader-elect=false",
                 "--secure-port=0", *CLIENT_QPS],
                work / "kube-scheduler.log", env,
            ))  # fmt: skip
            keys = {
                "ALIBABA_CLOUD_ACCESS_KEY_ID": bench.ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": bench.ACCESS_KEY_SECRET,
            }
            processes.append(start(
                [sys.executable, "-m", "tests.support.virtualnode", "--kubeconfig", str(plane.kubeconfig),
                 "--endpoint", endpoint, "--region", REGION],
                work / "virtualnode.log", {**env, **keys},
            ))  # fmt: skip
            health, metrics_port = free_port(), free_port()
            operator_settings = bench.operator_env(
                plane, SimpleNamespace(endpoint=endpoint),
                DATACACHE_POLL_INTERVAL_STABLE="60", DATACACHE_HEALTH_PORT=str(health),
                DATACACHE_METRICS_PORT=str(metrics_port), DATACACHE_WEBHOOK_PORT=str(port),
                DATACACHE_WEBHOOK_HOSTS="127.0.0.1", DATACACHE_WEBHOOK_CONFIGURATION="bench",
                DATACACHE_LOG_LEVEL="WARNING", DATACACHE_DEFAULT_REGION=REGION,
            )  # fmt: skip
            operator = start(
                [sys.executable, "-m", "datacache_operator", "run"],
                work / "operator.log",
                {**env, **operator_settings},
            )
            processes.append(operator)
            wait_healthy(operator, health)
            cluster = Cluster(plane)
            for name, paused in (("model", False), ("paused", True)):
                cluster.custom.create_namespaced_custom_object(
                    bench.GROUP, bench.VERSION, NAMESPACE, "datacaches", bench.datacache(name, paused=paused)
                )
            bench.wait(lambda: plane.kubectl("get", "mutatingwebhookconfiguration", "bench", "-o",
                                       "jsonpath={.webhooks[0].clientConfig.caBundle}").stdout.strip(),
                 60, "the CA in the webhook configuration")  # fmt: skip
            bench.wait(lambda: cluster.cache_ready("model"), LOADING_S + 120, "the cache Ready")

            # Warm-up, and the pod the webhook makes, from which the by-hand template is written.
            scale_up(cluster, "warm-up", bound_template("model"), 50)
            cluster.apps.create_namespaced_deployment(
                NAMESPACE, deployment("sample", 1, bound_template("model"))
            )
            made = bench.wait(lambda: cluster.pods("app=sample"), 120, "the webhook's pod")[0]
            cluster.remove("sample")
            by_hand = by_hand_template(made)

            result: dict[str, Any] = {"pods": args.pods}
            if args.admission_only:
                pids = {"operator": operator.pid, "apiserver": plane.apiserver.popen.pid}
                return admission(cluster, args.rate, args.seconds, Probe(plane, pids, metrics_port))
            # Two rounds in opposite orders: neither arm always runs on a cluster the other warmed.
            runs: dict[str, list[dict[str, Any]]] = {"by_hand": [], "webhook": []}
            arms = {"by_hand": by_hand, "webhook": bound_template("model")}
            for order in (("by_hand", "webhook"), ("webhook", "by_hand")):
                for arm in order:
                    runs[arm].append(scale_up(cluster, arm.replace("_", "-"), arms[arm], args.pods))
            hand, webhook = runs["by_hand"][0], runs["webhook"][0]  # the first round's curves
            for arm, done in runs.items():
                result[f"{arm}_all_running_s"] = [r["all_running_s"] for r in done]
                result[f"{arm}_half_running_s"] = [r["half_running_s"] for r in done]
            result["ratio"] = rnd(
                sum(result["webhook_all_running_s"]) / sum(result["by_hand_all_running_s"]), 3
            )
            result.update(patch_rate(cluster, by_hand, args.pods))
            gated = ungate(cluster, args.pods)
            limit = 1.2 * args.pods / result["patch_rate_per_s"]
            result.update({k: v for k, v in gated.items() if k != "ungate_curve"})
            result.update(
                ungate_limit_s=rnd(limit, 2), ungate_over_limit=rnd(gated["ungate_all_s"] / limit, 3)
            )
            pids = {"operator": operator.pid, "apiserver": plane.apiserver.popen.pid}
            result.update(admission(cluster, args.rate, args.seconds, Probe(plane, pids, metrics_port)))
            result["admission_p99_ratio"] = rnd(
                result["create_opted_in_p99_ms"] / result["create_plain_p99_ms"], 3
            )
            result["curves"] = {
                "by_hand": hand["curve"],
                "webhook": webhook["curve"],
                "ungated": gated["ungate_curve"],
            }
        finally:
            for process in reversed(processes):
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, signal.SIGKILL)
    return result


def picture(result: dict[str, Any], path: Path) -> None:
    from benchmarks.plots import plot_pods

    plot_pods(result, path)


def table(result: dict[str, Any]) -> str:
    n = result["pods"]
    rows = [
        (f"Deployment 0 -> {n}, bound by the webhook: all Running (s), two rounds",
         " / ".join(map(str, result["webhook_all_running_s"])), ""),
        ("the same, written by hand (no webhook): all Running (s), two rounds",
         " / ".join(map(str, result["by_hand_all_running_s"])), ""),
        ("ratio of the sums", result["ratio"], "<= 1.2"),
        (f"apiserver pod-patch rate, {PATCHERS} at a time (pods/s)", result["patch_rate_per_s"], ""),
        (f"{n} pods gated while the cache loads: Ready -> all ungated (s)", result["ungate_all_s"],
         f"<= {result['ungate_limit_s']} (1.2 x N / patch rate)"),
        ("Ready -> all Running (s)", result["ready_to_all_running_s"], ""),
        (f"pod create at {result['rate_per_s']:g}/s, plain, p50 / p99 (ms)",
         f"{result['create_plain_p50_ms']} / {result['create_plain_p99_ms']}", ""),
        (f"pod create at {result['rate_per_s']:g}/s, opted in, p50 / p99 (ms)",
         f"{result['create_opted_in_p50_ms']} / {result['create_opted_in_p99_ms']}",
         f"p99 <= 2 x plain ({result['admission_p99_ratio']} x)"),
    ]  # fmt: skip
    met = {key: result[key] <= target for key, target in TARGETS.items()}
    return "\n".join(
        [
            f"Run {result['finished_at']}, N = {n}, picture `results/pods.png`; targets met: "
            + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()),
            "",
            "| figure | value | target |",
            "| --- | --- | --- |",
            *(f"| {name} | {value} | {target} |" for name, value, target in rows),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000, help="replicas of each Deployment")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="pod creates a second in the admission phase"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of each admission phase")
    parser.add_argument(
        "--admission-only", action="store_true", help="only the admission phase, printed, no file written"
    )
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = run(args)
    if args.admission_only:
        print(json.dumps(result, indent=2))
        return 0
    result.update(
        rate_per_s=args.rate,
        seconds=args.seconds,
        client_qps=list(CLIENT_QPS),
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        targets=TARGETS,
    )
    picture(result, PICTURE_FILE)
    RESULT_FILE.write_text(json.dumps(result, indent=2) + "\n")
    put_table("pods-bench", "Pod-side scale (`benchmarks/pods_bench.py`)", table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
