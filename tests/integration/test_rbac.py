"""The chart's RBAC is proven, not assumed: the operator runs with only a TokenRequest token
of the chart's ServiceAccount, bound by the chart's rendered Role/ClusterRole, through a
DataCache and a DataCacheReplication lifecycle; no request may be refused."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.support import (
    Kube,
    OperatorProcess,
    opted_in_pod,
    wait_for,
    wait_until_the_webhook_answers,
    webhook_configuration_manifest,
)
from tests.integration.test_chart import render
from tests.integration.test_replication import destinations, ref, replication
from tests.support.controlplane import ControlPlane, free_port, run_kubectl

from datacache_operator import API_VERSION

# Not after a comma: log lines carry milliseconds (`11:14:19,403`), which are no HTTP status.
FORBIDDEN = re.compile(r"(?<!,)\b403\b|forbidden|not enough permissions", re.IGNORECASE)
# Only the apiserver's own refusals (kopf's and the kubernetes client's wording). A
# cluster-wide operator also meets the objects other tests left in their namespaces, whose
# cloud errors may say 403 or Forbidden without any Kubernetes permission being missing.
KUBE_DENIED = re.compile(
    r"is forbidden: User|cannot \w+ resource|APIForbiddenError|ForbiddenException|not enough permissions",
    re.IGNORECASE,
)
TIMEOUT = 120  # generous: the machine is shared with other test runs


def chart_rbac(
    controlplane: ControlPlane, namespace: str, namespaced: bool = True, *values: str
) -> tuple[str, list[dict[str, Any]]]:
    """The chart's ServiceAccount and RBAC for a release in `namespace`: namespaced mode
    (`watchNamespaces: [namespace]`) or the default ClusterRole mode, with more `values`
    (helm's arguments). A unique release name keeps the cluster-scoped ClusterRole of each test
    apart."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    mode = ("--set-json", f'watchNamespaces=["{namespace}"]') if namespaced else ()
    rendered = render(
        controlplane,
        namespace,
        *mode,
        *values,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        release=release,
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    return account, docs


def run_as(
    controlplane: ControlPlane,
    operator_env: dict[str, str],
    namespace: str,
    docs: list[dict[str, Any]],
    account: str,
    log: Path,
) -> OperatorProcess:
    controlplane.apply(docs)
    env = {**operator_env, "KUBECONFIG": str(controlplane.service_account_kubeconfig(namespace, account))}
    running = OperatorProcess(env, log)
    running.start()
    return running


def cache_with_secret(kube: Kube, name: str) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-keys"},
            "stringData": {"akId": "LTAI-oss-reader", "akSecret": "oss-reader-secret"},
        }
    )
    kube.apply(
        {
            "apiVersion": API_VERSION,
            "kind": "DataCache",
            "metadata": {"name": name},
            "spec": {
                "path": f"/models/{name}",
                "dataSource": {
                    "type": "OSS",
                    "options": {
                        "bucket": "models",
                        "url": "oss-cn-hangzhou-internal.aliyuncs.com",
                        "path": "/q",
                    },
                    "secretRef": {"name": f"{name}-keys"},
                },
            },
        }
    )


def datacache_lifecycle_start(kube: Kube, name: str) -> None:
    """Reads a Secret, adds the finalizer, patches status, posts events."""
    cache_with_secret(kube, name)
    kube.wait_condition("datacaches", name, "Ready", "True", timeout=TIMEOUT)
    wait_for(
        lambda: (
            kube.kubectl(
                "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "name"
            ).stdout
        ),
        timeout=TIMEOUT,
        what="an event posted by the operator",
    )


