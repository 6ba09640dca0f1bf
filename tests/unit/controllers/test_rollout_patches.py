"""`roll`: only opted-in workloads that use the cache are patched, once; a workload changed
under it is read again and patched on the fresh copy; one that keeps changing is reported
after the others are rolled; the apiserver's refusals reach the caller."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from datacache_operator.api.rollouts import ROLLOUT_ANNOTATION, revision_annotation
from datacache_operator.controllers.rollouts import RolloutIncomplete, roll


def workload(kind: str, name: str, caches: str | None, opt_in: bool = True) -> dict[str, Any]:
    template: dict[str, Any] = {"labels": {"app": name}}
    if caches is not None:
        template["labels"]["eci.datacache.dev/inject"] = "true"
        template["annotations"] = {"eci.datacache.dev/caches": caches}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": "1",
            "annotations": {ROLLOUT_ANNOTATION: "true"} if opt_in else {},
        },
        "spec": {"template": {"metadata": template, "spec": {}}},
    }


class Apiserver:
    """Workloads by (kind, name), JSON patches applied as the apiserver applies them (a failed
    `test` is False, as kube.patch_workload returns); `before_patch` changes an object first."""

    def __init__(self, *workloads: dict[str, Any]) -> None:
        self.objects = {(w["kind"], w["metadata"]["name"]): w for w in workloads}
        self.patches: list[tuple[str, str]] = []
        self.reads = 0
        self.before_patch: dict[tuple[str, str], Any] = {}
        self.refuse: Exception | None = None

    async def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        assert namespace == "ml"
        return [copy.deepcopy(w) for w in self.objects.values()]

    async def read_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    async def patch_workload(self, kind: str, namespace: str, name: str, operations: list[dict]) -> bool:
        if self.refuse:
            raise self.refuse
        self.patches.append((kind, name))
        change = self.before_patch.get((kind, name))
        if change:
            change(self.objects[(kind, name)])
        try:
            self.objects[(kind, name)] = jsonpatch.apply_patch(self.objects[(kind, name)], operations)
        except jsonpatch.JsonPatchTestFailed:
            return False
        return True

    def calls(self) -> dict[str, Any]:
        return {
            "list_workloads": self.list_workloads,
            "read_workload": self.read_workload,
            "patch_workload": self.patch_workload,
        }

    def revision(self, kind: str, name: str) -> str | None:
        annotations = self.objects[(kind, name)]["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(revision_annotation("qwen"))


async def test_only_opted_in_workloads_using_the_cache_are_rolled_and_only_once():
    api = Apiserver(
        workload("Deployment", "infer", "qwen:/models/qwen:ro"),
        workload("StatefulSet", "shards", "sdxl:/s,qwen:/q"),
        workload("Deployment", "not-opted-in", "qwen:/q", opt_in=False),
        workload("Deployment", "other-cache", "sdxl:/s"),
        workload("Deployment", "no-caches", None),
        workload("Deployment", "malformed", "qwen"),
        {**workload("DaemonSet", "agents", "qwen:/q")},  # not a kind that is rolled
    )
    assert await roll("ml", "qwen", "r2", **api.calls()) == ["Deployment/infer", "StatefulSet/shards"]
    assert api.revision("Deployment", "infer") == api.revision("StatefulSet", "shards") == "r2"
    for name in ("not-opted-in", "other-cache", "no-caches", "malformed"):
        assert api.revision("Deployment", name) is None
    assert api.patches == [("Deployment", "infer"), ("StatefulSet", "shards")]

    assert await roll("ml", "qwen", "r2", **api.calls()) == []  # already there: no patch at all
    assert len(api.patches) == 2
    assert await roll("ml", "qwen", "r3", **api.calls()) == ["Deployment/infer", "StatefulSet/shards"]
    assert api.revision("Deployment", "infer") == "r3"


async def test_a_workload_changed_meanwhile_is_read_again_and_patched_on_what_it_is_now():
    api = Apiserver(workload("Deployment", "infer", "qwen:/q"))

    def someone_annotates(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["metadata"]["annotations"]["team"] = "ml"
        api.before_patch.clear()

    api.before_patch[("Deployment", "infer")] = someone_annotates
    assert await roll("ml", "qwen", "r2", **api.calls()) == ["Deployment/infer"]
    assert api.reads == 1 and len(api.patches) == 2
    annotations = api.objects[("Deployment", "infer")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["team"] == "ml" and annotations[revision_annotation("qwen")] == "r2"


async def test_a_workload_that_stopped_using_the_cache_meanwhile_is_left_alone():
    api = Apiserver(workload("Deployment", "infer", "qwen:/q"))

    def moves_to_another_cache(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["metadata"]["annotations"]["eci.datacache.dev/caches"] = "sdxl:/s"

    api.before_patch[("Deployment", "infer")] = moves_to_another_cache
    assert await roll("ml", "qwen", "r2", **api.calls()) == []
    assert api.revision("Deployment", "infer") is None


async def test_a_workload_that_keeps_changing_is_reported_after_the_others_are_rolled():
    api = Apiserver(workload("Deployment", "busy", "qwen:/q"), workload("Deployment", "calm", "qwen:/q"))
    counter = iter(range(100))

    def keeps_changing(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["metadata"]["annotations"]["n"] = str(next(counter))

    api.before_patch[("Deployment", "busy")] = keeps_changing
    with pytest.raises(RolloutIncomplete) as raised:
        await roll("ml", "qwen", "r2", attempts=3, **api.calls())
    assert raised.value.rolled == ["Deployment/calm"] and raised.value.changing == ["Deployment/busy"]
    assert "Deployment/busy changed on every one of 3 attempts" in str(raised.value)
    assert api.patches.count(("Deployment", "busy")) == 3
    assert api.revision("Deployment", "calm") == "r2" and api.revision("Deployment", "busy") is None


async def test_a_workload_deleted_meanwhile_is_skipped():
    api = Apiserver(workload("Deployment", "gone", "qwen:/q"))
    listed = await api.list_workloads("ml")
    del api.objects[("Deployment", "gone")]

    async def stale_list(namespace: str) -> list[dict[str, Any]]:
        return listed

    async def patch_of_nothing(kind: str, namespace: str, name: str, operations: list[dict]) -> bool:
        return False  # 404, as kube.patch_workload answers it

    calls = {**api.calls(), "list_workloads": stale_list, "patch_workload": patch_of_nothing}
    assert await roll("ml", "qwen", "r2", **calls) == []
    assert api.reads == 1


async def test_a_refusal_reaches_the_caller():
    """Without the chart's rollouts.enabled the apiserver answers 403: roll says so, it does
    not pretend nothing needed rolling."""
    api = Apiserver(workload("Deployment", "infer", "qwen:/q"))
    api.refuse = PermissionError("403 forbidden")
    with pytest.raises(PermissionError):
        await roll("ml", "qwen", "r2", **api.calls())
