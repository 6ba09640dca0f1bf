"""Model versions through the real apiserver, the operator process and the emulator (its ECI
and its Hugging Face hub): a failed new revision leaves the current one serving, a branch that
moves upstream builds a new revision from its new commit, and an idle cache scales to zero and
back when a pod names it. (A revision bump under a Deployment on the virtual node is in
tests/e2e/test_helm_install.py.)"""

from __future__ import annotations

from typing import Any

from tests.integration.support import Kube, OperatorProcess, opted_in_pod, wait_for
from tests.integration.test_datacache_lifecycle import datacache, unique

REPO = "Qwen/Qwen2-0.5B"  # the repository datacache() names
RECONCILE = "eci.datacache.dev/reconcile-requested-at"


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return (kube.get("datacache", name) or {}).get("status") or {}


def revisions(kube: Kube, name: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in status_of(kube, name).get("revisions") or []}


def condition(kube: Kube, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status_of(kube, name).get("conditions") or [] if c["type"] == type_), {})


def test_a_failed_revision_leaves_the_current_one_serving(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("rev-fail")
    kube.apply(datacache(name))
    first = kube.wait_condition("datacache", name, "Ready", "True")["status"]
    eci.add_rule("fail", "disk full while loading", path=f"/models/{name}.r2")
    kube.apply(datacache(name, size=40))  # a new size reloads the data: a new revision

    def failed() -> dict[str, Any] | None:
        found = condition(kube, name, "RevisionFailed")
        return found if found.get("status") == "True" else None

    revision_failed = wait_for(failed, what="RevisionFailed=True")
    assert "disk full while loading" in revision_failed["message"]
    assert "r1 keeps serving" in revision_failed["message"]
    status = status_of(kube, name)
    assert (status["currentRevision"], status["dataCacheId"]) == ("r1", first["dataCacheId"])
    assert condition(kube, name, "Ready")["status"] == "True"
    assert revisions(kube, name)["r2"]["status"] == "Failed"


def test_a_branch_that_moves_upstream_is_built_again_from_its_new_commit(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    name = unique("rev-branch")
    commit = eci.set_hub_commit("huggingface", REPO, "release", "a" * 40)
    kube.apply(datacache(name, dataSource=source("release"), revisionHistoryLimit=0))
    first = kube.wait_condition("datacache", name, "Ready", "True")["status"]
    assert first["sourceCommit"] == commit and condition(kube, name, "SourcePinned")["reason"] == "Pinned"
    built = eci.cache(first["dataCacheId"])
    assert built["DataSource"]["Options"]["revision"] == commit  # ECI loads the commit, not the branch

    moved = eci.set_hub_commit("huggingface", REPO, "release", "b" * 40)  # a push upstream
    kube.kubectl("annotate", "datacache", name, f"{RECONCILE}=moved", "--overwrite")  # or refresh.interval

    def current_on_new_commit() -> dict[str, Any] | None:
        status = status_of(kube, name)
        return (
            status if status.get("currentRevision") == "r2" and status.get("sourceCommit") == moved else None
        )

    status = wait_for(current_on_new_commit, timeout=90, what="r2 built from the moved branch")
    assert eci.cache(status["dataCacheId"])["DataSource"]["Options"]["revision"] == moved
    assert f"revision={moved} (from release)" in revisions(kube, name)["r2"]["source"]
    wait_for(lambda: list(revisions(kube, name)) == ["r2"], what="r1 deleted: no pod used it")


def test_an_idle_cache_scales_to_zero_and_back_when_a_pod_names_it(
    kube: Kube, binding_operator: OperatorProcess, eci: Any
):
    name = unique("idle")
    kube.apply(datacache(name, expireAfterUnused="1m"))
    first = kube.wait_condition("datacache", name, "Ready", "True")["status"]
    # No pod uses it: a minute later its cloud cache is deleted.
    kube.wait_condition("datacache", name, "Ready", "False", reason="Idle", timeout=150)
    assert status_of(kube, name).get("dataCacheId") is None
    wait_for(
        lambda: (eci.cache(first["dataCacheId"]) or {"Status": "gone"})["Status"] in ("Deleting", "gone"),
        what="the idle cache deleted in the cloud",
    )

    kube.apply(opted_in_pod("wakes-it", f"{name}:/models/qwen:ro"))  # admitted at the gate
    pod = kube.get("pod", "wakes-it")
    assert pod is not None and pod["spec"].get("schedulingGates"), "the pod was not gated"
    again = kube.wait_condition("datacache", name, "Ready", "True", timeout=90)["status"]
    assert again["dataCacheId"] != first["dataCacheId"] and again["path"] == first["path"]
    wait_for(
        lambda: not (kube.get("pod", "wakes-it") or {}).get("spec", {}).get("schedulingGates"),
        what="the pod released once the cache is Available again",
    )


def source(revision: str) -> dict[str, Any]:
    return {
        "type": "URL",
        "options": {"repoSource": "HuggingFace/Model", "repoId": REPO, "revision": revision},
    }