def replication_lifecycle(kube: Kube, eci: Any, source: str) -> None:
    """Copies `source` to two regions, drops one destination, deletes the replication:
    reads the source DataCache, patches the replication's finalizer and status, posts events."""
    name = f"{source}-rep"

    def spec(*regions: str) -> dict[str, Any]:
        return replication(name, ref(source), *({"region": r} for r in regions), deletionPolicy="Delete")

    kube.apply(spec("cn-beijing", "cn-shanghai"))
    obj = kube.wait_condition("datacachereplications", name, "Ready", "True", timeout=TIMEOUT)
    copies = {region: entry["dataCacheId"] for region, entry in destinations(obj).items()}
    assert set(copies) == {"cn-beijing", "cn-shanghai"}, obj["status"]
    for copy_id in copies.values():
        assert eci.cache(copy_id)["Status"] == "Available"  # type: ignore[index]
    assert kube.kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "name"
    ).stdout, "no event posted for the replication"

    kube.apply(spec("cn-beijing"))  # a removed destination deletes its copy
    wait_for(
        lambda: eci.cache(copies["cn-shanghai"]) is None, timeout=TIMEOUT, what="the cn-shanghai copy deleted"
    )

    def only_beijing() -> dict[str, Any] | None:
        found = kube.get("datacachereplications", name) or {}
        status = found.get("status") or {}
        ok = set(destinations(found)) == {"cn-beijing"} and status.get("readyDestinations") == "1/1"
        return found if ok else None

    wait_for(only_beijing, timeout=TIMEOUT, what="cn-beijing alone in the replication's status")
    assert eci.cache(copies["cn-beijing"]) is not None

    kube.kubectl("delete", "datacachereplications", name, "--wait=false")  # the finalizer goes by a patch
    wait_for(
        lambda: kube.get("datacachereplications", name) is None, timeout=TIMEOUT, what="the replication to go"
    )
    assert eci.cache(copies["cn-beijing"]) is None, "the replication's last copy outlived it"


def binding_lifecycle(kube: Kube, name: str) -> None:
    """A pod bound to a paused cache waits; unpaused, the operator ungates it: reads DataCaches,
    lists and patches pods, posts events on them."""
    kube.apply(
        {
            "apiVersion": API_VERSION,
            "kind": "DataCache",
            "metadata": {"name": name, "annotations": {"eci.datacache.dev/paused": "true"}},
            "spec": {
                "path": f"/models/{name}",
                "dataSource": {"type": "URL", "options": {"url": "https://x/y"}},
            },
        }
    )
    kube.apply(opted_in_pod(f"{name}-pod", f"{name}:/data"))
    pod = kube.get("pod", f"{name}-pod") or {}
    assert [g["name"] for g in pod["spec"].get("schedulingGates") or []] == ["eci.datacache.dev/cache-ready"]
    kube.kubectl("annotate", "datacaches", name, "eci.datacache.dev/paused-")
    wait_for(
        lambda: (
            not (
                (kube.get("pod", f"{name}-pod") or {"spec": {"schedulingGates": [1]}})["spec"].get(
                    "schedulingGates"
                )
            )
        ),
        timeout=TIMEOUT,
        what="the pod ungated",
    )
    kube.kubectl("delete", "pod", f"{name}-pod")


