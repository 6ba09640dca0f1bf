"""A local Kubernetes cluster with one real node, without Docker: the control plane of
`tests.support.controlplane` plus kube-scheduler on the host, and a node (containerd,
runc, the CNI plugins, kubelet, kube-proxy) in a network and mount namespace of its own.

    python -m tests.e2e.localcluster        # `make cluster`: in the foreground until Ctrl-C

The machine is left as it was found: the node's iptables rules, bridge, routes, kernel settings
(`ip_forward`, kubelet's checks) and mounts live in its namespaces, which go with it; what is on
the host (one veth pair and its route, cgroups, processes, the state folder) is removed when the
cluster stops, and a cluster whose owner died is swept at the next start. No packet leaves the
machine: addresses come from 198.18.0.0/15 and nothing is looked up through the machine's
resolver (pods get an empty resolv.conf; the apiserver reaches the node by its address).

Addresses of slot N (several clusters may run at once, e.g. `make cluster` beside `make test`):
host end of the link 198.18.N.1 (kube-apiserver, the ECI emulator), node 198.18.N.2, pods
198.18.(64+N).0/24, Services 198.19.N.0/24.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.support.controlplane import ControlPlane, ControlPlaneUnavailable, _Process

REPO = Path(__file__).resolve().parents[2]
NODE_SCRIPT = Path(__file__).resolve().parent / "node.sh"
NODE_NAME = "eci-datacache-node"
SLOTS = 16
STATE_DIR = Path(os.environ.get("DATACACHE_CLUSTER_STATE", "/tmp"))
CGROUP_FS = Path("/sys/fs/cgroup")
PAUSE_IMAGE = "localhost/eci-datacache-pause:local"
NODE_READY_TIMEOUT_S = 180.0
# Debian packages the node needs (and the commands that show each is there).
PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "buildah": "buildah",
    "debootstrap": "debootstrap",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
}


class ClusterUnavailable(RuntimeError):
    """The machine cannot run the node (not root, a package missing) or it did not come up."""


def missing_requirements() -> list[str]:
    """What this machine lacks to run a node: empty when it can."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the node needs namespaces, mounts and cgroups)")
    packages = sorted(
        {
            package
            for command, package in PACKAGES.items()
            if not (Path(command).exists() or shutil.which(command))
        }
    )
    if packages:
        missing.append(f"Debian packages: {' '.join(packages)} (apt-get install them)")
    if not (CGROUP_FS / "pids").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        missing.append("a cgroup file system at /sys/fs/cgroup")
    return missing


