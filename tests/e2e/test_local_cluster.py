"""The local cluster leaves the machine as it found it: CI runs on the developer's machine right
after a session, and later sessions may get it back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import IN_CI
from tests.e2e.localcluster import CGROUP_FS, LocalCluster, Slot, missing_requirements
from tests.support.controlplane import ControlPlaneUnavailable, find_assets

# Where a node would leave state on the host if its mounts were not its own.
HOST_PATHS = ("/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        bool(os.environ.get("DATACACHE_E2E_KUBECONFIG")), reason="tests the local cluster, not the one given"
    ),
]


def _host_state() -> dict[str, object]:
    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout  # noqa: S603

    return {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "kernel.panic": Path("/proc/sys/kernel/panic").read_text(),
        "vm.overcommit_memory": Path("/proc/sys/vm/overcommit_memory").read_text(),
        "mounts": [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()],
        "iptables": sorted(line for line in run("iptables-save").splitlines() if line.startswith((":", "-"))),
        "paths": [path for path in HOST_PATHS if os.path.exists(path)],
        "routes": sorted(run("ip", "-4", "route").splitlines()),
        "links": sorted(line.split(":")[1].strip() for line in run("ip", "-o", "link").splitlines()),
    }


def _leftovers(slot: Slot, root: Path) -> list[str]:
    found = []
    if Path(f"/run/netns/{slot.netns}").exists():
        found.append(f"network namespace {slot.netns}")
    if subprocess.run(["ip", "link", "show", slot.host_link], capture_output=True).returncode == 0:  # noqa: S603, S607
        found.append(f"link {slot.host_link}")
    found += [str(p) for p in CGROUP_FS.glob(f"*/{slot.cgroup.lstrip('/')}")]
    if root.exists():
        found.append(str(root))
    if slot.owner_file.exists():
        found.append(str(slot.owner_file))
    processes = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True).stdout  # noqa: S603, S607
    found += [f"process {line}" for line in processes.splitlines()]
    return found


def test_a_stopped_cluster_leaves_no_trace_on_the_machine() -> None:
    try:
        if missing := missing_requirements():
            raise ControlPlaneUnavailable("no local cluster with a node: needs " + "; ".join(missing))
        assets = find_assets()
    except ControlPlaneUnavailable as error:
        if IN_CI:
            pytest.fail(str(error))
        pytest.skip(str(error))
    before = _host_state()
    cluster = LocalCluster(assets=assets)  # no images: a node that is Ready is enough here
    cluster.start()
    try:
        assert cluster.slot is not None and cluster.root is not None
        slot, root = cluster.slot, cluster.root
        running = _host_state()
        # While it runs, its iptables rules and mounts are in the node's namespaces (the host has
        # only the pin of its network namespace).
        assert running["iptables"] == before["iptables"]
        assert [m for m in running["mounts"] if m != f"/run/netns/{slot.netns}"] == before["mounts"]
    finally:
        cluster.stop()
    assert _leftovers(slot, root) == []
    assert _host_state() == before
