"""The local control plane is real: schemas prune, CEL rejects, RBAC denies, kopf reacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner
from tests.support.controlplane import ControlPlane

GROUP = "test.datacache.dev"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}, "path": {"type": "string"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.path.startsWith('/')",
                                        "message": "spec.path must start with /",
                                    }
                                ],
                            },
                            "status": {"type": "object", "properties": {"seen": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, **spec: object) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def wait_until(check, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def widget_crd(controlplane: ControlPlane) -> Iterator[str]:
    controlplane.apply(WIDGET_CRD)
    controlplane.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/widgets.{GROUP}")
    yield f"widgets.{GROUP}"


def test_structural_schema_prunes_unknown_fields(controlplane: ControlPlane, widget_crd: str, namespace: str):
    manifest = widget("pruned", size=3, path="/a", colour="red")
    # Client-side validation would refuse the unknown field before the server sees it.
    controlplane.apply(manifest, "-n", namespace, "--validate=ignore")
    stored = json.loads(
        controlplane.kubectl("get", widget_crd, "pruned", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"] == {"size": 3, "path": "/a"}


def test_cel_rule_rejects_with_its_message(controlplane: ControlPlane, widget_crd: str, namespace: str):
    result = controlplane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(widget("bad", path="relative")), check=False
    )
    assert result.returncode != 0
    assert "spec.path must start with /" in result.stderr


def test_token_request_identity_is_subject_to_rbac(controlplane: ControlPlane, namespace: str):
    controlplane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    reader = controlplane.service_account_kubeconfig(namespace, "reader")

    denied = controlplane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=reader, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    controlplane.kubectl("create", "role", "read-cm", "-n", namespace, "--verb=list", "--resource=configmaps")
    controlplane.kubectl(
        "create",
        "rolebinding",
        "read-cm",
        "-n",
        namespace,
        "--role=read-cm",
        f"--serviceaccount={namespace}:reader",
    )
    allowed = wait_until(
        lambda: (
            (
                r := controlplane.kubectl(
                    "get", "configmaps", "-n", namespace, kubeconfig=reader, check=False
                )
            ).returncode
            == 0
            and r
        ),
        what="the RoleBinding to take effect",
    )
    assert "forbidden" not in allowed.stderr.lower()


def test_kopf_operator_reacts_and_patches_status(controlplane: ControlPlane, widget_crd: str, namespace: str):
    registry = kopf.OperatorRegistry()

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def on_widget_create(spec, patch, **_):
        patch.status["seen"] = f"size={spec['size']}"

    @kopf.on.login(registry=registry)
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.posting.enabled = False
        settings.watching.server_timeout = 30

    args = ["run", "--standalone", "--namespace", namespace, "--verbose"]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        controlplane.apply(widget("reacted", size=7, path="/w"), "-n", namespace)
        status = wait_until(
            lambda: json.loads(
                controlplane.kubectl("get", widget_crd, "reacted", "-n", namespace, "-o", "json").stdout
            ).get("status"),
            what="kopf to patch the status subresource",
        )
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert status == {"seen": "size=7"}


def _start_in_child() -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.controlplane"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, child.stderr.read() if child.stderr else "no output"
    pids = json.loads(line)["pids"]
    assert len(pids) == 3 and all(_alive(p) for p in pids)  # etcd, kube-apiserver, kube-controller-manager
    return child, pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.controlplane
@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_no_process_survives_its_starter(controlplane: ControlPlane, how: str):
    """Ctrl-C stops etcd, the apiserver and the controller-manager cleanly; SIGKILL of the starter
    takes them along."""
    child, pids = _start_in_child()
    if how == "ctrl-c":
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 0
    else:
        child.kill()
        child.wait(timeout=10)
    wait_until(lambda: not any(_alive(p) for p in pids), timeout=30, what=f"{pids} to exit")


def test_controlplane_reports_a_real_version(controlplane: ControlPlane):
    version = json.loads(controlplane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] != "v0.0.0-master+$Format:%H$"
    assert os.environ["KUBECONFIG"] == str(controlplane.kubeconfig)