@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_operator_runs_full_lifecycles_with_only_the_chart_rbac(
    mode: str,
    controlplane: ControlPlane,
    kube: Kube,
    namespace: str,
    operator_env: dict[str, str],
    datacache_crds: list[str],
    eci: Any,
    tmp_path: Path,
):
    """`namespaced`: `watchNamespaces: [ns]` (a Role in ns, a ClusterRole for discovery only)
    with the operator watching ns. `cluster`: the chart's defaults (one ClusterRole) with the
    operator watching every namespace, as the chart's Deployment runs it."""
    namespaced = mode == "namespaced"
    account, docs = chart_rbac(controlplane, namespace, namespaced=namespaced)
    assert (
        any(
            d["kind"] == "Role" and not d["metadata"]["name"].endswith(("-webhook", "-leader-election"))
            for d in docs
        )
        == namespaced
    )
    env = operator_env if namespaced else {**operator_env, "DATACACHE_NAMESPACES": ""}
    # The webhook as the chart runs it: its Secret and configuration names, its CA put in.
    fullname = next(d for d in docs if d["kind"] == "ClusterRole")["metadata"]["name"]
    port = free_port()
    controlplane.apply(webhook_configuration_manifest(fullname, port, namespace))
    env = {
        **env,
        "DATACACHE_WEBHOOK_PORT": str(port),
        "DATACACHE_WEBHOOK_HOSTS": "127.0.0.1",
        "DATACACHE_WEBHOOK_CONFIGURATION": fullname,
        "DATACACHE_WEBHOOK_SECRET": f"{fullname}-webhook-tls",
        "DATACACHE_OPERATOR_NAMESPACE": namespace,
        # Leader election as the chart runs it: its Lease, by the chart's name.
        "DATACACHE_LEADER_ELECTION": "true",
        "DATACACHE_LEADER_ELECTION_LEASE_NAME": fullname,
        "POD_NAME": f"{fullname}-0",
    }
    running = run_as(controlplane, env, namespace, docs, account, tmp_path / "operator.log")
    try:
        name = f"rbac-{uuid.uuid4().hex[:6]}"
        wait_until_the_webhook_answers(kube)
        lease = json.loads(
            controlplane.kubectl("get", "lease", fullname, "-n", namespace, "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == f"{fullname}-0"
        datacache_lifecycle_start(kube, name)
        binding_lifecycle(kube, f"{name}-late")
        replication_lifecycle(kube, eci, name)
        cache_id = kube.get("datacaches", name)["status"]["dataCacheId"]  # type: ignore[index]
        kube.kubectl("delete", "datacaches", name, "--wait=false")  # the finalizer goes by a patch
        wait_for(lambda: kube.get("datacaches", name) is None, timeout=TIMEOUT, what="the DataCache to go")
        assert eci.cache(cache_id) is None
    finally:
        running.stop()
        controlplane.kubectl("delete", "mutatingwebhookconfiguration", fullname, "--ignore-not-found")
    log = running.log()
    found = (FORBIDDEN if namespaced else KUBE_DENIED).findall(log)
    assert not found, f"the operator hit missing permissions: {found}\n{log[-4000:]}"


@pytest.mark.parametrize("resource", ["datacaches/status", "datacachereplications/status"])
def test_a_missing_rule_shows_up(
    resource: str,
    controlplane: ControlPlane,
    kube: Kube,
    namespace: str,
    operator_env: dict[str, str],
    datacache_crds: list[str],
    eci: Any,
    tmp_path: Path,
):
    """Without the status rule of one kind its object never becomes Ready and the log says
    forbidden: the test above can fail, for either kind."""
    account, docs = chart_rbac(controlplane, namespace)
    role = next(
        d
        for d in docs
        if d["kind"] == "Role" and not d["metadata"]["name"].endswith(("-webhook", "-leader-election"))
    )
    (rule,) = [r for r in role["rules"] if resource in r["resources"]]
    rule["resources"].remove(resource)
    running = run_as(controlplane, operator_env, namespace, docs, account, tmp_path / "operator.log")
    try:
        name = f"norbac-{uuid.uuid4().hex[:6]}"
        cache_with_secret(kube, name)
        if resource.startswith("datacachereplications"):
            kube.wait_condition("datacaches", name, "Ready", "True", timeout=TIMEOUT)
            kube.apply(replication(f"{name}-rep", ref(name), {"region": "cn-beijing"}))
            name, kind = f"{name}-rep", "datacachereplications"
        else:
            kind = "datacaches"
        wait_for(
            lambda: FORBIDDEN.search(running.log()),
            timeout=TIMEOUT,
            what="a forbidden status patch in the log",
        )
        # The urllib3 line with the 403 comes first; the operator's own error line follows.
        wait_for(
            lambda: KUBE_DENIED.search(running.log()),
            timeout=TIMEOUT,
            what="the refusal in the form the cluster-mode check looks for",
        )
        assert f'cannot patch resource \\"{resource}\\"' in running.log()
        assert kube.condition(kind, name, "Ready") is None
    finally:
        running.stop()


# --- EciAccounts: administrators' kind, read by the operator, out of tenants' reach -------------


def eci_account(name: str, secret_namespace: str = "eci-accounts", secret: str = "keys") -> dict[str, Any]:
    """An EciAccount selecting no namespace that exists (never one a test uses)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "EciAccount",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"{name}-nowhere"}},
            "credentials": {"secretRef": {"namespace": secret_namespace, "name": secret}},
        },
    }


class As:
    """kubectl with nothing but a TokenRequest token of one ServiceAccount: real requests,
    authorized by the real apiserver as that account."""

    def __init__(self, controlplane: ControlPlane, namespace: str, account: str) -> None:
        self.controlplane = controlplane
        self.kubeconfig = controlplane.service_account_kubeconfig(namespace, account)

    def kubectl(self, *args: str, input: str | None = None) -> Any:
        return run_kubectl(
            self.controlplane.kubectl_path, self.kubeconfig, *args, input=input, check=False, timeout=60
        )

    def refused(self, *args: str, input: str | None = None) -> str:
        """The command's refusal: HTTP 403 (kubectl's `Error from server (Forbidden)`)."""
        result = self.kubectl(*args, input=input)
        assert result.returncode != 0, f"allowed: kubectl {' '.join(args)}\n{result.stdout}"
        assert "(Forbidden)" in result.stderr, result.stderr
        return str(result.stderr)

    def allowed(self, *args: str, input: str | None = None) -> str:
        result = self.kubectl(*args, input=input)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return str(result.stdout)


@pytest.fixture
def an_eci_account(controlplane: ControlPlane, datacache_crds: list[str]) -> Any:
    """An EciAccount made by the cluster's administrator, deleted after the test."""
    name = f"acct-{uuid.uuid4().hex[:8]}"
    controlplane.apply(eci_account(name))
    yield name
    controlplane.kubectl("delete", "eciaccount", name, "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize("role", ["admin", "edit"])
def test_tenants_cannot_create_change_or_delete_eciaccounts(
    role: str, controlplane: ControlPlane, namespace: str, an_eci_account: str
):
    """A team bound to Kubernetes' `admin` or `edit` in its namespace (with the chart's tenant
    roles aggregated into them) manages its DataCaches there, yet every write to an EciAccount,
    which would point its namespace at another team's cloud account, is refused with 403."""
    controlplane.kubectl(
        "apply",
        "-f",
        "-",
        input=render(controlplane, namespace, "--show-only", "templates/tenant-roles.yaml"),
    )
    controlplane.kubectl("create", "serviceaccount", "team", "-n", namespace)
    controlplane.kubectl(
        "create", "rolebinding", "team", f"--clusterrole={role}", f"--serviceaccount={namespace}:team",
        "-n", namespace,
    )  # fmt: skip
    tenant = As(controlplane, namespace, "team")
    wait_for(
        lambda: tenant.kubectl("-n", namespace, "auth", "can-i", "create", "datacaches.eci.datacache.dev")
        .stdout.strip() == "yes",
        what=f"the tenant roles aggregated into {role}",
    )  # fmt: skip
    tenant.allowed("-n", namespace, "get", "datacaches")  # the role works for the team's own kind

    mine = eci_account(f"{an_eci_account}-mine", secret_namespace=namespace)
    denied = tenant.refused("create", "-f", "-", input=json.dumps(mine))
    assert (
        'cannot create resource "eciaccounts" in API group "eci.datacache.dev" at the cluster scope' in denied
    )
    selector = {"spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}
    tenant.refused("patch", "eciaccount", an_eci_account, "--type=merge", "-p", json.dumps(selector))
    tenant.refused(
        "patch", "eciaccount", an_eci_account, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"namespaces": [namespace]}}),
    )  # fmt: skip
    tenant.refused("delete", "eciaccount", an_eci_account)
    tenant.refused("get", "eciaccounts")  # not even to read which accounts there are
    found = json.loads(controlplane.kubectl("get", "eciaccount", an_eci_account, "-o", "json").stdout)
    assert found["spec"] == eci_account(an_eci_account)["spec"] | {
        "credentials": {
            "secretRef": {
                "namespace": "eci-accounts",
                "name": "keys",
                "accessKeyIdKey": "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "accessKeySecretKey": "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            }
        }
    }
    assert "status" not in found
    assert (
        controlplane.kubectl("get", "eciaccount", f"{an_eci_account}-mine", "--ignore-not-found").stdout == ""
    )


