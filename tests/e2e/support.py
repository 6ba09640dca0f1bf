"""Helpers of the end-to-end tests: waiting on what a user would see with kubectl."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.integration.support import wait_for
from tests.support.controlplane import child_env, run_kubectl

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "eci-datacache-operator"
INJECT_LABEL = "eci.datacache.dev/inject"
CACHES_ANNOTATION = "eci.datacache.dev/caches"
BOUND_ANNOTATION = "eci.datacache.dev/bound"
GATE = "eci.datacache.dev/cache-ready"
# The node a bound pod is meant for: ECI's virtual node (on ACK, and here tests/support/virtualnode.py).
VIRTUAL_NODE_SELECTOR = {"type": "virtual-kubelet"}


@dataclass
class Cluster:
    """What the tests need of a cluster: kubectl and helm on it, and the chart's values."""

    kubeconfig: Path
    kubectl_path: str
    helm_path: str
    values: dict[str, Any]
    workdir: Path
    emulator_admin: str | None = None  # the emulator's admin API (loopback: from this machine)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.kubectl_path,
            self.kubeconfig,
            *args,
            input=input,
            check=check,
            timeout=timeout,
            env=self.env(),
        )

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        documents = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603
            [self.helm_path, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def values_file(self, **overrides: Any) -> Path:
        values = {**self.values, **overrides}
        path = self.workdir / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def get(self, *args: str) -> dict[str, Any] | None:
        found = self.kubectl("get", *args, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        loaded: dict[str, Any] = yaml.safe_load(found.stdout)
        return loaded

    def env(self) -> dict[str, str]:
        env = child_env()
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm-cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm-config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm-data")
        return env


def example(name: str, namespace: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def opted_in_pod(name: str, namespace: str, caches: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {INJECT_LABEL: "true", "app": "e2e-consumer"},
            "annotations": {CACHES_ANNOTATION: caches},
        },
        "spec": {
            "nodeSelector": VIRTUAL_NODE_SELECTOR,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "app", "image": image}],
        },
    }


def operator_pods(cluster: Cluster, namespace: str, instance: str) -> list[dict[str, Any]]:
    found = cluster.get("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={instance}")
    return [pod for pod in (found or {}).get("items", []) if not pod["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(c.get("restartCount", 0)) for c in pod.get("status", {}).get("containerStatuses", []))


def wait_replicas_ready(
    cluster: Cluster, namespace: str, instance: str, count: int = 2, timeout: float = 180
) -> list[dict[str, Any]]:
    def all_ready() -> list[dict[str, Any]] | None:
        pods = operator_pods(cluster, namespace, instance)
        return pods if len(pods) == count and all(ready(p) for p in pods) else None

    try:
        return wait_for(all_ready, timeout=timeout, interval=1, what=f"{count} Ready operator pods")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(cluster, namespace)}") from None


def lease_holder(cluster: Cluster, namespace: str) -> str | None:
    leases = (cluster.get("leases", "-n", namespace) or {}).get("items", [])
    for lease in leases:
        holder = lease.get("spec", {}).get("holderIdentity")
        if holder:
            return str(holder)
    return None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for found in (obj or {}).get("status", {}).get("conditions", []):
        if found.get("type") == type_:
            return dict(found)
    return None


def wait_cache_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def is_ready() -> dict[str, Any] | None:
        cache = cluster.get("datacache", name, "-n", namespace)
        found = condition(cache, "Ready")
        return cache if found and found["status"] == "True" else None

    return wait_for(is_ready, timeout=timeout, interval=1, what=f"DataCache {namespace}/{name} Ready")


def diagnose(cluster: Cluster, namespace: str) -> str:
    """What a user would look at when the operator's pods are not Ready: their state and logs."""
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", namespace, check=False).stdout[-3000:]
    logs = cluster.kubectl("logs", "-n", namespace, "-l", "app.kubernetes.io/name", "--tail=30", check=False)
    previous = cluster.kubectl(
        "logs", "-n", namespace, "-l", "app.kubernetes.io/name", "--previous", "--tail=40", check=False
    )
    return (
        f"pods:\n{pods}\nevents:\n{events}\nlogs:\n{logs.stdout[-4000:]}{logs.stderr[-1000:]}"
        f"\nlogs of restarted containers:\n{previous.stdout[-6000:]}"
    )
