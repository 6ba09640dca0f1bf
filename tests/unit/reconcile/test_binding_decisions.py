"""The pure part of binding pods to caches: pod + caches -> patch or denial, and the
decisions the pod binder takes afterwards (ungate, tell, count)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from datacache_operator.admission.mutate import mutation, requested_caches
from datacache_operator.api.binding import (
    BOUND_ANNOTATION,
    CACHES_ANNOTATION,
    ECI_BUCKET_ANNOTATION,
    ECI_BURSTING_ANNOTATION,
    ECI_IOPS_ANNOTATION,
    ECI_PL_ANNOTATION,
    GATED_LABEL,
    INJECT_LABEL,
    SCHEDULING_GATE,
    BindingError,
    parse_bound,
    parse_caches,
    uses_label,
    volume_name,
)
from datacache_operator.reconcile.binding import (
    binding_of,
    cache_usable_change,
    consumer_counts,
    copy_usable_change,
    in_use_message,
    ungate_patch,
    verdict,
)

HERE = "cn-hangzhou"


def apply_patch(pod: Mapping[str, Any], patch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pod after `patch` (only the `add` operations `mutation` emits), as the apiserver
    would apply it."""
    result = copy.deepcopy(dict(pod))
    for op in patch:
        assert op["op"] == "add"
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node.append(copy.deepcopy(op["value"]))
        else:
            node[last] = copy.deepcopy(op["value"])
    return result


def condition(type_: str, status: str, reason: str = "R", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def datacache(name: str, ready: bool = True, region: str = HERE, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"path": f"/models/{name}", "region": region, **spec},
        "status": {
            "dataCacheId": f"edc-{name}",
            "region": region,
            "conditions": [condition("Ready", "True" if ready else "False")],
        },
    }


def replication(name: str, source: str, region: str, **entry: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"source": {"dataCacheRef": {"name": source}}, "destinations": [{"region": region}]},
        "status": {"destinations": [{"region": region, **entry}]},
    }


def pod(caches: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            "labels": {INJECT_LABEL: "true", "app": "web"},
            "annotations": {CACHES_ANNOTATION: caches},
        },
        "spec": {"containers": [{"name": "server", "image": "vllm"}], **spec},
    }


def bind(
    p: dict[str, Any], *objects: dict[str, Any], replications: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    found = {o["metadata"]["name"]: o for o in objects}
    bindings = [
        (r, binding_of(r.name, "ml", found.get(r.name), list(replications), HERE, HERE))
        for r in requested_caches(p)
    ]
    return apply_patch(p, mutation(p, bindings))


# ---- the annotation ----------------------------------------------------------------------


def test_the_caches_annotation_parses_names_mount_paths_and_read_only():
    requests = parse_caches("qwen:/models/qwen, sdxl:/models/sdxl:ro")
    assert [(r.name, r.mount_path, r.read_only) for r in requests] == [
        ("qwen", "/models/qwen", False),
        ("sdxl", "/models/sdxl", True),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "missing or empty"),
        ("qwen", "is not NAME:MOUNTPATH"),
        ("qwen:/a:rw", "must be 'ro'"),
        ("qwen:models", "must be absolute"),
        ("Qwen_1:/a", "is not a DataCache name"),
        ("qwen:/a,qwen:/b", "cache qwen is listed twice"),
        ("qwen:/a,sdxl:/a/", "mount path /a is listed twice"),
        ("qwen:/a,,sdxl:/b", "entry ''"),
    ],
)
def test_a_malformed_annotation_is_refused_with_what_is_wrong(text: str, words: str):
    with pytest.raises(BindingError, match=CACHES_ANNOTATION) as raised:
        parse_caches(text)
    assert words in str(raised.value)


def test_names_that_do_not_fit_a_volume_or_label_name_are_shortened_stably():
    long = "a" * 60 + ".b"
    assert len(volume_name(long)) <= 63 and "." not in volume_name(long)
    assert volume_name(long) == volume_name(long) != volume_name("a" * 60 + ".c")
    assert len(uses_label("x" * 200).split("/", 1)[1]) <= 63
    assert volume_name("qwen") == "datacache-qwen" and uses_label("qwen") == "uses.eci.datacache.dev/qwen"


# ---- the patch ---------------------------------------------------------------------------


