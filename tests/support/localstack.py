"""`make run`: the whole local stack in the foreground — a real control plane (with
kube-controller-manager, so Deployments make pods, and kube-scheduler), the ECI emulator, a
virtual ECI node backed by it (tests/support/virtualnode.py: bound pods run as container groups
with their cache) and the operator serving the pod webhook to that apiserver — until Ctrl-C
stops them all.

Two cloud accounts besides the operator's own, one EciAccount each (README: "Cloud accounts per
namespace"): `team-a`, an AccessKey pair of account 1000000000000002 in a Secret of the operator's
namespace, selecting the namespace `team-a`; `team-b`, a RAM role of account 1000000000000003
that trusts the operator's own account (1000000000000001), assumed through the emulator's STS
(HTTPS, its CA trusted with SSL_CERT_FILE), selecting `team-b`. Every other namespace uses the
operator's own key pair.

Leaves `.local/kubeconfig` (admin) and `.local/emulator.env` (`ECI_ENDPOINT`, the key pair,
`ECI_PROTOCOL`) for `kubectl` and the SDK in another terminal, and the emulator's CA in
`.local/emulator-tls/`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eci_datacache_emulator import DEFAULT_ACCOUNT_ID, AccountConfig, Emulator, EmulatorConfig, RoleConfig
from tests.support.controlplane import ControlPlane, _Process, free_port
from tests.support.virtualnode import VirtualNode
from tests.support.webhook import webhook_configuration

ACCESS_KEY_ID = "LTAI-local-emulator"
ACCESS_KEY_SECRET = "local-emulator-secret"  # noqa: S105 - the emulator's own dev key pair
OPERATOR_NAMESPACE = "eci-datacache-system"
WEBHOOK = "eci-datacache-operator"
WEBHOOK_READY_TIMEOUT_S = 60.0
ECI_ACCOUNTS_API = "eci.datacache.dev/v1alpha1"


@dataclass(frozen=True)
class LocalAccount:
    """A cloud account of the emulator, the namespace whose caches it holds and its EciAccount
    (same name as the namespace): an AccessKey pair in a Secret, or a role to assume."""

    name: str
    account_id: str
    key_id: str | None = None
    key_secret: str | None = field(default=None, repr=False)
    role: str | None = None

    @property
    def secret(self) -> str:
        return f"{self.name}-eci-keys"

    @property
    def role_arn(self) -> str:
        return f"acs:ram::{self.account_id}:role/{self.role}"

    def emulator_account(self) -> AccountConfig:
        keys = {self.key_id: self.key_secret} if self.key_id and self.key_secret else {}
        # The role trusts the operator's own account: its own identity assumes it.
        roles = [RoleConfig(self.role, trusted_accounts=(DEFAULT_ACCOUNT_ID,))] if self.role else []
        return AccountConfig(self.account_id, keys, roles=roles)

    def manifests(self) -> list[dict[str, Any]]:
        """The namespace, the Secret (for a key pair) and the EciAccount selecting the namespace
        by `kubernetes.io/metadata.name`, which the apiserver sets and no tenant can change."""
        found: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.name}}
        ]
        if self.role:
            credentials: dict[str, Any] = {"ramRoleArn": self.role_arn}
        else:
            found.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": self.secret, "namespace": OPERATOR_NAMESPACE},
                    "stringData": {
                        "ALIBABA_CLOUD_ACCESS_KEY_ID": self.key_id,
                        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": self.key_secret,
                    },
                }
            )
            credentials = {"secretRef": {"namespace": OPERATOR_NAMESPACE, "name": self.secret}}
        found.append(
            {
                "apiVersion": ECI_ACCOUNTS_API,
                "kind": "EciAccount",
                "metadata": {"name": self.name},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.name}},
                    "credentials": credentials,
                },
            }
        )
        return found

    def describe(self, sts_endpoint: str) -> str:
        if self.role:
            how = f"role {self.role_arn}, assumed at STS https://{sts_endpoint}"
        else:
            how = f"key pair in Secret {OPERATOR_NAMESPACE}/{self.secret}"
        return f"EciAccount {self.name}: account {self.account_id}, {how}; namespace {self.name}"


ACCOUNTS = (
    LocalAccount(
        "team-a",
        "1000000000000002",
        key_id="LTAI-local-team-a",
        key_secret="local-team-a-secret",  # noqa: S106 - the emulator's dev key pair of account A
    ),
    LocalAccount("team-b", "1000000000000003", role="eci-datacache"),
)


def wait_for_the_webhook(plane: ControlPlane, operator: subprocess.Popen[bytes]) -> None:
    """Until the operator has put its CA into the webhook configuration (and so serves)."""
    deadline = time.monotonic() + WEBHOOK_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited with {operator.returncode}")
        found = plane.kubectl(
            "get",
            "mutatingwebhookconfiguration",
            WEBHOOK,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        )
        if found.stdout.strip():
            return
        time.sleep(0.3)
    raise SystemExit("the operator did not set up its webhook in time")


def start_ecis_node(
    plane: ControlPlane, root: Path, endpoint: str, region: str
) -> tuple[_Process | None, VirtualNode | None]:
    """kube-scheduler and the virtual ECI node, when the control plane's binaries include the
    scheduler (`make run` builds it; envtest's assets have none)."""
    binary = plane.assets / "kube-scheduler"
    if not binary.exists():
        return None, None
    scheduler = _Process(
        "kube-scheduler",
        [str(binary), f"--kubeconfig={plane.kubeconfig}", "--leader-elect=false", "--secure-port=0", "--v=0"],
        root / "kube-scheduler.log",
    )
    scheduler.start(env=plane.env())
    node = VirtualNode(str(plane.kubeconfig), endpoint, region, ACCESS_KEY_ID, ACCESS_KEY_SECRET).start()
    return scheduler, node


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--local-dir", default=".local", help="where kubeconfig and emulator.env go")
    parser.add_argument("--region", default="cn-hangzhou", help="default region of the operator")
    parser.add_argument(
        "--cluster-region",
        default="cn-hongkong",
        help="region the local cluster's pods run in (where examples/datacache-huggingface.yaml is built)",
    )
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both stop everything cleanly (even when started with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    local = Path(args.local_dir).resolve()
    root = local / "controlplane"
    shutil.rmtree(root, ignore_errors=True)
    local.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[2]

    print("starting etcd and kube-apiserver...", flush=True)
    with ControlPlane(root=root) as plane:
        shutil.copyfile(plane.kubeconfig, local / "kubeconfig")
        (local / "kubeconfig").chmod(0o600)
        plane.install_crds(repo / "deploy" / "crds")
        # What the chart installs by default: each namespace to its own buckets (tenancy).
        plane.kubectl(
            "apply",
            "-f",
            str(repo / "charts" / "eci-datacache-operator" / "files" / "admission-policies.yaml"),
        )
        plane.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        webhook_port = free_port()
        plane.apply(
            webhook_configuration(
                WEBHOOK,
                webhook_port,
                {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", OPERATOR_NAMESPACE],
                        }
                    ]
                },
            )
        )
        plane.apply([manifest for account in ACCOUNTS for manifest in account.manifests()])
        config = EmulatorConfig(
            access_key_id=ACCESS_KEY_ID,
            access_key_secret=ACCESS_KEY_SECRET,
            accounts=[account.emulator_account() for account in ACCOUNTS],
            tls_dir=local / "emulator-tls",  # its CA is kept and reused by the next run
        )
        with Emulator(config).in_thread() as emulator:
            emulator_env = {
                "ECI_ENDPOINT": emulator.endpoint,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
                "ECI_PROTOCOL": "http",
            }
            write_env_file(local / "emulator.env", emulator_env)
            operator_env = {
                **plane.env(),
                **emulator_env,
                "DATACACHE_DEFAULT_REGION": args.region,
                # No instance metadata here: as the chart does, or the credentials library's
                # chain (the identity that assumes team-b's role) polls it every minute.
                "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
                "DATACACHE_HUGGINGFACE_ENDPOINT": emulator.hub_endpoint("huggingface"),
                "DATACACHE_MODELSCOPE_ENDPOINT": emulator.hub_endpoint("modelscope"),
                "DATACACHE_POLL_INTERVAL_LOADING": "1",
                "DATACACHE_POLL_INTERVAL_STABLE": "30",
                "DATACACHE_HEALTH_PORT": str(free_port()),
                "DATACACHE_METRICS_PORT": str(free_port()),
                "DATACACHE_CLUSTER_REGION": args.cluster_region,
                "DATACACHE_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
                "DATACACHE_WEBHOOK_PORT": str(webhook_port),
                "DATACACHE_WEBHOOK_HOSTS": "127.0.0.1",
                "DATACACHE_WEBHOOK_CONFIGURATION": WEBHOOK,
                # EciAccount team-b's role is assumed at the emulator's STS, over HTTPS.
                "DATACACHE_STS_ENDPOINT": emulator.sts_endpoint,
                "SSL_CERT_FILE": str(emulator.ca_file),
            }
            scheduler, node = start_ecis_node(plane, root, emulator.endpoint, args.cluster_region)
            operator = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "datacache_operator", "run"], env=operator_env, start_new_session=True
            )
            kubeconfig = os.path.relpath(local / "kubeconfig")
            accounts = "\n".join(f"                  {a.describe(emulator.sts_endpoint)}" for a in ACCOUNTS)
            try:
                wait_for_the_webhook(plane, operator)
            except BaseException:
                os.killpg(operator.pid, signal.SIGKILL)
                raise
            print(
                f"""
Local stack is up.
  kube-apiserver  {plane.server}   (KUBECONFIG={kubeconfig})
  ECI emulator    http://{emulator.endpoint}   (admin: {emulator.admin_url}/state)
  operator        pid {operator.pid}, region {args.region}, pods in {args.cluster_region}
  pod webhook     https://127.0.0.1:{webhook_port} (MutatingWebhookConfiguration {WEBHOOK})
  virtual node    {node.name if node else "none (no kube-scheduler among the control plane's binaries)"}: pods bound to a cache run on ECI (the emulator)
  cloud accounts  the operator's own: account {DEFAULT_ACCOUNT_ID} (its key pair; every namespace no EciAccount selects, and the virtual node's pods)
{accounts}

Try, in another terminal:
  export KUBECONFIG={kubeconfig}
  kubectl apply -f examples/datacache-huggingface.yaml
  kubectl apply -f examples/deployment-using-cache.yaml
  kubectl get edc,pods -o wide -w   # gated until the cache is Ready, then Running on the virtual node
  kubectl get eciaccounts -o wide   # namespaces team-a and team-b build their caches in their own accounts

Ctrl-C stops everything.
""",
                flush=True,
            )
            try:
                while operator.poll() is None:
                    time.sleep(0.5)
                print(f"the operator exited with {operator.returncode}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\nstopping...", flush=True)
                return 0
            finally:
                if operator.poll() is None:
                    os.killpg(operator.pid, signal.SIGTERM)
                    try:
                        operator.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(operator.pid, signal.SIGKILL)
                if node is not None:
                    node.stop()
                if scheduler is not None:
                    scheduler.stop()


if __name__ == "__main__":
    raise SystemExit(main())
