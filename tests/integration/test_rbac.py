"""The chart's RBAC is proven, not assumed: the operator runs with only a TokenRequest token
of the chart's ServiceAccount, bound by the chart's rendered Role/ClusterRole."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import yaml
from tests.integration.support import Kube, OperatorProcess, wait_for
from tests.integration.test_chart import render

from datacache_operator import API_VERSION
from datacache_operator.testing.controlplane import ControlPlane

# Not after a comma: log lines carry milliseconds (`11:14:19,403`), which are no HTTP status.
FORBIDDEN = re.compile(r"(?<!,)\b403\b|forbidden|not enough permissions", re.IGNORECASE)


def chart_rbac(controlplane: ControlPlane, namespace: str) -> tuple[str, list[dict[str, Any]]]:
    """The chart's ServiceAccount and RBAC in namespaced mode for `namespace` (a unique
    release name keeps the cluster-scoped ClusterRole of each test apart)."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    rendered = render(
        controlplane,
        namespace,
        "--set-json",
        f'watchNamespaces=["{namespace}"]',
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


def test_operator_runs_a_full_lifecycle_with_only_the_chart_rbac(
    controlplane: ControlPlane,
    kube: Kube,
    namespace: str,
    operator_env: dict[str, str],
    datacache_crds: list[str],
    eci: Any,
    tmp_path: Path,
):
    account, docs = chart_rbac(controlplane, namespace)
    running = run_as(controlplane, operator_env, namespace, docs, account, tmp_path / "operator.log")
    try:
        name = f"rbac-{uuid.uuid4().hex[:6]}"
        cache_with_secret(kube, name)  # reads a Secret, patches status, posts events
        kube.wait_condition("datacaches", name, "Ready", "True")
        wait_for(
            lambda: (
                name in kube.kubectl("get", "events", "-o", "name").stdout
                or kube.kubectl(
                    "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "name"
                ).stdout
            ),
            what="an event posted by the operator",
        )
        kube.kubectl("delete", "datacaches", name, "--wait=false")  # the finalizer is removed by a patch
        wait_for(lambda: kube.get("datacaches", name) is None, what="the object to go")
    finally:
        running.stop()
    log = running.log()
    found = FORBIDDEN.findall(log)
    assert not found, f"the operator hit missing permissions: {found}\n{log[-4000:]}"


def test_a_missing_rule_shows_up(
    controlplane: ControlPlane,
    kube: Kube,
    namespace: str,
    operator_env: dict[str, str],
    datacache_crds: list[str],
    eci: Any,
    tmp_path: Path,
):
    """Without the status rule the object never becomes Ready and the log says forbidden:
    the test above can fail."""
    account, docs = chart_rbac(controlplane, namespace)
    role = next(d for d in docs if d["kind"] == "Role")
    before = len(role["rules"])
    role["rules"] = [r for r in role["rules"] if "datacaches/status" not in r["resources"]]
    assert len(role["rules"]) == before - 1
    running = run_as(controlplane, operator_env, namespace, docs, account, tmp_path / "operator.log")
    try:
        name = f"norbac-{uuid.uuid4().hex[:6]}"
        cache_with_secret(kube, name)
        wait_for(
            lambda: FORBIDDEN.search(running.log()), timeout=60, what="a forbidden status patch in the log"
        )
        assert kube.condition("datacaches", name, "Ready") is None
    finally:
        running.stop()