def test_a_pod_of_a_ready_cache_gets_the_bucket_volume_mount_and_record_but_no_gate():
    bound = bind(pod("qwen:/models/qwen:ro"), datacache("qwen", bucket="team"))
    meta, spec = bound["metadata"], bound["spec"]
    assert meta["annotations"][ECI_BUCKET_ANNOTATION] == "team"
    assert spec["volumes"] == [{"name": "datacache-qwen", "hostPath": {"path": "/models/qwen"}}]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "datacache-qwen", "mountPath": "/models/qwen", "readOnly": True}
    ]
    assert "schedulingGates" not in spec and GATED_LABEL not in meta["labels"]
    assert json.loads(meta["annotations"][BOUND_ANNOTATION]) == [
        {"name": "qwen", "dataCacheId": "edc-qwen", "region": HERE, "bucket": "team", "path": "/models/qwen"}
    ]
    assert meta["labels"][uses_label("qwen")] == HERE and meta["labels"]["app"] == "web"


def test_a_cache_not_ready_gates_the_pod_and_every_container_gets_every_mount():
    p = pod("qwen:/models/qwen,sdxl:/models/sdxl", initContainers=[{"name": "warm", "image": "busybox"}])
    p["spec"]["containers"].append(
        {"name": "sidecar", "image": "envoy", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}
    )
    bound = bind(p, datacache("qwen"), datacache("sdxl", ready=False))
    assert bound["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]
    assert bound["metadata"]["labels"][GATED_LABEL] == "true"
    for container in bound["spec"]["initContainers"] + bound["spec"]["containers"]:
        paths = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/models/qwen", "/models/sdxl"} <= paths, container["name"]


def test_the_patch_is_idempotent_and_keeps_other_gates():
    p = pod("qwen:/models/qwen", schedulingGates=[{"name": "example.com/quota"}])
    once = bind(p, datacache("qwen", ready=False))
    twice = bind(copy.deepcopy(once), datacache("qwen", ready=False))
    assert once == twice
    assert once["spec"]["schedulingGates"] == [{"name": "example.com/quota"}, {"name": SCHEDULING_GATE}]


def test_pod_disk_options_come_from_the_cache_unless_the_pod_sets_them():
    cache = datacache(
        "qwen", podDisk={"performanceLevel": "PL2", "provisionedIops": 3000, "burstingEnabled": True}
    )
    p = pod("qwen:/m")
    p["metadata"]["annotations"][ECI_PL_ANNOTATION] = "PL3"
    annotations = bind(p, cache)["metadata"]["annotations"]
    assert annotations[ECI_PL_ANNOTATION] == "PL3"  # the pod wins
    assert annotations[ECI_IOPS_ANNOTATION] == "3000" and annotations[ECI_BURSTING_ANNOTATION] == "true"


def test_caches_in_two_buckets_are_denied_naming_both():
    with pytest.raises(BindingError) as raised:
        bind(pod("qwen:/a,sdxl:/b"), datacache("qwen", bucket="one"), datacache("sdxl", bucket="two"))
    assert "qwen (bucket one)" in str(raised.value) and "sdxl (bucket two)" in str(raised.value)


def test_a_mount_path_the_container_already_uses_is_denied():
    p = pod("qwen:/models")
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/models"}]
    with pytest.raises(BindingError, match="container server already mounts volume scratch at /models"):
        bind(p, datacache("qwen"))


def test_a_missing_or_deleted_cache_is_denied_naming_it():
    with pytest.raises(BindingError, match="DataCache qwen not found in namespace ml"):
        bind(pod("qwen:/a"))
    deleting = datacache("qwen")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    with pytest.raises(BindingError, match="ml/qwen is being deleted"):
        bind(pod("qwen:/a"), deleting)


def test_a_cache_in_another_region_binds_through_its_copy_here():
    source = datacache("qwen", region="cn-hongkong", bucket="models")
    copy_ = replication("to-mainland", "qwen", HERE, dataCacheId="edc-copy", status="Loading")
    copy_["spec"]["destinations"][0]["path"] = "/copies/qwen"
    bound = bind(pod("qwen:/m"), source, replications=[copy_])
    record = parse_bound(bound["metadata"]["annotations"])[0]
    assert (record.region, record.bucket, record.path, record.dataCacheId, record.replication) == (
        HERE,
        "models",
        "/copies/qwen",
        "edc-copy",
        "to-mainland",
    )
    assert bound["spec"]["volumes"][0]["hostPath"]["path"] == "/copies/qwen"
    assert bound["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]  # the copy is not Available


def test_a_pod_here_mounts_the_copy_its_region_holds_while_the_source_moved_to_a_new_revision():
    """The source switches to r2 (a new path) before this region's copy of r2 is Available:
    the pod is bound to the copy of r1, at the copy's own path, never the new one's."""
    source = datacache("qwen", region="cn-hongkong", bucket="models")
    source["status"].update(path="/models/qwen.r2", currentRevision="r2")
    copy_ = replication(
        "to-mainland",
        "qwen",
        HERE,
        dataCacheId="edc-copy-r1",
        status="Available",
        path="/models/qwen",
        revision="r1",
    )
    bound = bind(pod("qwen:/m"), source, replications=[copy_])
    record = parse_bound(bound["metadata"]["annotations"])[0]
    assert (record.path, record.dataCacheId, record.revision) == ("/models/qwen", "edc-copy-r1", "r1")
    assert bound["spec"]["volumes"][0]["hostPath"]["path"] == "/models/qwen"
    assert not bound["spec"].get("schedulingGates")  # the copy it is bound to is Available


def test_a_cache_in_another_region_without_a_copy_is_denied_naming_both_regions():
    with pytest.raises(BindingError) as raised:
        bind(pod("qwen:/m"), datacache("qwen", region="cn-hongkong"))
    assert "cn-hongkong" in str(raised.value) and HERE in str(raised.value)
    assert "DataCacheReplication" in str(raised.value)


# ---- afterwards --------------------------------------------------------------------------


def test_a_waiting_pod_is_ungated_only_when_every_cache_is_ready_and_unmoved():
    gated = bind(pod("qwen:/a,sdxl:/b"), datacache("qwen"), datacache("sdxl", ready=False))
    bound = parse_bound(gated["metadata"]["annotations"])

    def now(*objects: dict[str, Any]) -> dict[str, Any]:
        return {
            o["metadata"]["name"]: binding_of(o["metadata"]["name"], "ml", o, [], HERE, HERE) for o in objects
        }

    assert verdict(bound, now(datacache("qwen"), datacache("sdxl", ready=False))).waiting == ("sdxl",)
    ready = verdict(bound, now(datacache("qwen"), datacache("sdxl")))
    assert ready.ready
    patched = apply_ungate(gated, ungate_patch(gated, ready.bound))
    assert patched["spec"]["schedulingGates"] == [] and GATED_LABEL not in patched["metadata"]["labels"]

    failed = datacache("sdxl", ready=False)
    failed["status"]["conditions"].append(condition("Stalled", "True", "Failed", "the build ran out of disk"))
    verdict_failed = verdict(bound, now(datacache("qwen"), failed))
    assert not verdict_failed.ready and verdict_failed.failures == (("sdxl", "the build ran out of disk"),)
    moved = verdict(bound, {**now(datacache("qwen")), "sdxl": "DataCache sdxl not found in namespace ml"})
    assert not moved.ready and moved.failures[0][0] == "sdxl"


def apply_ungate(p: dict[str, Any], patch: list[dict[str, Any]] | None) -> dict[str, Any]:
    assert patch is not None
    result = copy.deepcopy(p)
    for op in patch:
        parts = [x.replace("~1", "/") for x in op["path"].split("/")[1:]]
        node: Any = result
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if op["op"] == "test":
            assert (node[int(last)] if isinstance(node, list) else node[last]) == op["value"]
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            node[last] = op["value"]
    return result


def test_consumers_are_counted_per_cache_and_per_replication():
    direct = bind(pod("qwen:/a"), datacache("qwen"))
    source = datacache("sdxl", region="cn-hongkong")
    copied = bind(pod("sdxl:/b"), source, replications=[replication("r", "sdxl", HERE, status="Available")])
    for p in (direct, copied):
        p["metadata"]["namespace"] = "ml"
    counts = consumer_counts([direct, direct, copied])
    assert counts == {("datacaches", "ml", "qwen"): 2, ("datacachereplications", "ml", "r"): 1}
    assert in_use_message(["ml/a", "ml/b"], "the cloud cache").startswith("2 pods use it (ml/a, ml/b)")


def test_waiting_pods_are_looked_at_when_a_cache_turns_ready_or_fails():
    not_ready = datacache("q", ready=False)["status"]
    ready = datacache("q")["status"]
    stalled = {**not_ready, "conditions": [*not_ready["conditions"], condition("Stalled", "True")]}
    assert cache_usable_change(not_ready, ready, HERE) == (True, False)
    assert cache_usable_change(ready, ready, HERE) == (False, False)
    assert cache_usable_change(not_ready, stalled, HERE) == (False, True)
    loading = {"destinations": [{"region": HERE, "status": "Loading"}]}
    available = {"destinations": [{"region": HERE, "status": "Available"}]}
    elsewhere = {"destinations": [{"region": "cn-beijing", "status": "Available"}]}
    assert copy_usable_change(loading, available, HERE) == (True, False)
    assert copy_usable_change(loading, elsewhere, HERE) == (False, False)


# ---- where the pod's hostPath points -------------------------------------------------------


def test_the_mounted_path_is_the_caches_as_eci_reported_it_not_the_spec() -> None:
    observed = datacache("qwen", bucket="team-b")
    observed["status"].update(bucket="team-b", path="/models/qwen-real")
    bound = binding_of("qwen", "ml", observed, [], HERE, HERE).bound
    assert (bound.bucket, bound.path) == ("team-b", "/models/qwen-real")


def test_an_adopted_cache_not_read_yet_binds_no_pod_whatever_its_spec_path() -> None:
    adopted = datacache("theirs", dataCacheId="edc-theirs", path="/")
    with pytest.raises(BindingError, match="not read from the cloud yet"):
        binding_of("theirs", "ml", adopted, [], HERE, HERE)
    created = datacache("ours")  # the operator creates it at spec.path: fine before the first read
    assert binding_of("ours", "ml", created, [], HERE, HERE).bound.path == "/models/ours"


def test_a_pod_names_at_most_a_few_caches_each_one_a_read_in_the_webhook() -> None:
    from datacache_operator.api.binding import MAX_CACHES_PER_POD

    most = ", ".join(f"c{n}:/m/{n}" for n in range(MAX_CACHES_PER_POD))
    assert len(parse_caches(most)) == MAX_CACHES_PER_POD
    with pytest.raises(BindingError, match=f"at most {MAX_CACHES_PER_POD} caches"):
        parse_caches(most + ", one:/more")


# ---- on ECI only ----------------------------------------------------------------------------


def test_a_bound_pod_is_kept_on_eci_by_acks_label_and_the_virtual_nodes_selector() -> None:
    from datacache_operator.settings import OperatorSettings

    p = pod("qwen:/models/qwen")
    placement = OperatorSettings().placement
    bindings = [(r, binding_of(r.name, "ml", datacache("qwen"), [], HERE, HERE)) for r in requested_caches(p)]
    bound = apply_patch(p, mutation(p, bindings, placement))
    assert bound["metadata"]["labels"]["alibabacloud.com/eci"] == "true"
    assert bound["spec"]["nodeSelector"] == {"type": "virtual-kubelet"}
    assert {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"} in bound[
        "spec"
    ]["tolerations"]
    again = apply_patch(bound, mutation(bound, bindings, placement))  # a reinvocation adds nothing twice
    assert again["spec"]["tolerations"] == bound["spec"]["tolerations"]
    elsewhere = pod("qwen:/models/qwen")
    elsewhere["spec"]["nodeSelector"] = {"type": "gpu-node"}
    with pytest.raises(BindingError, match="runs on ECI"):
        mutation(elsewhere, bindings, placement)
    assert (
        "nodeSelector"
        not in apply_patch(p, mutation(p, bindings, OperatorSettings(eci_placement="label").placement))[
            "spec"
        ]
    )


def test_an_opted_in_pod_may_not_add_a_hostpath_of_its_own() -> None:
    p = pod("qwen:/models/qwen")
    p["spec"]["volumes"] = [{"name": "theirs", "hostPath": {"path": "/models/team-a"}}]
    with pytest.raises(BindingError, match="volume theirs is a hostPath"):
        bind(p, datacache("qwen"))
