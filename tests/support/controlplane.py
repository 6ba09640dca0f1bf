"""A real kube-apiserver backed by a real etcd, with kube-controller-manager (so Deployments,
ReplicaSets and Jobs make pods), started as local processes on 127.0.0.1.

The envtest idea, in Python: used by the pytest fixtures and by `make run`. The binaries
come from `KUBEBUILDER_ASSETS` when it is set (the envtest convention), otherwise from the
folder `tests/controlplane/build.sh` fills (`DATACACHE_CONTROLPLANE_ASSETS` or its default
cache folder).

kube-controller-manager is optional (envtest's downloaded assets lack it): started when the
folder holds it. Every process runs in its own session and get SIGKILL when the process that started
them dies (PR_SET_PDEATHSIG), so no etcd or apiserver outlives a test run, even one that
is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

START_TIMEOUT_S = float(os.environ.get("DATACACHE_CONTROLPLANE_START_TIMEOUT", "90"))
STOP_TIMEOUT_S = 20.0
DEFAULT_CACHE_ROOT = (
    Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")))
    / "eci-datacache-operator"
    / "controlplane"
)
REQUIRED_BINARIES = ("etcd", "kube-apiserver")
CONTROLLER_MANAGER = "kube-controller-manager"
# What makes pods and cleans up after them, and what aggregates add-ons' roles into admin,
# edit and view; no real node, but a virtual one (tests/support/virtualnode.py) may register:
# the node lifecycle controller lifts its not-ready taint once it reports Ready.
CONTROLLERS = (
    "node-lifecycle-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
)


class ControlPlaneUnavailable(RuntimeError):
    """The binaries are missing or the control plane did not become ready."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own words."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)

    def __str__(self) -> str:
        return f"kubectl {' '.join(map(str, self.cmd[2:]))} failed ({self.returncode}): {self.stderr.strip()}"


def find_assets() -> Path:
    """The folder holding etcd, kube-apiserver (and, when built here, kubectl and helm)."""
    for variable in ("KUBEBUILDER_ASSETS", "DATACACHE_CONTROLPLANE_ASSETS"):
        if value := os.environ.get(variable):
            folder = Path(value)
            _check_binaries(folder, f"{variable}={value}")
            return folder
    cache_root = Path(os.environ.get("DATACACHE_CONTROLPLANE_CACHE", str(DEFAULT_CACHE_ROOT)))
    complete = sorted(p.parent for p in cache_root.glob("*/.complete"))
    if not complete:
        raise ControlPlaneUnavailable(
            f"no control plane binaries in {cache_root}: run `make controlplane` "
            "(or set KUBEBUILDER_ASSETS to a folder holding etcd and kube-apiserver)"
        )
    return complete[-1]


