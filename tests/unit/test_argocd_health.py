"""The Argo CD health check (deploy/argocd/health.lua), run with a real Lua interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (REPO / "deploy" / "argocd" / "health.lua").read_text()


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script as Argo CD does: `obj` is a global, the chunk returns `hs`."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def datacache(generation: int = 2, observed: int | None = 2, *conditions: dict[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "eci.datacache.dev/v1alpha1",
        "kind": "DataCache",
        "metadata": {"name": "qwen", "namespace": "ml", "generation": generation},
        "status": status,
    }


def test_ready_and_current_is_healthy():
    obj = datacache(
        2,
        2,
        condition("Ready", "True", "Available", "the data cache is available"),
        condition("Synced", "True", "ReconcileSuccess"),
        condition("Stalled", "False", "ReconcileSuccess"),
    )
    assert health(obj) == {"status": "Healthy", "message": "Available: the data cache is available"}


def test_ready_but_a_newer_generation_is_progressing():
    obj = datacache(3, 2, condition("Ready", "True", "Available"), condition("Stalled", "False", "Ok"))
    result = health(obj)
    assert result["status"] == "Progressing" and "generation 3" in result["message"]


def test_no_status_or_no_observed_generation_is_progressing():
    bare = {"metadata": {"name": "x", "generation": 1}}
    assert health(bare)["status"] == "Progressing"
    assert health(datacache(1, None, condition("Ready", "True", "Available")))["status"] == "Progressing"


def test_stalled_is_degraded_even_before_observation():
    obj = datacache(
        2,
        1,
        condition("Ready", "False", "InvalidParameter", "Size must be at least 20"),
        condition("Stalled", "True", "InvalidParameter", "Size must be at least 20"),
    )
    assert health(obj) == {"status": "Degraded", "message": "InvalidParameter: Size must be at least 20"}


@pytest.mark.parametrize("reason", ["NotFound", "InvalidParameter", "Failed"])
def test_ready_false_with_a_terminal_reason_is_degraded(reason: str):
    obj = datacache(1, 1, condition("Ready", "False", reason, "no"), condition("Stalled", "False", "x"))
    assert health(obj)["status"] == "Degraded"


@pytest.mark.parametrize("reason", ["Loading", "Creating", "SecretNotFound", "Throttling"])
def test_ready_false_with_a_transient_reason_is_progressing(reason: str):
    obj = datacache(1, 1, condition("Ready", "False", reason, "wait"), condition("Stalled", "False", "x"))
    assert health(obj) == {"status": "Progressing", "message": f"{reason}: wait"}


def test_replication_kind_uses_the_same_rules():
    obj = datacache(1, 1, condition("Ready", "True", "Replicated"))
    obj["kind"] = "DataCacheReplication"
    assert health(obj)["status"] == "Healthy"


def test_readme_snippet_carries_the_same_script_for_both_kinds():
    readme = (REPO / "deploy" / "argocd" / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    patch = yaml.safe_load(block)
    assert set(patch) == {"data"}, "a merge patch of argocd-cm's data only"
    prefix = "resource.customizations.health."
    assert set(patch["data"]) == {
        f"{prefix}eci.datacache.dev_DataCache",
        f"{prefix}eci.datacache.dev_DataCacheReplication",
    }
    for script in patch["data"].values():
        assert script.strip() == SCRIPT.strip()
