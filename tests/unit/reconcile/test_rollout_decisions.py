"""Which workloads are rolled onto a cache's new revision, and the patch that rolls them: the
revision recorded on the pod template, nothing when it is already there, a concurrent change
of the template refused rather than overwritten."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import pytest

from datacache_operator.api.binding import uses_label
from datacache_operator.api.rollouts import (
    REVISION_ANNOTATION_PREFIX,
    ROLLOUT_ANNOTATION,
    revision_annotation,
)
from datacache_operator.reconcile.rollouts import (
    opted_in,
    recorded_revision,
    rollout_patch,
    uses_cache,
    wants_rollout,
    workload_ref,
)

# A qualified name (label and annotation keys): an optional DNS-subdomain prefix, a name part
# of at most 63 characters.
QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def workload(
    caches: str | None = "qwen:/models/qwen:ro",
    *,
    kind: str = "Deployment",
    opt_in: str | None = "true",
    inject: str | None = "true",
    template_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"app": "infer", **({"eci.datacache.dev/inject": inject} if inject is not None else {})}
    annotations = dict(template_annotations or {})
    if caches is not None:
        annotations["eci.datacache.dev/caches"] = caches
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "infer",
            "namespace": "ml",
            "resourceVersion": "41",
            "annotations": {ROLLOUT_ANNOTATION: opt_in} if opt_in is not None else {},
        },
        "spec": {
            "template": {
                "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
                "spec": {"containers": [{"name": "server", "image": "vllm"}]},
            }
        },
    }


def applied(obj: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The object after the patch, as the apiserver applies it (a failed `test` raises)."""
    return jsonpatch.apply_patch(copy.deepcopy(obj), operations)  # type: ignore[no-any-return]


def test_the_names():
    assert ROLLOUT_ANNOTATION == "eci.datacache.dev/rollout"
    assert revision_annotation("qwen") == "revisions.eci.datacache.dev/qwen"
    assert REVISION_ANNOTATION_PREFIX == "revisions.eci.datacache.dev/"


@pytest.mark.parametrize("cache", ["qwen", "a.b-c", "x" * 63, "x" * 64, "m." * 120 + "m", "a" * 253])
def test_the_revision_annotation_is_a_valid_qualified_name_fitted_like_the_uses_label(cache: str):
    key = revision_annotation(cache)
    prefix, name = key.split("/")
    assert QUALIFIED_NAME.match(key) and len(name) <= 63, key
    assert name == uses_label(cache).split("/")[1]  # fitted the same way
    if len(cache) <= 63:
        assert name == cache
    else:
        assert revision_annotation(cache + "x") != key  # long names with one head still differ


@pytest.mark.parametrize(
    ("caches", "inject", "expected"),
    [
        ("qwen:/models/qwen:ro", "true", True),
        ("sdxl:/models/sdxl,qwen:/models/qwen", "true", True),
        (" qwen : /m ", "true", True),
        ("qwen2:/models/qwen", "true", False),  # another cache, not a prefix match
        ("sdxl:/models/sdxl", "true", False),
        ("qwen:/models/qwen:ro", None, False),  # not labelled for injection
        ("qwen:/models/qwen:ro", "false", False),
        ("qwen:relative", "true", False),  # malformed: names nothing
        ("qwen:/a,qwen:/b", "true", False),  # listed twice: refused by the webhook, so malformed
        ("", "true", False),
        (None, "true", False),
    ],
)
def test_uses_cache(caches: str | None, inject: str | None, expected: bool):
    assert uses_cache(workload(caches, inject=inject), "qwen") is expected


def test_uses_cache_reads_the_pod_template_only():
    """The caches named on the workload's own metadata are not its pods'."""
    obj = workload(None)
    obj["metadata"]["annotations"]["eci.datacache.dev/caches"] = "qwen:/m"
    obj["metadata"]["labels"] = {"eci.datacache.dev/inject": "true"}
    assert not uses_cache(obj, "qwen")
    assert not uses_cache({"kind": "Deployment", "metadata": {"name": "x"}}, "qwen")


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("True", True), ("false", False), (None, False)]
)
def test_opt_in_is_an_annotation_on_the_workload(value: str | None, expected: bool):
    assert opted_in(workload(opt_in=value)) is expected
    assert wants_rollout(workload(opt_in=value), "qwen") is expected
    assert not wants_rollout(workload(opt_in=value), "sdxl")