@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_the_operator_watches_namespaces_and_eciaccounts_and_writes_only_their_status(
    mode: str, controlplane: ControlPlane, namespace: str, an_eci_account: str
):
    """As the chart's ServiceAccount: Namespaces and EciAccounts listed and watched
    cluster-wide (also with watchNamespaces), an EciAccount's status patched; its spec never
    changed, none created or deleted."""
    account, docs = chart_rbac(controlplane, namespace, mode == "namespaced")
    controlplane.apply(docs)
    operator = As(controlplane, namespace, account)
    assert namespace in operator.allowed("get", "namespaces", "-o", "name")
    assert an_eci_account in operator.allowed("get", "eciaccounts", "-o", "name")
    assert an_eci_account in operator.allowed("get", "eciaccount", an_eci_account, "-o", "name")
    for verb, resource in [("watch", "namespaces"), ("watch", "eciaccounts.eci.datacache.dev")]:
        assert operator.kubectl("auth", "can-i", verb, resource).stdout.strip() == "yes", (verb, resource)
    # A real list and watch (kubectl lists, then watches until the request times out).
    watched = operator.kubectl("get", "eciaccounts", "--watch", "-o", "name", "--request-timeout=3s")
    assert an_eci_account in watched.stdout and "Forbidden" not in watched.stderr, watched.stderr

    status = {"status": {"namespaces": ["served-here"]}}
    operator.allowed(
        "patch",
        "eciaccount",
        an_eci_account,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    found = json.loads(controlplane.kubectl("get", "eciaccount", an_eci_account, "-o", "json").stdout)
    assert found["status"] == status["status"]

    operator.refused("patch", "eciaccount", an_eci_account, "--type=merge", "-p", '{"spec":{"rateLimit":1}}')
    operator.refused("create", "-f", "-", input=json.dumps(eci_account(f"{an_eci_account}-new")))
    operator.refused("delete", "eciaccount", an_eci_account)


def test_the_operator_reads_exactly_the_account_secrets_the_chart_names(
    controlplane: ControlPlane, namespace: str, datacache_crds: list[str]
):
    """watchNamespaces mode with `accounts` and `accountSecrets`: in the namespace holding the
    key pairs the chart's ServiceAccount may get exactly the Secrets named, not another there,
    and may not list them."""
    secrets_namespace = f"{namespace}-accounts"
    controlplane.kubectl("create", "namespace", secrets_namespace)
    for name in ("team-a-keys", "extra-keys", "unrelated"):
        controlplane.kubectl(
            "-n", secrets_namespace, "create", "secret", "generic", name,
            "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_ID=id", "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_SECRET=s",
        )  # fmt: skip
    accounts = [eci_account(f"acct-{uuid.uuid4().hex[:8]}", secrets_namespace, "team-a-keys")]
    values = [{"name": a["metadata"]["name"], **a["spec"]} for a in accounts]
    account, docs = chart_rbac(
        controlplane, namespace, True,
        "--set-json", f"accounts={json.dumps(values)}",
        "--set-json", f'accountSecrets=[{{"namespace":"{secrets_namespace}","name":"extra-keys"}}]',
    )  # fmt: skip
    controlplane.apply(docs)
    operator = As(controlplane, namespace, account)
    for name in ("team-a-keys", "extra-keys"):
        assert (
            operator.allowed("-n", secrets_namespace, "get", "secret", name, "-o", "name")
            == f"secret/{name}\n"
        )
    denied = operator.refused("-n", secrets_namespace, "get", "secret", "unrelated")
    assert f'cannot get resource "secrets" in API group "" in the namespace "{secrets_namespace}"' in denied
    operator.refused("-n", secrets_namespace, "get", "secrets")  # no list
    # Its own watched namespace still gives it dataSource.secretRef's Secrets, as before.
    controlplane.kubectl("-n", namespace, "create", "secret", "generic", "oss-keys", "--from-literal=k=v")
    operator.allowed("-n", namespace, "get", "secret", "oss-keys")
