"""The EciAccount CRD generated from its model on a real kube-apiserver: cluster-scoped, one
source of credentials, the CEL rules naming the field at `kubectl apply`."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import yaml
from tests.support.controlplane import ControlPlane

from datacache_operator.api.account import ECI_ACCOUNT
from datacache_operator.api.crds import render
from datacache_operator.api.schema import build_crd

pytestmark = pytest.mark.controlplane

ROLE = "acs:ram::1000000000000002:role/team-b-caches"


@pytest.fixture(scope="module")
def account_crd(controlplane: ControlPlane) -> str:
    controlplane.kubectl("apply", "--server-side", "-f", "-", input=render(build_crd(ECI_ACCOUNT)))
    controlplane.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s", f"crd/{ECI_ACCOUNT.crd_name}"
    )
    return ECI_ACCOUNT.crd_name


def account(**credentials: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{ECI_ACCOUNT.group}/{ECI_ACCOUNT.version}",
        "kind": ECI_ACCOUNT.kind,
        "metadata": {"name": f"team-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"team": "b"}},
            "credentials": credentials or {"secretRef": {"namespace": "eci-accounts", "name": "team-b"}},
        },
    }


def apply(controlplane: ControlPlane, obj: dict[str, Any], check: bool = True) -> Any:
    return controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), check=check)


def assert_rejected(controlplane: ControlPlane, obj: dict[str, Any], *expected: str) -> None:
    result = apply(controlplane, obj, check=False)
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.usefixtures("account_crd")
def test_an_account_is_cluster_scoped_with_the_secrets_key_names_defaulted(
    controlplane: ControlPlane,
) -> None:
    obj = account()
    apply(controlplane, obj)
    try:
        found = json.loads(
            controlplane.kubectl("get", "eciaccount", obj["metadata"]["name"], "-o", "json").stdout
        )
    finally:  # cluster-scoped: an operator of any later test would act on it
        controlplane.kubectl("delete", "eciaccount", obj["metadata"]["name"])
    assert "namespace" not in found["metadata"]
    assert found["spec"]["credentials"]["secretRef"] == {
        "namespace": "eci-accounts",
        "name": "team-b",
        "accessKeyIdKey": "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "accessKeySecretKey": "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    }
    role = account(ramRoleArn=ROLE, sessionDuration="2h")
    role["spec"]["namespaceSelector"] = {}  # every namespace
    role["spec"]["rateLimit"] = 5
    stored = controlplane.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(role)
    )  # not kept: it would select every later test's namespace
    assert json.loads(stored.stdout)["spec"]["credentials"]["sessionDuration"] == "2h"


@pytest.mark.usefixtures("account_crd")
def test_malformed_accounts_are_refused_naming_the_field(controlplane: ControlPlane) -> None:
    neither = account()
    neither["spec"]["credentials"] = {}
    assert_rejected(controlplane, neither, "spec.credentials", "set one of secretRef")
    assert_rejected(
        controlplane,
        account(secretRef={"namespace": "eci-accounts", "name": "x"}, ramRoleArn=ROLE),
        "spec.credentials",
        "not both",
    )
    assert_rejected(
        controlplane,
        account(secretRef={"namespace": "eci-accounts", "name": "x"}, sessionDuration="1h"),
        "spec.credentials.sessionDuration",
        "applies to ramRoleArn only",
    )
    assert_rejected(controlplane, account(ramRoleArn=ROLE, sessionDuration="5m"), "from 15m to 12h")
    assert_rejected(controlplane, account(ramRoleArn="arn:aws:iam::1:role/x"), "spec.credentials.ramRoleArn")
    assert_rejected(
        controlplane, account(secretRef={"namespace": "Not_A_Namespace", "name": "x"}), "secretRef.namespace"
    )
    no_values = account()
    no_values["spec"]["namespaceSelector"] = {"matchExpressions": [{"key": "team", "operator": "In"}]}
    assert_rejected(controlplane, no_values, "matchExpressions[0].values", "only for them")
    no_selector = account()
    del no_selector["spec"]["namespaceSelector"]
    assert_rejected(controlplane, no_selector, "spec.namespaceSelector", "Required value")
    too_fast = copy.deepcopy(account())
    too_fast["spec"]["rateLimit"] = 0
    assert_rejected(controlplane, too_fast, "spec.rateLimit")
