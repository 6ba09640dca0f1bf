"""What GitOps tools see of objects the real operator wrote: Argo CD's health (the shipped
Lua), kstatus' fields (Flux), and no drift against the Git manifest."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import lupa
import yaml
from tests.integration.support import REPO, Kube, OperatorProcess

HEALTH_LUA = (Path(REPO) / "deploy" / "argocd" / "health.lua").read_text()


def argocd_health(obj: dict[str, Any]) -> str:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return str(lua.execute(HEALTH_LUA)["status"])


def manifest(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "eci.datacache.dev/v1alpha1",
            "kind": "DataCache",
            "metadata": {"name": name},
            "spec": {
                "path": f"/models/{name}",
                "dataSource": {
                    "type": "URL",
                    "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"},
                },
                **spec,
            },
        }
    )


def server_side_apply(kube: Kube, text: str) -> None:
    kube.controlplane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=argocd-controller",
        "-n",
        kube.namespace,
        "-f",
        "-",
        input=text,
    )


def test_health_and_kstatus_fields_of_operator_written_objects(kube: Kube, operator: OperatorProcess):
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    server_side_apply(kube, manifest(name))
    ready = kube.wait_condition("datacache", name, "Ready", "True")
    # kstatus (Flux): top-level observedGeneration equal to generation, and a Ready condition.
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    assert argocd_health(ready) == "Healthy"

    broken = f"{name}-small"
    server_side_apply(kube, manifest(broken, size=5))  # rejected by ECI: a terminal error
    stalled = kube.wait_condition("datacache", broken, "Stalled", "True")
    assert stalled["status"]["observedGeneration"] == stalled["metadata"]["generation"]
    assert argocd_health(stalled) == "Degraded"


def test_reapplying_the_git_manifest_changes_nothing(kube: Kube, operator: OperatorProcess):
    """The operator writes status only: the manifest's fields stay as Git set them."""
    name = f"nodrift-{uuid.uuid4().hex[:6]}"
    text = manifest(name, retentionDays=7)
    server_side_apply(kube, text)
    kube.wait_condition("datacache", name, "Ready", "True")
    before = kube.get("datacache", name)
    assert before is not None
    server_side_apply(kube, text)
    after = json.loads(kube.kubectl("get", "datacache", name, "--show-managed-fields", "-o", "json").stdout)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"] == yaml.safe_load(text)["spec"] | {"size": 20}
    managers = {m["manager"]: m for m in after["metadata"]["managedFields"]}
    spec_owners = [m for m, entry in managers.items() if "f:spec" in str(entry.get("fieldsV1", {}))]
    assert spec_owners == ["argocd-controller"], spec_owners