@dataclass(frozen=True)
class Slot:
    """The names and addresses of one cluster on this machine."""

    index: int

    @property
    def netns(self) -> str:
        return f"edc-node-{self.index}"

    @property
    def host_link(self) -> str:
        return f"edc{self.index}-host"

    @property
    def node_link(self) -> str:
        return f"edc{self.index}-node"

    @property
    def host_ip(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"198.18.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{64 + self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"198.19.{self.index}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def cgroup(self) -> str:
        return f"/eci-datacache-node-{self.index}"

    @property
    def owner_file(self) -> Path:
        return STATE_DIR / f"eci-datacache-node-{self.index}.json"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)  # noqa: S603
    if check and result.returncode != 0:
        raise ClusterUnavailable(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cgroup_dirs(slot: Slot) -> list[Path]:
    """The slot's cgroup in every mounted hierarchy (cgroup v1 controllers, or v2 itself)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS / slot.cgroup.lstrip("/")]
    return [
        hierarchy / slot.cgroup.lstrip("/")
        for hierarchy in sorted(CGROUP_FS.iterdir())
        if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists()
    ]


def _pids_in(folder: Path) -> set[int]:
    pids: set[int] = set()
    for procs in folder.rglob("cgroup.procs"):
        try:
            pids.update(int(line) for line in procs.read_text().split())
        except OSError:
            continue
    return pids


def _kill_and_remove_cgroups(slot: Slot) -> None:
    """Every process of the node (containers, shims, containerd, kubelet), then its cgroups."""
    folders = [folder for folder in _cgroup_dirs(slot) if folder.exists()]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = set().union(*(_pids_in(folder) for folder in folders)) if folders else set()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for folder in folders:
        # Deepest first: a cgroup is removed with rmdir once its children are gone.
        for child in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                child.rmdir()
            except OSError:
                pass
        try:
            folder.rmdir()
        except OSError:
            pass


def _sweep(slot: Slot) -> None:
    """Take down what a cluster of this slot left on the host."""
    _kill_and_remove_cgroups(slot)
    if Path(f"/run/netns/{slot.netns}").exists():
        _run("ip", "netns", "delete", slot.netns, check=False)
    # The host end goes with the node's end (and the route with it), but not if the namespace
    # was never made.
    _run("ip", "link", "delete", slot.host_link, check=False)
    try:
        owner = json.loads(slot.owner_file.read_text())
    except (OSError, ValueError):
        owner = {}
    root = owner.get("root")
    if root and owner.get("remove_root"):
        shutil.rmtree(root, ignore_errors=True)
    slot.owner_file.unlink(missing_ok=True)


def claim_slot() -> Slot:
    """A free slot, after sweeping those whose owner process is gone."""
    for index in range(SLOTS):
        slot = Slot(index)
        try:
            owner = json.loads(slot.owner_file.read_text())
        except FileNotFoundError:
            owner = None
        except (OSError, ValueError):
            owner = {}
        if owner is not None and _alive(int(owner.get("pid", 0)) or 1 << 30):
            continue
        leftovers = owner is not None or Path(f"/run/netns/{slot.netns}").exists()
        if leftovers or any(folder.exists() for folder in _cgroup_dirs(slot)):
            _sweep(slot)
        try:
            with slot.owner_file.open("x") as claim:
                claim.write(json.dumps({"pid": os.getpid()}))
        except FileExistsError:
            continue  # another process took it between the look and the claim
        return slot
    raise ClusterUnavailable(f"all {SLOTS} local cluster slots are in use")


@dataclass
class LocalCluster:
    """The control plane, kube-scheduler and one node; `start()`, then `stop()` (or `with`)."""

    assets: Path
    root: Path | None = None
    images: list[Path] = field(default_factory=list)
    keep_root: bool = False
    slot: Slot | None = None
    plane: ControlPlane | None = None
    scheduler: _Process | None = None
    node: _Process | None = None
    startup_seconds: float = 0.0

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if missing := missing_requirements():
            raise ClusterUnavailable("cannot run a local node: needs " + "; ".join(missing))
        for binary in ("kube-scheduler", "kubelet", "kube-proxy", "kube-apiserver", "etcd"):
            if not os.access(self.assets / binary, os.X_OK):
                raise ClusterUnavailable(f"{self.assets} has no {binary}: run `make cluster` or build.sh")
        began = time.monotonic()
        made_root = self.root is None
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="eci-datacache-cluster-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.slot = claim_slot()
        self.slot.owner_file.write_text(
            json.dumps(
                {"pid": os.getpid(), "root": str(self.root), "remove_root": made_root and not self.keep_root}
            )
        )
        try:
            self._link()
            self.plane = ControlPlane(
                assets=self.assets,
                root=self.root / "controlplane",
                keep_root=True,
                address=self.slot.host_ip,
                service_cidr=self.slot.service_cidr,
                with_nodes=True,
            )
            self.plane.start()
            self._start_scheduler()
            self._start_node()
            self._load_images()
            self._wait_node_ready(time.monotonic() + NODE_READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.slot is not None:
            _kill_and_remove_cgroups(self.slot)
        for process in (self.scheduler,):
            if process is not None:
                process.stop()
        if self.plane is not None:
            self.plane.stop()
        if self.slot is not None:
            if Path(f"/run/netns/{self.slot.netns}").exists():
                _run("ip", "netns", "delete", self.slot.netns, check=False)
            _run("ip", "link", "delete", self.slot.host_link, check=False)
            self.slot.owner_file.unlink(missing_ok=True)
            self.slot = None
        if self.root is not None and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the link between the host and the node ------------------------------------------
    def _link(self) -> None:
        slot = self._slot
        _run("ip", "netns", "add", slot.netns)
        _run("ip", "link", "add", slot.host_link, "type", "veth", "peer", "name", slot.node_link)
        _run("ip", "link", "set", slot.node_link, "netns", slot.netns)
        _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_link)
        _run("ip", "link", "set", slot.host_link, "up")
        inside = ("ip", "netns", "exec", slot.netns)
        _run(*inside, "ip", "addr", "add", f"{slot.node_ip}/30", "dev", slot.node_link)
        _run(*inside, "ip", "link", "set", slot.node_link, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        # The node's only way out is the host's end of the link: it reaches nothing else.
        _run(*inside, "ip", "route", "add", "default", "via", slot.host_ip)
        # The apiserver reaches pods (webhooks) through the node; the route goes with the link.
        _run("ip", "route", "add", slot.pod_cidr, "via", slot.node_ip, "dev", slot.host_link)

    @property
    def _slot(self) -> Slot:
        assert self.slot is not None, "the cluster is not started"
        return self.slot

    # --- kube-scheduler ------------------------------------------------------------------
    def _start_scheduler(self) -> None:
        assert self.plane is not None and self.root is not None
        self.scheduler = _Process(
            "kube-scheduler",
            [
                str(self.assets / "kube-scheduler"),
                f"--kubeconfig={self.plane.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=0",
            ],
            self.root / "kube-scheduler.log",
        )
        self.scheduler.start(env=self.plane.env())

    # --- the node ------------------------------------------------------------------------
    def _start_node(self) -> None:
        assert self.plane is not None and self.root is not None
        slot = self._slot
        node_root = self.root / "node"
        node_root.mkdir(parents=True, exist_ok=True)
        self._write_node_config(node_root)
        for folder in _cgroup_dirs(slot):
            folder.mkdir(exist_ok=True)
            # cgroup v1 cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (folder / name).exists() and not (folder / name).read_text().strip():
                    (folder / name).write_text((folder.parent / name).read_text())
        pids_node = CGROUP_FS / "pids" / slot.cgroup.lstrip("/") / "node"
        if not (CGROUP_FS / "cgroup.controllers").exists():
            pids_node.mkdir(exist_ok=True)
        self.node = _Process(
            "node",
            [
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "nsenter",
                f"--net=/run/netns/{slot.netns}",
                "bash",
                str(NODE_SCRIPT),
                str(node_root),
                slot.cgroup,
                str(self.assets),
            ],
            self.root / "node.log",
        )
        env = {**self.plane.env(), "NODE_NAME": NODE_NAME, "NODE_IP": slot.node_ip}
        env["PATH"] = f"/usr/sbin:/sbin:{env.get('PATH', '/usr/bin:/bin')}"
        self.node.start(env=env)

    def _write_node_config(self, node_root: Path) -> None:
        assert self.plane is not None
        slot = self._slot
        shutil.copyfile(self.plane.kubeconfig, node_root / "kubeconfig")
        # Pods resolve nothing: no name may be looked up through the machine's resolver.
        (node_root / "resolv.conf").write_text("# no resolver in the local cluster\n")
        cni = node_root / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-eci-datacache.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "eci-datacache",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "edc-pods",
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": slot.pod_cidr}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(cni / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        (node_root / "containerd.toml").write_text(
            f"""version = 2
root = "{node_root}/containerd/root"
state = "{node_root}/containerd/state"
# Nothing outside the node's folder: no /opt/containerd, no snapshotters this machine lacks.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{node_root}/containerd.sock"
[ttrpc]
  address = "{node_root}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc may not lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / "net.d"}"
"""
        )
        kubelet: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": slot.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            # Reached only from this machine, on the node's own link.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": slot.cgroup,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{node_root}/containerd.sock",
            "resolvConf": str(node_root / "resolv.conf"),
            # kubelet only checks kernel settings; node.sh gives it copies with the values it wants.
            "protectKernelDefaults": True,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
        }
        (node_root / "kubelet.yaml").write_text(yaml.safe_dump(kubelet))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(node_root / "kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": slot.pod_cidr,
            "hostnameOverride": NODE_NAME,
            "bindAddress": slot.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{slot.node_ip}/32"],
            "iptables": {"masqueradeAll": True},
            # 0: leave the kernel's conntrack settings as they are (some are machine-wide).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (node_root / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy))

    @property
    def containerd_socket(self) -> Path:
        assert self.root is not None
        return self.root / "node" / "containerd.sock"

    def load_image(self, archive: Path) -> None:
        """Import a docker or OCI archive into the node's containerd (kubelet's namespace)."""
        deadline = time.monotonic() + 30
        while not self.containerd_socket.exists():
            if self.node is not None and not self.node.running():
                raise ClusterUnavailable(f"the node exited:\n{self.node_logs()}")
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"containerd did not start:\n{self.node_logs()}")
            time.sleep(0.2)
        result = subprocess.run(  # noqa: S603
            ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", "images", "import", str(archive)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise ClusterUnavailable(f"importing {archive} failed: {result.stderr.strip()}")

    def _load_images(self) -> None:
        for archive in self.images:
            self.load_image(archive)

    def _wait_node_ready(self, deadline: float) -> None:
        assert self.plane is not None and self.node is not None
        while time.monotonic() < deadline:
            if not self.node.running():
                raise ClusterUnavailable(f"the node exited:\n{self.node_logs()}")
            found = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if found.returncode == 0:
                node = json.loads(found.stdout)
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in node.get("status", {}).get("conditions", [])
                )
                tainted = any(
                    t["key"] == "node.kubernetes.io/not-ready"
                    for t in node.get("spec", {}).get("taints") or []
                )
                if ready and not tainted:
                    return
            time.sleep(0.5)
        raise ClusterUnavailable(f"node {NODE_NAME} not Ready in time:\n{self.node_logs()}")

    def node_logs(self, lines: int = 30) -> str:
        assert self.root is not None
        parts = []
        for name in ("node.log", "node/containerd.log", "node/kubelet.log", "node/kube-proxy.log"):
            path = self.root / name
            if path.exists():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"--- {name}\n{tail}")
        return "\n".join(parts)

    def describe(self) -> dict[str, Any]:
        assert self.plane is not None
        return {
            **self.plane.describe(),
            "node": NODE_NAME,
            "node_ip": self._slot.node_ip,
            "host_ip": self._slot.host_ip,
            "containerd": str(self.containerd_socket),
        }


@contextmanager
def local_cluster(assets: Path, images: list[Path], root: Path | None = None) -> Iterator[LocalCluster]:
    cluster = LocalCluster(assets=assets, images=images, root=root, keep_root=root is not None)
    with cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.localcluster", description=__doc__)
    parser.add_argument("--assets", required=True, type=Path, help="folder of the built binaries")
    parser.add_argument("--image", action="append", type=Path, default=[], help="image archive to load")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with LocalCluster(assets=args.assets, images=args.image) as cluster:
            print(json.dumps(cluster.describe()), flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    except (ClusterUnavailable, ControlPlaneUnavailable) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
