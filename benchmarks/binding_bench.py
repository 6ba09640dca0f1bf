"""Pods bound to caches: admission latency at a steady 20 pod creates per second, and the time
from a cache turning Ready to its waiting pods being released.

One real control plane (etcd, kube-apiserver, kube-controller-manager), the ECI emulator (in
this process) and the operator as users run it, serving its webhook over TLS to that
apiserver. Figures:

* ``review_p50_ms`` / ``review_p99_ms``: an AdmissionReview of an opted-in pod (one cache)
  POSTed straight to the webhook over TLS, 20 a second: the webhook's answer time as the
  apiserver sees it (TLS, reading the DataCache from the apiserver, the patch);
* ``create_opted_in_p50_ms`` / ``_p99_ms`` and ``create_plain_p50_ms`` / ``_p99_ms``: a pod
  create through the apiserver at 20 a second, with and without the label (the difference
  is what the webhook adds end to end);
* ``ungate_p50_s`` / ``ungate_p99_s`` / ``ungate_max_s``: a Deployment's gated pods, from the
  DataCache's Ready=True seen on a watch to each pod's gate gone on a watch (same clock).

    .venv/bin/python benchmarks/binding_bench.py [--seconds 30] [--pods 50] [--rounds 3]

writes ``benchmarks/results/binding.json`` and its table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
for _proxy_variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_proxy_variable, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import argparse  # noqa: E402
import base64  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.floors import percentile, rnd  # noqa: E402
from benchmarks.machine import machine, wait_healthy  # noqa: E402
from benchmarks.readme import put_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = Path(__file__).parent / "results" / "binding.json"
ACCESS_KEY_ID = "bench-access-key-id"
ACCESS_KEY_SECRET = "bench-access-key-secret"  # noqa: S105 - the emulator's own key pair
NAMESPACE = "bench"
RATE = 20.0  # pod creates (or reviews) per second
GROUP, VERSION = "eci.datacache.dev", "v1alpha1"
GATE = "eci.datacache.dev/cache-ready"
TARGETS = {"review_p99_ms": 20.0, "ungate_p99_s": 2.0}


def datacache(name: str, paused: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if paused:
        meta["annotations"] = {"eci.datacache.dev/paused": "true"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DataCache",
        "metadata": meta,
        "spec": {
            "path": f"/models/{name}",
            "dataSource": {
                "type": "URL",
                "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"},
            },
        },
    }


def pod(name: str, cache: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "bench"}}
    if cache:
        meta["labels"]["eci.datacache.dev/inject"] = "true"
        meta["annotations"] = {"eci.datacache.dev/caches": f"{cache}:/models/m:ro"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }


def operator_env(plane: Any, emulator: Any, **settings: str) -> dict[str, str]:
    """The environment of an operator process against `plane` and the emulator, watching
    NAMESPACE (its own namespace too), with `settings` (env name -> value) on top."""
    return {
        **plane.env(),
        "ECI_ENDPOINT": emulator.endpoint,
        "ECI_PROTOCOL": "http",
        # Hub branches resolved at the emulator's hubs, never the Internet's.
        "DATACACHE_HUGGINGFACE_ENDPOINT": f"http://{emulator.endpoint}/hub/huggingface",
        "DATACACHE_MODELSCOPE_ENDPOINT": f"http://{emulator.endpoint}/hub/modelscope",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "DATACACHE_NAMESPACES": NAMESPACE,
        "DATACACHE_OPERATOR_NAMESPACE": NAMESPACE,
        "DATACACHE_POLL_INTERVAL_LOADING": "0.5",
        **settings,
    }


def api_client(plane: Any) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(plane.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    return client.ApiClient(configuration)


def paced(count: int, rate: float, call: Any, workers: int = 8) -> list[float]:
    """Run `call(i)` `count` times at `rate` a second (open loop: a slow call does not delay the
    next start) from `workers` threads; returns each call's duration in seconds, counted from
    when it was due (a call that waited for a free thread counts its wait too)."""
    durations: list[float] = [0.0] * count
    start = time.perf_counter()

    def one(index: int) -> None:
        call(index)
        durations[index] = time.perf_counter() - (start + index / rate)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, index))
        for future in futures:
            future.result()  # a failed call fails the run
    return durations


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eci_datacache_emulator import Emulator, EmulatorConfig
    from kubernetes import client, watch
    from tests.support.controlplane import ControlPlane, free_port
    from tests.support.webhook import webhook_configuration

    work = Path(tempfile.mkdtemp(prefix="binding-bench-"))
    with ControlPlane() as plane:
        plane.install_crds(REPO / "deploy" / "crds")
        plane.kubectl("create", "namespace", NAMESPACE)
        port = free_port()
        plane.apply(
            webhook_configuration("bench", port, {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}})
        )
        emulator_config = EmulatorConfig(
            access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, time_scale=0.02, quota=0
        )
        with Emulator(emulator_config).in_thread() as emulator:
            health = free_port()
            env = operator_env(
                plane,
                emulator,
                DATACACHE_POLL_INTERVAL_STABLE="60",
                DATACACHE_HEALTH_PORT=str(health),
                DATACACHE_METRICS_PORT=str(free_port()),
                DATACACHE_WEBHOOK_PORT=str(port),
                DATACACHE_WEBHOOK_HOSTS="127.0.0.1",
                DATACACHE_WEBHOOK_CONFIGURATION="bench",
                DATACACHE_LOG_LEVEL="WARNING",
            )
            log = (work / "operator.log").open("ab")
            operator = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "datacache_operator", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_healthy(operator, health)
                kube = api_client(plane)
                core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "datacaches", datacache("model")
                )
                wait(
                    lambda: ready(
                        custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "datacaches", "model")
                    ),
                    60,
                    "the cache Ready",
                )
                ca = wait(
                    lambda: plane.kubectl(
                        "get",
                        "mutatingwebhookconfiguration",
                        "bench",
                        "-o",
                        "jsonpath={.webhooks[0].clientConfig.caBundle}",
                    ).stdout.strip(),
                    60,
                    "the CA in the webhook configuration",
                )
                result = {
                    **reviews(port, base64.b64decode(ca), args),
                    **creates(core, args),
                    **ungates(core, custom, watch, args),
                }
            finally:
                os.killpg(operator.pid, signal.SIGTERM)
                operator.wait(30)
    return result


def reviews(port: int, ca: bytes, args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cadata=ca.decode())
    count = int(args.seconds * RATE)
    allowed = []
    local = threading.local()  # a kept-alive connection per thread, as the apiserver keeps its own

    def connection() -> http.client.HTTPSConnection:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        return local.connection

    def review(index: int) -> None:
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": NAMESPACE,
                "object": pod(f"review-{index}", "model"),
            },
        }
        conn = connection()
        conn.request(
            "POST", "/mutate-v1-pod", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        allowed.append(json.loads(conn.getresponse().read())["response"]["allowed"])

    paced(20, RATE, review)  # warm-up: TLS sessions, the client's imports
    allowed.clear()
    durations = paced(count, RATE, review)
    assert all(allowed) and len(allowed) == count, "a review was refused"
    return {
        "reviews": count,
        "review_p50_ms": rnd(percentile(durations, 0.5) * 1000, 2),  # type: ignore[operator]
        "review_p99_ms": rnd(percentile(durations, 0.99) * 1000, 2),  # type: ignore[operator]
    }


def creates(core: Any, args: argparse.Namespace) -> dict[str, Any]:
    count = int(args.seconds * RATE)
    figures: dict[str, Any] = {"creates_per_kind": count}
    for kind, cache in (("plain", None), ("opted_in", "model")):
        durations = paced(
            count,
            RATE,
            lambda i, k=kind, c=cache: core.create_namespaced_pod(
                NAMESPACE, pod(f"{k.replace('_', '-')}-{i}", c)
            ),
        )
        figures[f"create_{kind}_p50_ms"] = rnd(percentile(durations, 0.5) * 1000, 2)  # type: ignore[operator]
        figures[f"create_{kind}_p99_ms"] = rnd(percentile(durations, 0.99) * 1000, 2)  # type: ignore[operator]
    core.delete_collection_namespaced_pod(NAMESPACE, label_selector="app=bench")
    return figures


def ungates(core: Any, custom: Any, watch: Any, args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    for round_ in range(args.rounds):
        latencies.extend(ungate_round(core, custom, watch, args.pods, f"gated-{round_}"))
    return {
        "ungated_pods": len(latencies),
        "ungate_p50_s": rnd(percentile(latencies, 0.5)),
        "ungate_p99_s": rnd(percentile(latencies, 0.99)),
        "ungate_max_s": rnd(max(latencies)),
    }


def ungate_round(core: Any, custom: Any, watch: Any, pods: int, name: str) -> list[float]:
    """A paused cache, a Deployment of `pods` gated pods, the cache unpaused: seconds from its
    Ready seen to each pod's gate gone."""
    from kubernetes import client

    custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "datacaches", datacache(name, paused=True)
    )
    template = {
        "metadata": {
            "labels": {"app": name, "eci.datacache.dev/inject": "true"},
            "annotations": {"eci.datacache.dev/caches": f"{name}:/m"},
        },
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": name}}, "template": template},
    }
    client.AppsV1Api(core.api_client).create_namespaced_deployment(NAMESPACE, deployment)

    def all_gated() -> bool:
        found = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items
        return len([p for p in found if p.spec.scheduling_gates]) == pods

    wait(all_gated, 120, "every pod created and gated")
    released: dict[str, float] = {}
    ready_at: list[float] = []

    def watch_pods() -> None:
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_pod, NAMESPACE, label_selector=f"app={name}", timeout_seconds=120
        ):
            obj = event["object"]
            if not obj.spec.scheduling_gates and obj.metadata.name not in released:
                released[obj.metadata.name] = time.time()
            if len(released) >= pods:
                w.stop()

    def watch_cache() -> None:
        w = watch.Watch()
        for event in w.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, "datacaches",
            field_selector=f"metadata.name={name}", timeout_seconds=120,
        ):  # fmt: skip
            if ready(event["object"]):
                ready_at.append(time.time())
                w.stop()

    threads = [
        threading.Thread(target=watch_pods, daemon=True),
        threading.Thread(target=watch_cache, daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)  # both watches established
    unpause = {"metadata": {"annotations": {"eci.datacache.dev/paused": None}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "datacaches", name, unpause)
    for thread in threads:
        thread.join(150)
    if not ready_at or len(released) < pods:
        raise RuntimeError(f"{name}: Ready seen {bool(ready_at)}, {len(released)}/{pods} pods released")
    return [t - ready_at[0] for t in released.values()]


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            "AdmissionReview straight to the webhook, p50 / p99 (ms)",
            f"{result['review_p50_ms']} / {result['review_p99_ms']}",
            "p99 < 20",
        ),
        (
            "pod create via the apiserver, plain, p50 / p99 (ms)",
            f"{result['create_plain_p50_ms']} / {result['create_plain_p99_ms']}",
            "",
        ),
        (
            "pod create via the apiserver, opted in, p50 / p99 (ms)",
            f"{result['create_opted_in_p50_ms']} / {result['create_opted_in_p99_ms']}",
            "",
        ),
        (
            "cache Ready -> pod ungated, p50 / p99 / max (s)",
            f"{result['ungate_p50_s']} / {result['ungate_p99_s']} / {result['ungate_max_s']}",
            "< 2",
        ),
    ]
    met = {key: result[key] is not None and result[key] < target for key, target in TARGETS.items()}
    lines = [
        f"Run {result['finished_at']}, {RATE:g} creates/s for {result['seconds']} s, "
        f"{result['ungated_pods']} gated pods in {result['rounds']} rounds; targets met: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()),
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {target} |" for name, value, target in rows),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of steady 20/s load per phase")
    parser.add_argument("--pods", type=int, default=50, help="gated pods per round")
    parser.add_argument("--rounds", type=int, default=3, help="caches released one after the other")
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = run(args)
    result.update(
        seconds=args.seconds,
        rounds=args.rounds,
        rate_per_s=RATE,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        targets=TARGETS,
    )
    RESULT_FILE.write_text(json.dumps(result, indent=2) + "\n")
    put_table("binding-bench", "Pods bound to caches (`benchmarks/binding_bench.py`)", table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
