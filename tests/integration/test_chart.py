"""The Helm chart: lint, schema, and every documented rendering accepted by the real apiserver."""

from __future__ import annotations

import filecmp
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from tests.integration.support import REPO, wait_for
from tests.monitoring.queries import DASHBOARD, RULES
from tests.support.controlplane import ControlPlane

CHART = REPO / "charts" / "eci-datacache-operator"


def open_crd(plural: str, kind: str) -> dict:
    """A CRD of monitoring.coreos.com/v1 taking any spec: the apiserver checks the rest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


MONITORING_CRDS = [
    open_crd("servicemonitors", "ServiceMonitor"),
    open_crd("prometheusrules", "PrometheusRule"),
]


def helm(controlplane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not controlplane.helm_path:
        pytest.skip("no helm binary")
    return subprocess.run(
        [controlplane.helm_path, *args],
        capture_output=True,
        text=True,
        env=controlplane.env(),
        check=check,
        timeout=60,
    )


def render(controlplane: ControlPlane, namespace: str, *args: str, release: str = "edc") -> str:
    return helm(controlplane, "template", release, str(CHART), "--namespace", namespace, *args).stdout


def documents(rendered: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered) if d]


# What the operator needs cluster-wide in either mode: the namespaces EciAccounts select, and
# the EciAccounts themselves (read, and their status written).
ACCOUNT_RULES = {
    json.dumps(rule, sort_keys=True)
    for rule in (
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["eci.datacache.dev"], "resources": ["eciaccounts"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["eci.datacache.dev"], "resources": ["eciaccounts/status"], "verbs": ["get", "patch"]},
    )
}
CLUSTER_RESOURCES_WITH_WATCH_NAMESPACES = {
    "customresourcedefinitions",
    "namespaces",
    "eciaccounts",
    "eciaccounts/status",
    "mutatingwebhookconfigurations",
}


def dry_run(controlplane: ControlPlane, rendered: str) -> str:
    result = controlplane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def monitoring_crds(controlplane: ControlPlane) -> None:
    for crd in MONITORING_CRDS:
        controlplane.apply(crd, "--server-side")
        controlplane.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
        )


def test_helm_lint_is_clean(controlplane: ControlPlane):
    result = helm(controlplane, "lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in result.stdout, result.stdout + result.stderr


def test_chart_crds_are_identical_to_deploy_crds():
    deploy = sorted(p.name for p in (REPO / "deploy" / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart == deploy, "run `make chart-sync`"
    _, mismatch, errors = filecmp.cmpfiles(REPO / "deploy" / "crds", CHART / "crds", deploy, shallow=False)
    assert not mismatch and not errors, f"stale chart CRDs {mismatch + errors}: run `make chart-sync`"


def test_default_rendering_is_accepted_by_the_apiserver(controlplane: ControlPlane, namespace: str):
    rendered = render(controlplane, namespace, "--include-crds")
    docs = documents(rendered)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == len(list((CHART / "crds").glob("*.yaml")))
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= set(kinds)
    assert "ServiceMonitor" not in kinds
    # The Roles in the release namespace: the webhook's certificate Secret and the Lease.
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    assert {(name, r["metadata"]["namespace"]) for name, r in roles.items()} == {
        ("edc-eci-datacache-operator-webhook", namespace),
        ("edc-eci-datacache-operator-leader-election", namespace),
    }
    assert roles["edc-eci-datacache-operator-webhook"]["rules"][0]["resourceNames"] == [
        "edc-eci-datacache-operator-webhook-tls"
    ]
    assert roles["edc-eci-datacache-operator-leader-election"]["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["edc-eci-datacache-operator"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert "Certificate" not in kinds and "Issuer" not in kinds
    dry_run(controlplane, rendered)

    webhook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["objectSelector"] == {"matchLabels": {"eci.datacache.dev/inject": "true"}}
    assert webhook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}
    ]
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert (webhook["sideEffects"], webhook["failurePolicy"]) == ("None", "Fail")
    assert webhook["timeoutSeconds"] <= 10 and "caBundle" not in webhook["clientConfig"]
    assert webhook["clientConfig"]["service"]["name"] == "edc-eci-datacache-operator-webhook"
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "resourceNames": ["edc-eci-datacache-operator"],
        "verbs": ["get", "patch"],
    } in cluster_role["rules"]
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]} in cluster_role["rules"]
    assert ACCOUNT_RULES <= {json.dumps(rule, sort_keys=True) for rule in cluster_role["rules"]}
    assert "EciAccount" not in kinds  # `accounts` is empty by default

    deployment = next(d for d in docs if d["kind"] == "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATACACHE_WEBHOOK_PORT"] == "9443" and env["DATACACHE_WEBHOOK_CERTIFICATE"] == "operator"
    assert env["DATACACHE_WEBHOOK_CONFIGURATION"] == "edc-eci-datacache-operator"
    assert env["DATACACHE_WEBHOOK_HOSTS"].startswith(f"edc-eci-datacache-operator-webhook.{namespace}.svc,")
    assert env["DATACACHE_DEFAULT_REGION"] == "cn-hangzhou"
    assert env["DATACACHE_NAMESPACES"] == ""
    assert env["DATACACHE_DEFAULT_DELETION_POLICY"] == "Delete"
    assert env["DATACACHE_HEALTH_PORT"] == "8081" and env["DATACACHE_METRICS_PORT"] == "8080"
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" not in env and "ALIBABA_CLOUD_ROLE_ARN" not in env
    assert "DATACACHE_STS_ENDPOINT" not in env  # the credentials library's default
    # Every env var the chart sets is one the operator reads.
    from datacache_operator.settings import OperatorSettings

    known = {
        f.validation_alias.choices[0]  # type: ignore[union-attr]
        for f in OperatorSettings.model_fields.values()
        if f.validation_alias is not None
    }
    assert {k for k in env if k.startswith(("DATACACHE_", "ECI_"))} <= known


def test_tenancy_policies_and_network_policy_rendering(controlplane: ControlPlane, namespace: str):
    docs = documents(render(controlplane, namespace))
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert (
        policies
        == bindings
        == {
            "datacaches.buckets.eci.datacache.dev",
            "datacachereplications.buckets.eci.datacache.dev",
            "pods.buckets.eci.datacache.dev",
        }
    )
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert {"name": "DATACACHE_TENANCY", "value": "true"} in container["env"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "eci-datacache-operator",
        "app.kubernetes.io/instance": "edc",
    }
    ingress = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert ingress == {
        "webhook": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        "metrics": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "health": None,  # the kubelet's probes; the port says nothing
    }
    # Every port the pod serves is named by the policy (anything else is refused).
    assert {p["name"] for p in container["ports"]} == set(ingress)

    apiserver = [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    docs = documents(
        render(
            controlplane,
            namespace,
            "--set",
            "tenancy.enabled=false",
            "--set-json",
            f"networkPolicy.webhookFrom={json.dumps(apiserver)}",
            "--set-json",
            "networkPolicy.metricsFrom=[]",
        )
    )
    assert not [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert {"name": "DATACACHE_TENANCY", "value": "false"} in container["env"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert [(r["ports"][0]["port"], r.get("from")) for r in policy["spec"]["ingress"]] == [
        ("webhook", apiserver),
        ("health", None),
    ]
    assert "NetworkPolicy" not in {
        d["kind"] for d in documents(render(controlplane, namespace, "--set", "networkPolicy.enabled=false"))
    }


def test_watch_namespaces_renders_roles_per_namespace(controlplane: ControlPlane, namespace: str):
    other = f"{namespace}-b"
    controlplane.kubectl("create", "namespace", other)
    rendered = render(controlplane, namespace, "--set-json", f'watchNamespaces=["{namespace}","{other}"]')
    docs = documents(rendered)
    roles = [
        d
        for d in docs
        if d["kind"] == "Role" and not d["metadata"]["name"].endswith(("-webhook", "-leader-election"))
    ]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted([namespace, other])
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]} in roles[0]["rules"]
    assert len([d for d in docs if d["kind"] == "RoleBinding"]) == 4  # and the webhook's, the Lease's
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == CLUSTER_RESOURCES_WITH_WATCH_NAMESPACES
    assert ACCOUNT_RULES <= {json.dumps(rule, sort_keys=True) for rule in cluster_role["rules"]}
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATACACHE_NAMESPACES"] == f"{namespace},{other}"
    dry_run(controlplane, rendered)


def test_rrsa_rendering(controlplane: ControlPlane, namespace: str):
    rendered = render(
        controlplane,
        namespace,
        "--set",
        "credentials.rrsa.enabled=true",
        "--set",
        "credentials.rrsa.roleName=datacache-operator",
        "--set",
        "credentials.rrsa.roleArn=acs:ram::123:role/datacache-operator",
        "--set",
        "credentials.rrsa.oidcProviderArn=acs:ram::123:oidc-provider/ack-rrsa-c1",
        "--set",
        "credentials.rrsa.projectToken=true",
    )
    docs = documents(rendered)
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "pod-identity.alibabacloud.com/role-name": "datacache-operator"
    }
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ALIBABA_CLOUD_ROLE_ARN"] == "acs:ram::123:role/datacache-operator"
    assert env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"] == "acs:ram::123:oidc-provider/ack-rrsa-c1"
    assert env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"] == "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token"
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" not in env
    assert any(v["name"] == "rrsa-token" for v in pod["volumes"])
    dry_run(controlplane, rendered)


def test_existing_secret_rendering(controlplane: ControlPlane, namespace: str):
    rendered = render(controlplane, namespace, "--set", "credentials.existingSecret=eci-keys")
    container = next(d for d in documents(rendered) if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ALIBABA_CLOUD_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "eci-keys",
        "key": "ALIBABA_CLOUD_ACCESS_KEY_ID",
    }
    assert env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "eci-keys"
    dry_run(controlplane, rendered)


def test_scheduling_and_extras_rendering(controlplane: ControlPlane, namespace: str):
    rendered = render(
        controlplane,
        namespace,
        "--set",
        "nodeSelector.pool=system",
        "--set-json",
        'tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]',
        "--set-json",
        'affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":'
        '[{"matchExpressions":[{"key":"pool","operator":"In","values":["system"]}]}]}}}',
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "podAnnotations.team=ml",
        "--set-json",
        'extraEnv=[{"name":"DATACACHE_RATE_BURST","value":"20"}]',
        "--set-json",
        'image.pullSecrets=["registry"]',
        "--set",
        "image.tag=v9",
        "--set",
        "logging.json=true",
        "--set",
        "metrics.service.enabled=false",
    )
    docs = documents(rendered)
    services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    assert services == ["edc-eci-datacache-operator-webhook"]  # no metrics Service
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"team": "ml"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "system"}
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["tolerations"][0]["key"] == "dedicated" and "nodeAffinity" in spec["affinity"]
    container = spec["containers"][0]
    assert container["image"].endswith(":v9")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATACACHE_RATE_BURST"] == "20" and env["DATACACHE_LOG_JSON"] == "true"
    dry_run(controlplane, rendered)


def test_cert_manager_rendering(controlplane: ControlPlane, namespace: str):
    rendered = render(controlplane, namespace, "--set", "webhook.certManager.enabled=true")
    docs = documents(rendered)
    by_kind = {d["kind"]: d for d in docs}
    certificate = by_kind["Certificate"]["spec"]
    assert certificate["secretName"] == "edc-eci-datacache-operator-webhook-tls"
    assert f"edc-eci-datacache-operator-webhook.{namespace}.svc" in certificate["dnsNames"]
    assert certificate["issuerRef"] == {"name": "edc-eci-datacache-operator-selfsigned", "kind": "Issuer"}
    annotations = by_kind["MutatingWebhookConfiguration"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{namespace}/edc-eci-datacache-operator-webhook"
    # cert-manager writes the Secret and the CA: the operator may only read its Secret.
    webhook_role = next(
        d for d in documents(rendered) if d["kind"] == "Role" and d["metadata"]["name"].endswith("-webhook")
    )
    assert [r["verbs"] for r in webhook_role["rules"]] == [["get"]]
    assert "mutatingwebhookconfigurations" not in str(by_kind["ClusterRole"]["rules"])
    env = {
        e["name"]: e.get("value")
        for e in by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DATACACHE_WEBHOOK_CERTIFICATE"] == "cert-manager"
    with_issuer = render(
        controlplane, namespace, "--set", "webhook.certManager.enabled=true",
        "--set-json", 'webhook.certManager.issuerRef={"name":"corp-ca","kind":"ClusterIssuer"}',
    )  # fmt: skip
    kinds = [d["kind"] for d in documents(with_issuer)]
    assert "Issuer" not in kinds
    certificate = next(d for d in documents(with_issuer) if d["kind"] == "Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_service_monitor_rendering(controlplane: ControlPlane, namespace: str, monitoring_crds: None):
    rendered = render(
        controlplane,
        namespace,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    )
    monitor = next(d for d in documents(rendered) if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    dry_run(controlplane, rendered)


def test_dashboard_and_alert_rules_rendering(
    controlplane: ControlPlane, namespace: str, monitoring_crds: None, promtool: str, tmp_path: Path
):
    kinds = {d["kind"] for d in documents(render(controlplane, namespace))}
    assert not kinds & {"ConfigMap", "PrometheusRule"}  # both off by default
    rendered = render(
        controlplane, namespace,
        "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "metrics.grafanaDashboard.annotations.grafana_folder=ECI",
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.prometheusRule.labels.release=prom",
    )  # fmt: skip
    by_kind = {d["kind"]: d for d in documents(rendered)}
    dashboard = by_kind["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ECI"}
    assert json.loads(dashboard["data"]["eci-datacache-operator.json"]) == json.loads(DASHBOARD.read_text())
    rule = by_kind["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    dry_run(controlplane, rendered)
    elsewhere = render(
        controlplane, namespace, "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "metrics.grafanaDashboard.namespace=grafana",
    )  # fmt: skip
    configmap = next(d for d in documents(elsewhere) if d["kind"] == "ConfigMap")
    assert configmap["metadata"]["namespace"] == "grafana"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "replicaCount=0"), "at '/replicaCount': minimum: got 0, want 1"),
        (
            ("--set", "leaderElection.enabled=false"),
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            ("--set", "defaultDeletionPolicy=Keep"),
            "at '/defaultDeletionPolicy': value must be one of 'Delete', 'Retain'",
        ),
        (("--set", "logging.level=LOUD"), "at '/logging/level'"),
        (("--set", "rateLimit=0"), "at '/rateLimit'"),
        (("--set", "unknownKey=1"), "additional properties 'unknownKey' not allowed"),
    ],
)
def test_schema_rejects_wrong_values_readably(
    controlplane: ControlPlane, args: tuple[str, ...], message: str
):
    result = helm(controlplane, "template", "edc", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_accounts_render_eciaccounts_the_apiserver_accepts_and_a_role_for_their_secrets(
    controlplane: ControlPlane, namespace: str, datacache_crds: list[str]
):
    """`accounts` become EciAccounts (both kinds of credentials), and the Secrets they name plus
    `accountSecrets` a Role per namespace granting `get` on exactly those names."""
    secrets_namespace = f"{namespace}-accounts"
    controlplane.kubectl("create", "namespace", secrets_namespace)
    role_arn = "acs:ram::1000000000000003:role/eci-datacache"
    accounts = [
        {
            "name": f"{namespace}-a",
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"{namespace}-a"}},
            "credentials": {
                "secretRef": {"namespace": secrets_namespace, "name": "team-a-keys", "accessKeyIdKey": "id"}
            },
            "rateLimit": 5,
        },
        {
            "name": f"{namespace}-b",
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [f"{namespace}-b"]}
                ]
            },
            "credentials": {"ramRoleArn": role_arn, "sessionDuration": "2h"},
        },
    ]
    extra = [{"namespace": secrets_namespace, "name": "extra-keys"}]
    rendered = render(
        controlplane, namespace,
        "--set-json", f"accounts={json.dumps(accounts)}",
        "--set-json", f"accountSecrets={json.dumps(extra)}",
        "--set-json", f'watchNamespaces=["{namespace}"]',
        "--set", "sts.endpoint=sts-vpc.cn-hangzhou.aliyuncs.com",
    )  # fmt: skip
    docs = documents(rendered)
    found = {d["metadata"]["name"]: d for d in docs if d["kind"] == "EciAccount"}
    assert set(found) == {f"{namespace}-a", f"{namespace}-b"}
    for account in accounts:
        obj = found[account["name"]]
        assert obj["apiVersion"] == "eci.datacache.dev/v1alpha1" and "namespace" not in obj["metadata"]
        assert obj["spec"] == {k: v for k, v in account.items() if k != "name"}
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-accounts")]
    assert [(r["metadata"]["namespace"], r["rules"]) for r in roles] == [
        (
            secrets_namespace,
            [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": ["extra-keys", "team-a-keys"],
                    "verbs": ["get"],
                }
            ],
        )
    ]
    binding = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-accounts")
    )
    assert binding["metadata"]["namespace"] == secrets_namespace
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "edc-eci-datacache-operator", "namespace": namespace}
    ]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert {"name": "DATACACHE_STS_ENDPOINT", "value": "sts-vpc.cn-hangzhou.aliyuncs.com"} in container["env"]
    applied = dry_run(controlplane, rendered)
    for account in accounts:
        assert f"eciaccount.eci.datacache.dev/{account['name']} created (server dry run)" in applied, applied
    assert "role.rbac.authorization.k8s.io/edc-eci-datacache-operator-accounts created" in applied


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"accounts": [{"name": "x", "namespaceSelector": {}, "credentials": {}}]},
            "accounts: x: set one of credentials.secretRef (an AccessKey pair) and credentials.ramRoleArn",
        ),
        (
            {
                "accounts": [
                    {
                        "name": "x",
                        "namespaceSelector": {},
                        "credentials": {
                            "ramRoleArn": "acs:ram::1:role/r",
                            "secretRef": {"namespace": "a", "name": "b"},
                        },
                    }
                ]
            },
            "accounts: x: set credentials.secretRef or credentials.ramRoleArn, not both",
        ),
        (
            {
                "accounts": [
                    {
                        "name": "x",
                        "namespaceSelector": {},
                        "credentials": {
                            "sessionDuration": "1h",
                            "secretRef": {"namespace": "a", "name": "b"},
                        },
                    }
                ]
            },
            "accounts: x: credentials.sessionDuration applies to ramRoleArn only",
        ),
        (
            {
                "accounts": [
                    {
                        "name": "x",
                        "namespaceSelector": {},
                        "credentials": {"ramRoleArn": "arn:aws:iam::1:role/r"},
                    }
                ]
            },
            "at '/accounts/0/credentials/ramRoleArn'",
        ),
        (
            {"accounts": [{"name": "x", "credentials": {"ramRoleArn": "acs:ram::1:role/r"}}]},
            "at '/accounts/0': missing property 'namespaceSelector'",
        ),
        ({"accountSecrets": [{"name": "keys"}]}, "at '/accountSecrets/0': missing property 'namespace'"),
    ],
)
def test_wrong_accounts_values_are_refused_readably(controlplane: ControlPlane, values: dict, message: str):
    key, value = next(iter(values.items()))
    result = helm(
        controlplane, "template", "edc", str(CHART), "--set-json", f"{key}={json.dumps(value)}", check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_both_credential_kinds_at_once_is_refused(controlplane: ControlPlane):
    result = helm(
        controlplane,
        "template",
        "edc",
        str(CHART),
        "--set",
        "credentials.existingSecret=k",
        "--set",
        "credentials.rrsa.enabled=true",
        check=False,
    )
    assert result.returncode != 0
    assert "set either existingSecret or rrsa.enabled, not both" in result.stderr


OPERATOR_YAML_HEADER = """\
# Generated by `make chart-sync` from charts/eci-datacache-operator with default values.
# Do not edit: change the chart (tests/integration/test_chart.py fails when this is stale).
apiVersion: v1
kind: Namespace
metadata:
  name: eci-datacache-system