def _check_binaries(folder: Path, origin: str) -> None:
    missing = [b for b in REQUIRED_BINARIES if not os.access(folder / b, os.X_OK)]
    if missing:
        raise ControlPlaneUnavailable(f"{origin}: missing executables {', '.join(missing)}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: own session, SIGKILL when the parent dies."""
    os.setsid()
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class _Process:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - fixed binaries, no shell
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PDEATHSIG
            env=env,
        )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT_S)
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class ControlPlane:
    """etcd + kube-apiserver with RBAC, TokenRequest, and an admin in system:masters."""

    assets: Path = field(default_factory=find_assets)
    root: Path | None = None
    keep_root: bool = False
    server: str = ""
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    etcd: _Process | None = None
    apiserver: _Process | None = None
    controller_manager: _Process | None = None
    startup_seconds: float = 0.0
    # Where kube-apiserver listens and what it advertises; a cluster with nodes
    # (tests/e2e/localcluster.py) gives the host's end of the link to its node.
    address: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    # A cluster with nodes: endpoints for the `kubernetes` Service, ServiceAccount tokens in
    # pods, webhooks reached at their Service's endpoints, and every default controller.
    with_nodes: bool = False
    # More flags for kube-controller-manager (a benchmark raises its client's QPS).
    controller_manager_flags: tuple[str, ...] = ()

    # --- paths -------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        assert self.root is not None
        return self.root / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        assert self.root is not None
        return self.root / "pki" / "apiserver.crt"

    @property
    def kubectl_path(self) -> str:
        built = self.assets / "kubectl"
        return str(built) if os.access(built, os.X_OK) else (shutil.which("kubectl") or "kubectl")

    @property
    def helm_path(self) -> str | None:
        built = self.assets / "helm"
        return str(built) if os.access(built, os.X_OK) else shutil.which("helm")

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        began = time.monotonic()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="datacache-controlplane-"))
        (self.root / "pki").mkdir(parents=True, exist_ok=True)
        try:
            self._start_etcd(began + timeout)
            self._start_apiserver(began + timeout)
            if self.has_controller_manager:
                self._start_controller_manager(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    @property
    def has_controller_manager(self) -> bool:
        return os.access(self.assets / CONTROLLER_MANAGER, os.X_OK)

    def stop(self) -> None:
        for process in (self.controller_manager, self.apiserver, self.etcd):
            if process is not None:
                process.stop()
        if self.root is not None and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart_apiserver(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop and start kube-apiserver alone; etcd (and so every object) is kept."""
        assert self.apiserver is not None
        self.apiserver.stop()
        self.apiserver.start(env=child_env())
        self._wait_ready(time.monotonic() + timeout)

    def pids(self) -> list[int]:
        processes = (self.etcd, self.apiserver, self.controller_manager)
        return [p.popen.pid for p in processes if p and p.popen and p.running()]

    def logs(self) -> str:
        processes = (self.etcd, self.apiserver, self.controller_manager)
        return "\n".join(f"--- {p.name} (last lines)\n{p.log_tail()}" for p in processes if p)

    # --- etcd ---------------------------------------------------------------------------
    def _start_etcd(self, deadline: float) -> None:
        assert self.root is not None
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        self.etcd_url = client_url
        self.etcd = _Process(
            "etcd",
            [
                str(self.assets / "etcd"),
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
            self.root / "etcd.log",
        )
        self.etcd.start(env=child_env())
        _wait_for(
            lambda: _http_ok(f"{client_url}/health"),
            deadline,
            "etcd /health",
            self.etcd,
        )

    # --- kube-apiserver -----------------------------------------------------------------
    def _start_apiserver(self, deadline: float) -> None:
        assert self.root is not None
        port = free_port()
        self.server = f"https://{self.address}:{port}"
        sa_key = self.root / "pki" / "sa.key"
        sa_key.write_bytes(_rsa_private_key_pem())
        tokens = self.root / "tokens.csv"
        tokens.write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        self.apiserver = _Process(
            "kube-apiserver",
            [
                str(self.assets / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.address}",
                f"--secure-port={port}",
                f"--cert-dir={self.root / 'pki'}",
                f"--advertise-address={self.address}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=true",
                *(self._node_flags() if self.with_nodes else self._nodeless_flags()),
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-account-key-file={sa_key}",
                "--profiling=false",
                "--v=0",
            ],
            self.root / "kube-apiserver.log",
        )
        self.apiserver.start(env=child_env())
        self._wait_ready(deadline)
        self._write_kubeconfig(self.kubeconfig, self.admin_token, user="admin")

    @staticmethod
    def _nodeless_flags() -> list[str]:
        return [
            # No default route offline: skip the endpoint reconciler (nothing in a pod needs it).
            "--endpoint-reconciler-type=none",
            # Pods need no service account token (and envtest's assets have no controller-manager
            # to make the `default` accounts).
            "--disable-admission-plugins=ServiceAccount",
        ]

    @staticmethod
    def _node_flags() -> list[str]:
        return [
            # Webhooks at their Service's endpoints: the apiserver runs outside the node's
            # network, where no kube-proxy translates Service addresses.
            "--enable-aggregator-routing=true",
            # Never the node's name, which would be looked up through the machine's resolver.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _wait_ready(self, deadline: float) -> None:
        assert self.apiserver is not None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the serving cert is written by the apiserver itself

        def ready() -> bool:
            return _http_ok(f"{self.server}/readyz", self.admin_token, context) and _http_ok(
                f"{self.server}/api/v1/namespaces/default", self.admin_token, context
            )

        _wait_for(ready, deadline, "kube-apiserver /readyz", self.apiserver)

    # --- kube-controller-manager ---------------------------------------------------------
    def _start_controller_manager(self, deadline: float) -> None:
        assert self.root is not None
        self.controller_manager = _Process(
            CONTROLLER_MANAGER,
            [
                str(self.assets / CONTROLLER_MANAGER),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                *(
                    # Every default controller (node lifecycle, endpoint slices, the root CA
                    # ConfigMap that ServiceAccount token volumes carry, ...).
                    ["--controllers=*", f"--root-ca-file={self.ca_file}"]
                    if self.with_nodes
                    else [f"--controllers={','.join(CONTROLLERS)}"]
                ),
                "--secure-port=0",  # nothing scrapes it
                "--v=0",
                *self.controller_manager_flags,
            ],
            self.root / "kube-controller-manager.log",
        )
        self.controller_manager.start(env=child_env())

        # Ready once its service account controller has made the `default` namespace's account.
        def ready() -> bool:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return _http_ok(
                f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", self.admin_token, context
            )

        _wait_for(ready, deadline, "kube-controller-manager's first service account", self.controller_manager)

    # --- clients ------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.kubectl_path, kubeconfig or self.kubeconfig, *args, input=input, check=check, timeout=timeout
        )

    def apply(self, manifest: str | dict[str, Any] | Sequence[dict[str, Any]], *extra: str) -> str:
        if isinstance(manifest, dict):
            manifest = yaml.safe_dump(manifest)
        elif not isinstance(manifest, str):
            manifest = yaml.safe_dump_all(list(manifest))
        return self.kubectl("apply", "-f", "-", *extra, input=manifest).stdout

    def install_crds(
        self, folder: Path, selector: str = "app.kubernetes.io/part-of=eci-datacache-operator"
    ) -> None:
        """Apply every CRD of `folder` (server-side) and wait until they are established."""
        for crd in sorted(folder.glob("*.yaml")):
            self.kubectl("apply", "--server-side", "-f", str(crd))
        self.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "-l", selector)

    def service_account_kubeconfig(self, namespace: str, name: str, duration: str = "2h") -> Path:
        """A kubeconfig holding only a TokenRequest token for that ServiceAccount."""
        assert self.root is not None
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        return self._write_kubeconfig(self.root / f"sa-{namespace}-{name}.kubeconfig", token, user=name)

    def env(self) -> dict[str, str]:
        """Environment for child processes (kopf, kubectl, helm) that talk to this cluster."""
        return {**child_env(), "KUBECONFIG": str(self.kubeconfig)}

    def describe(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "assets": str(self.assets),
            "pids": self.pids(),
        }


def run_kubectl(
    kubectl: str,
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """kubectl on one cluster; a failure raises KubectlError (with kubectl's words) when `check`."""
    result = subprocess.run(  # noqa: S603
        [kubectl, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
    )
    if check and result.returncode != 0:
        raise KubectlError(result)
    return result


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # 198.18.0.0/15: a cluster with nodes (tests/e2e) lives there, never behind a proxy.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,198.18.0.0/15"
    return env


def _http_ok(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=3) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_for(check: Callable[[], bool], deadline: float, what: str, process: _Process) -> None:
    while time.monotonic() < deadline:
        if not process.running():
            raise ControlPlaneUnavailable(
                f"{process.name} exited while waiting for {what}:\n{process.log_tail()}"
            )
        if check():
            return
        time.sleep(0.2)
    raise ControlPlaneUnavailable(f"timed out waiting for {what}:\n{process.log_tail()}")


def _rsa_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def main() -> int:
    """`python -m tests.support.controlplane`: start, print, wait for Ctrl-C."""
    # Python leaves SIGINT ignored when it starts ignored (a shell's background job): Ctrl-C,
    # or kill -INT, must stop it all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ControlPlane() as plane:
        try:
            # Printed inside the try: whoever reads the line may press Ctrl-C at once.
            print(json.dumps(plane.describe()), flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
