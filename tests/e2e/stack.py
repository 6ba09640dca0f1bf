"""`make cluster`: a local cluster with a real node (tests/e2e/localcluster.py), the ECI
emulator reachable from its pods, a virtual ECI node backed by it (as ACK's virtual node) and
the operator image loaded — without the operator, which is then installed exactly as on ACK:

    helm install eci-datacache charts/eci-datacache-operator -n datacache-system \\
      --create-namespace -f .local/values.yaml

Writes `.local/kubeconfig` (admin), `.local/emulator.env` (the emulator's endpoint and key pair,
for the SDK or `kubectl` users in another terminal) and `.local/values.yaml` (the Helm values
that point the chart at the loaded image, the emulator and the credentials Secret made here).
The end-to-end tests (tests/e2e/) use the same values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from eci_datacache_emulator import Emulator, EmulatorConfig
from tests.e2e.localcluster import ClusterUnavailable, LocalCluster
from tests.support.controlplane import ControlPlaneUnavailable
from tests.support.virtualnode import VirtualNode

RELEASE = "eci-datacache"
RELEASE_NAMESPACE = "datacache-system"
CREDENTIALS_SECRET = "eci-emulator-credentials"  # noqa: S105 - a Secret's name
IMAGE_REPOSITORY = "localhost/eci-datacache-operator"
IMAGE_TAG = "dev"
DEFAULT_REGION = "cn-hangzhou"
CLUSTER_REGION = "cn-hongkong"
ACCESS_KEY_ID = "LTAI-local-emulator"
ACCESS_KEY_SECRET = "local-emulator-secret"  # noqa: S105 - the emulator's own dev key pair


def chart_values(
    emulator_endpoint: str, image: str = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}", pull_policy: str = "Never"
) -> dict[str, Any]:
    """Helm values for the chart on a cluster whose pods reach the emulator at that endpoint."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": pull_policy},
        "region": DEFAULT_REGION,
        "clusterRegion": CLUSTER_REGION,
        "eci": {"endpoint": emulator_endpoint, "protocol": "http"},
        # Branches resolved at the emulator's hubs, never the Internet's.
        "hubs": {
            "huggingfaceEndpoint": f"http://{emulator_endpoint}/hub/huggingface",
            "modelscopeEndpoint": f"http://{emulator_endpoint}/hub/modelscope",
        },
        "credentials": {"existingSecret": CREDENTIALS_SECRET},
        "pollInterval": {"loading": 1, "stable": 30},
    }


def credentials_secret(namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The release namespace and the emulator's key pair in it, as the chart's
    `credentials.existingSecret` expects."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
            "type": "Opaque",
            "stringData": {
                "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
            },
        },
    ]


def emulator_for_pods(host: str) -> Emulator:
    """The ECI emulator listening where the cluster's pods reach it."""
    return Emulator(
        EmulatorConfig(host=host, access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET)
    )


def virtual_node(kubeconfig: Path, emulator_endpoint: str) -> VirtualNode:
    """ECI's virtual node, as on ACK: pods bound to a cache run as the emulator's container
    groups in the cluster's region (a `with` block starts and stops it)."""
    return VirtualNode(str(kubeconfig), emulator_endpoint, CLUSTER_REGION, ACCESS_KEY_ID, ACCESS_KEY_SECRET)


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument("--local-dir", default=".local", type=Path, help="where the files go")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    assets = os.environ.get("DATACACHE_CONTROLPLANE_ASSETS")
    images = [Path(p) for p in os.environ.get("DATACACHE_E2E_IMAGES", "").split(":") if p]
    if not assets or not images:
        print("make cluster: nothing was prepared (tests/e2e/prepare.sh: run as root)", file=sys.stderr)
        return 1
    local: Path = args.local_dir.resolve()
    local.mkdir(parents=True, exist_ok=True)
    root = local / "cluster"
    shutil.rmtree(root, ignore_errors=True)
    print("starting the control plane, kube-scheduler and a node...", flush=True)
    cluster = LocalCluster(assets=Path(assets), images=images, root=root)
    stop: Callable[[], None] = cluster.stop
    try:
        cluster.start()
        assert cluster.plane is not None and cluster.slot is not None
        plane = cluster.plane
        shutil.copyfile(plane.kubeconfig, local / "kubeconfig")
        (local / "kubeconfig").chmod(0o600)
        plane.apply(credentials_secret())
        with (
            emulator_for_pods(cluster.slot.host_ip).in_thread() as emulator,
            virtual_node(plane.kubeconfig, emulator.endpoint) as node,
        ):
            write_private(
                local / "emulator.env",
                f"ECI_ENDPOINT={emulator.endpoint}\nALIBABA_CLOUD_ACCESS_KEY_ID={ACCESS_KEY_ID}\n"
                f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={ACCESS_KEY_SECRET}\nECI_PROTOCOL=http\n",
            )
            write_private(
                local / "values.yaml", yaml.safe_dump(chart_values(emulator.endpoint), sort_keys=False)
            )
            kubeconfig = os.path.relpath(local / "kubeconfig")
            values = os.path.relpath(local / "values.yaml")
            print(
                f"""
Local cluster is up (in {cluster.startup_seconds:.0f} s), without the operator.
  kube-apiserver  {plane.server}   (KUBECONFIG={kubeconfig})
  node            {cluster.describe()["node"]} at {cluster.slot.node_ip}
  virtual node    {node.name} (ECI in {CLUSTER_REGION}: pods bound to a cache run there, as container groups of the emulator)
  ECI emulator    http://{emulator.endpoint}   (admin: {emulator.admin_url}/state)
  image           {IMAGE_REPOSITORY}:{IMAGE_TAG} (loaded; `make image` rebuilds and reloads it)

Install the operator as on ACK, in another terminal:
  export KUBECONFIG={kubeconfig}
  helm install {RELEASE} charts/eci-datacache-operator -n {RELEASE_NAMESPACE} --create-namespace -f {values}
  kubectl -n {RELEASE_NAMESPACE} get pods -w
  kubectl apply -f examples/datacache-huggingface.yaml && kubectl get edc -w

Ctrl-C stops everything and leaves the machine as it was.
""",
                flush=True,
            )
            signal.pause()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except (ClusterUnavailable, ControlPlaneUnavailable) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