"""


def test_deploy_operator_yaml_is_the_chart_with_default_values(controlplane: ControlPlane):
    expected = OPERATOR_YAML_HEADER + render(
        controlplane, "eci-datacache-system", release="eci-datacache-operator"
    )
    actual = (REPO / "deploy" / "operator.yaml").read_text()
    assert actual == expected, "deploy/operator.yaml is stale: run `make chart-sync`"


def test_kustomization_lists_every_crd_and_applies(controlplane: ControlPlane):
    kustomization = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())
    crds = {f"crds/{p.name}" for p in (REPO / "deploy" / "crds").glob("*.yaml")}
    assert set(kustomization["resources"]) == crds | {"operator.yaml"}
    # The namespace must exist for a server-side dry run of the namespaced objects.
    controlplane.kubectl("create", "namespace", "eci-datacache-system", check=False)
    result = controlplane.kubectl(
        "apply", "-k", str(REPO / "deploy"), "--dry-run=server", "--server-side", check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/eci-datacache-operator serverside-applied (server dry run)" in result.stdout


def test_helm_install_upgrade_uninstall_in_the_real_apiserver(controlplane: ControlPlane, namespace: str):
    """`helm install` as the README says (minus the CRDs, which the session shares), then
    `helm upgrade` to namespaced mode, then `helm uninstall`: every object comes and goes.
    No kubelet runs here, so the pod never starts; the objects are what is checked."""
    release = f"it-{uuid.uuid4().hex[:6]}"  # the ClusterRole's name is unique per release
    fullname = f"{release}-eci-datacache-operator"
    crds_before = controlplane.kubectl("get", "crd", "-o", "name").stdout
    controlplane.kubectl(
        "-n", namespace, "create", "secret", "generic", "eci-keys",
        "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_ID=id", "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_SECRET=s",
    )  # fmt: skip
    common = (str(CHART), "-n", namespace, "--skip-crds", "--set", "credentials.existingSecret=eci-keys")
    try:
        installed = helm(controlplane, "install", release, *common, "--set", "region=cn-beijing")
        assert "STATUS: deployed" in installed.stdout, installed.stdout + installed.stderr

        def names(kinds: str, *scope: str) -> set[str]:
            found = controlplane.kubectl(
                "get", kinds, *scope, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
            )
            return set(found.stdout.split())

        namespaced = (
            f"deployment.apps/{fullname},serviceaccount/{fullname},service/{fullname}-metrics,"
            f"service/{fullname}-webhook"
        )
        assert names("deployment,serviceaccount,service", "-n", namespace) == set(namespaced.split(","))
        assert names("clusterrole,clusterrolebinding") == {
            f"clusterrole.rbac.authorization.k8s.io/{fullname}",
            f"clusterrole.rbac.authorization.k8s.io/{fullname}-tenant-edit",
            f"clusterrole.rbac.authorization.k8s.io/{fullname}-tenant-view",
            f"clusterrolebinding.rbac.authorization.k8s.io/{fullname}",
        }
        deployment = json.loads(
            controlplane.kubectl("-n", namespace, "get", "deployment", fullname, "-o", "json").stdout
        )
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DATACACHE_DEFAULT_REGION"]["value"] == "cn-beijing"
        assert env["ALIBABA_CLOUD_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "eci-keys"

        upgraded = helm(
            controlplane,
            "upgrade",
            release,
            *common,
            "--reuse-values",
            "--set-json",
            f'watchNamespaces=["{namespace}"]',
        )
        assert "STATUS: deployed" in upgraded.stdout and "REVISION: 2" in upgraded.stdout, upgraded.stdout
        assert names("role,rolebinding", "-n", namespace) == {
            f"role.rbac.authorization.k8s.io/{fullname}",
            f"rolebinding.rbac.authorization.k8s.io/{fullname}",
            f"role.rbac.authorization.k8s.io/{fullname}-webhook",
            f"rolebinding.rbac.authorization.k8s.io/{fullname}-webhook",
            f"role.rbac.authorization.k8s.io/{fullname}-leader-election",
            f"rolebinding.rbac.authorization.k8s.io/{fullname}-leader-election",
        }
        cluster_role = json.loads(controlplane.kubectl("get", "clusterrole", fullname, "-o", "json").stdout)
        assert {
            r for rule in cluster_role["rules"] for r in rule["resources"]
        } == CLUSTER_RESOURCES_WITH_WATCH_NAMESPACES
        webhook = json.loads(
            controlplane.kubectl("get", "mutatingwebhookconfiguration", fullname, "-o", "json").stdout
        )["webhooks"][0]
        assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == [namespace]
    except BaseException:
        # Never leave the chart's cluster-wide webhook (failurePolicy Fail) to later tests.
        helm(controlplane, "uninstall", release, "-n", namespace, check=False)
        raise
    helm(controlplane, "uninstall", release, "-n", namespace)
    assert not names("deployment,serviceaccount,service,role,rolebinding", "-n", namespace)
    assert not names("clusterrole,clusterrolebinding,mutatingwebhookconfiguration")
    assert controlplane.kubectl("get", "crd", "-o", "name").stdout == crds_before  # shared: untouched


def test_tenant_roles_aggregate_into_edit_and_view_without_status(
    controlplane: ControlPlane, namespace: str, datacache_crds: list[str]
):
    """A team bound to Kubernetes' own `edit` in its namespace manages DataCaches there but
    cannot write their status; `view` reads them; the real apiserver aggregates the roles."""
    rendered = render(controlplane, namespace, "--show-only", "templates/tenant-roles.yaml")
    controlplane.kubectl("apply", "-f", "-", input=rendered)
    for role in ("edit", "view"):
        controlplane.kubectl("create", "serviceaccount", f"team-{role}", "-n", namespace)
        controlplane.kubectl(
            "create", "rolebinding", f"team-{role}", f"--clusterrole={role}",
            f"--serviceaccount={namespace}:team-{role}", "-n", namespace,
        )  # fmt: skip

    def can(role: str, verb: str, resource: str) -> bool:
        resource, _, subresource = resource.partition("/")
        found = controlplane.kubectl(
            "auth", "can-i", verb, resource, *([f"--subresource={subresource}"] if subresource else []), "-n", namespace,
            f"--as=system:serviceaccount:{namespace}:team-{role}", check=False,
        )  # fmt: skip
        return found.stdout.strip() == "yes"

    def aggregated() -> bool:
        return can("edit", "create", "datacaches.eci.datacache.dev") and can(
            "view", "list", "datacachereplications.eci.datacache.dev"
        )

    wait_for(aggregated, what="the tenant roles aggregated into edit and view")
    assert can("edit", "delete", "datacachereplications.eci.datacache.dev")
    assert not can("edit", "patch", "datacaches.eci.datacache.dev/status")
    assert not can("edit", "update", "datacachereplications.eci.datacache.dev/status")
    assert not can("view", "create", "datacaches.eci.datacache.dev")