def test_an_opt_in_on_the_pod_template_does_not_count():
    obj = workload(opt_in=None, template_annotations={ROLLOUT_ANNOTATION: "true"})
    assert not opted_in(obj)


def test_the_patch_records_the_revision_and_a_second_call_patches_nothing():
    obj = workload(template_annotations={"team": "ml"})
    operations = rollout_patch(obj, "qwen", "r2")
    assert operations is not None
    rolled = applied(obj, operations)
    annotations = rolled["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "team": "ml",
        "eci.datacache.dev/caches": "qwen:/models/qwen:ro",
        "revisions.eci.datacache.dev/qwen": "r2",
    }
    assert recorded_revision(rolled, "qwen") == "r2"
    assert rollout_patch(rolled, "qwen", "r2") is None  # already there: nothing to patch
    # Nothing else of the workload changed: only the template's annotations.
    rolled["spec"]["template"]["metadata"]["annotations"] = obj["spec"]["template"]["metadata"]["annotations"]
    assert rolled == obj


def test_the_next_revision_replaces_the_recorded_one_and_leaves_other_caches_alone():
    obj = workload(
        "qwen:/q,sdxl:/s",
        template_annotations={revision_annotation("qwen"): "r1", revision_annotation("sdxl"): "r7"},
    )
    rolled = applied(obj, rollout_patch(obj, "qwen", "r2") or [])
    assert recorded_revision(rolled, "qwen") == "r2"
    assert recorded_revision(rolled, "sdxl") == "r7"


def test_a_concurrent_change_of_the_template_fails_the_patch():
    """Read with r1; meanwhile another writer recorded r3, or edited the caches annotation: the
    `test` fails (the apiserver answers 422) instead of overwriting it."""
    read = workload(template_annotations={revision_annotation("qwen"): "r1"})
    operations = rollout_patch(read, "qwen", "r2")
    assert operations is not None and operations[0]["op"] == "test"
    for change in (
        {revision_annotation("qwen"): "r3"},
        {"eci.datacache.dev/caches": "sdxl:/s"},
        {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"},
    ):
        now = copy.deepcopy(read)
        now["spec"]["template"]["metadata"]["annotations"].update(change)
        with pytest.raises(jsonpatch.JsonPatchTestFailed):
            applied(now, operations)


def test_a_status_update_meanwhile_does_not_fail_the_patch():
    """The workload's controller writes its status all through a rollout: that is no change of
    the template, so the patch still applies."""
    read = workload()
    now = copy.deepcopy(read)
    now["metadata"]["resourceVersion"] = "42"
    now["status"] = {"updatedReplicas": 1}
    rolled = applied(now, rollout_patch(read, "qwen", "r2") or [])
    assert recorded_revision(rolled, "qwen") == "r2"


def test_a_template_without_annotations_is_guarded_by_the_resource_version():
    obj = workload(None)
    operations = rollout_patch(obj, "qwen", "r1")
    assert operations == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
        {
            "op": "add",
            "path": "/spec/template/metadata/annotations",
            "value": {"revisions.eci.datacache.dev/qwen": "r1"},
        },
    ]
    assert recorded_revision(applied(obj, operations), "qwen") == "r1"
    bare = {"kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {"template": {}}}
    assert recorded_revision(applied(bare, rollout_patch(bare, "qwen", "r1") or []), "qwen") == "r1"


def test_a_long_cache_name_is_escaped_in_the_json_pointer():
    cache = "a.b" + "c" * 80
    obj = workload(f"{cache}:/m")
    operations = rollout_patch(obj, cache, "r1") or []
    assert operations[-1]["path"].startswith(
        "/spec/template/metadata/annotations/revisions.eci.datacache.dev~1"
    )
    assert recorded_revision(applied(obj, operations), cache) == "r1"


def test_workload_ref():
    assert workload_ref(workload(kind="StatefulSet")) == "StatefulSet/infer"
