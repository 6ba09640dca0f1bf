"""The generated DataCache CRD on a real kube-apiserver: CEL rules, defaults, pruning, explain."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.controlplane import ControlPlane

from datacache_operator.api.datacache import DATACACHE

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "deploy" / "crds" / DATACACHE.file_name
EXAMPLES = sorted((REPO / "examples").glob("datacache-*.yaml"))


@pytest.fixture(scope="module")
def datacache_crd(controlplane: ControlPlane) -> str:
    controlplane.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    controlplane.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s", f"crd/{DATACACHE.crd_name}"
    )
    return DATACACHE.crd_name


def datacache(name: str, **spec: Any) -> dict[str, Any]:
    """A valid DataCache; keyword arguments override spec fields (camelCase)."""
    base_spec: dict[str, Any] = {
        "region": "cn-hangzhou",
        "path": f"/models/{name}",
        "dataSource": {"type": "URL", "options": {"repoSource": "HuggingFace/Model", "repoId": "org/model"}},
    }
    base_spec.update(spec)
    return {
        "apiVersion": f"{DATACACHE.group}/{DATACACHE.version}",
        "kind": DATACACHE.kind,
        "metadata": {"name": name},
        "spec": base_spec,
    }


def apply(controlplane: ControlPlane, namespace: str, obj: dict[str, Any], check: bool = True):
    return controlplane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=check)


def get(controlplane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(controlplane.kubectl("get", "-n", namespace, "datacache", name, "-o", "json").stdout)


def assert_rejected(controlplane: ControlPlane, namespace: str, obj: dict[str, Any], *expected: str) -> None:
    result = apply(controlplane, namespace, obj, check=False)
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    for text in expected:
        assert text in result.stderr, result.stderr


def changed(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    updated = copy.deepcopy(obj)
    updated["spec"].update(spec)
    return updated


def without(obj: dict[str, Any], field: str) -> dict[str, Any]:
    updated = copy.deepcopy(obj)
    del updated["spec"][field]
    return updated


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"bucket": "eci-system"}, ["spec.bucket: Invalid value", "bucket eci-system is reserved by ECI"]),
        ({"path": "models/x"}, ["spec.path: Invalid value", "path must start with '/'"]),
        (
            {"netConfig": {"eipInstanceId": "eip-1", "eipCreateParam": {"bandwidth": 5}}},
            ["spec.netConfig: Invalid value", "set either eipInstanceId or eipCreateParam, not both"],
        ),
        ({"dataSource": {"type": "FTP"}}, ["spec.dataSource.type", "Unsupported value", '"FTP"']),
        ({"size": 0}, ["spec.size", "greater than or equal to 1"]),
        ({"retentionDays": 0}, ["spec.retentionDays", "greater than or equal to 1"]),
        ({"size": -3}, ["spec.size", "greater than or equal to 1"]),
        ({"region": "Hangzhou"}, ["spec.region"]),
    ],
    ids=[
        "reserved-bucket",
        "relative-path",
        "both-eips",
        "unknown-type",
        "size-0",
        "retention-0",
        "size-neg",
        "region",
    ],
)
def test_invalid_spec_is_rejected_on_create(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, spec: dict[str, Any], expected: list[str]
):
    assert_rejected(controlplane, namespace, datacache("bad", **spec), *expected)


def test_data_source_is_required_unless_adopting(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    plain = without(datacache("no-source"), "dataSource")
    assert_rejected(
        controlplane,
        namespace,
        plain,
        "spec.dataSource: Invalid value",
        "dataSource is required unless dataCacheId adopts",
    )
    apply(controlplane, namespace, changed(plain, dataCacheId="edc-adopted"))


def accepted(controlplane: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    """The apiserver admits `obj` (a server-side dry run: nothing is stored)."""
    result = controlplane.kubectl(
        "apply", "-n", namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert result.returncode == 0, result.stderr


URL_NEEDS = "type URL needs options.url, or options.repoSource with options.repoId"
KEYS_FROM_SECRET = {"name": "keys", "items": [{"key": "id", "option": "akId"}]}


@pytest.mark.parametrize(
    ("data_source", "expected"),
    [
        ({"type": "URL"}, URL_NEEDS),
        ({"type": "URL", "options": {"url": ""}}, URL_NEEDS),
        ({"type": "URL", "options": {"repoSource": "HuggingFace/Model"}}, URL_NEEDS),
        ({"type": "URL", "options": {"repoId": "org/model", "revision": "main"}}, URL_NEEDS),
        ({"type": "OSS", "options": {"url": "oss-cn-hangzhou-internal.aliyuncs.com"}}, "type OSS needs options.bucket"),
        ({"type": "OSS", "options": {"path": "/d"}, "secretRef": KEYS_FROM_SECRET}, "type OSS needs options.bucket"),
        ({"type": "NAS", "options": {"path": "/share", "vers": "3"}}, "type NAS needs options.server"),
        ({"type": "SNAPSHOT", "options": {}}, "type SNAPSHOT needs options.snapshotId"),
    ],
    ids=[
        "url-none", "url-empty", "url-repo-source-only", "url-repo-id-only", "oss", "oss-secret-items",
        "nas", "snapshot",
    ],
)  # fmt: skip
def test_a_data_source_without_its_required_option_is_refused(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, data_source: dict[str, Any], expected: str
):
    assert_rejected(
        controlplane,
        namespace,
        datacache("bad-source", dataSource=data_source),
        "spec.dataSource.options: Required value",
        expected,
    )


def test_an_unknown_repo_source_is_refused(controlplane: ControlPlane, datacache_crd: str, namespace: str):
    source = {"type": "URL", "options": {"repoSource": "GitHub/Model", "repoId": "org/model"}}
    assert_rejected(
        controlplane,
        namespace,
        datacache("bad-repo", dataSource=source),
        "spec.dataSource.options: Invalid value",
        "options.repoSource is one of HuggingFace/Model, HuggingFace/DataSet, ModelScope/Model",
    )


@pytest.mark.parametrize(
    "data_source",
    [
        {"type": "URL", "options": {"url": "https://example.com/model.tar"}},
        {"type": "URL", "options": {"repoSource": "ModelScope/DataSet", "repoId": "org/set"}},
        {"type": "URL", "secretRef": {"name": "keys", "items": [{"key": "signed-url", "option": "url"}]}},
        {"type": "OSS", "options": {"bucket": "data"}},
        {"type": "OSS", "secretRef": {"name": "keys"}},  # every key of the Secret is an option
        {"type": "NAS", "options": {"server": "0ce1f4-or.cn-hangzhou.nas.aliyuncs.com"}},
        {"type": "SNAPSHOT", "options": {"snapshotId": "s-123"}},
    ],
    ids=["url", "url-repo", "url-from-secret", "oss", "oss-any-secret-key", "nas", "snapshot"],
)
def test_a_data_source_with_its_required_option_is_accepted(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, data_source: dict[str, Any]
):
    accepted(controlplane, namespace, datacache("good-source", dataSource=data_source))


def many_tags(count: int) -> dict[str, str]:
    """`count` tags with keys and values as long as ECI allows (128 characters)."""
    return {f"{index:03d}".ljust(128, "k"): "v" * 128 for index in range(count)}


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (many_tags(17), ["spec.tags: Invalid value", "at most 16 tags: ECI allows 20 on a cache and the operator adds 4"]),
        ({"k" * 129: "v"}, ["spec.tags: Invalid value", "a tag key is 1 to 128 characters long"]),
        ({"": "v"}, ["spec.tags: Invalid value", "a tag key is 1 to 128 characters long"]),
        ({"team": "v" * 129}, ["spec.tags.team: Too long", "128"]),
        ({"aliyun-team": "ml"}, ["spec.tags: Forbidden", "a tag key must not begin with aliyun or acs:"]),
        ({"ACS:team": "ml"}, ["spec.tags: Forbidden", "a tag key must not begin with aliyun or acs:"]),
        ({"see-http://x": "ml"}, ["spec.tags: Forbidden", "must not contain http:// or https://"]),
        ({"docs": "HTTPS://example.com"}, ["spec.tags: Forbidden", "must not contain http:// or https://"]),
    ],
    ids=["count", "key-long", "key-empty", "value-long", "aliyun", "acs", "http-key", "https-value"],
)  # fmt: skip
def test_tags_against_alibaba_clouds_rules_are_refused(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, tags: dict[str, str], expected: list[str]
):
    assert_rejected(controlplane, namespace, datacache("bad-tags", tags=tags), *expected)


def test_as_many_and_as_long_tags_as_eci_takes_are_accepted(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    accepted(controlplane, namespace, datacache("full-tags", tags={**many_tags(15), "team": ""}))


def test_a_cloud_name_over_128_characters_is_refused(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    obj = datacache("long-cloud-name")
    assert_rejected(controlplane, namespace, changed(obj, name="n" * 129), "spec.name: Too long", "128")
    accepted(controlplane, namespace, changed(obj, name="n" * 128))


def test_an_object_name_as_long_as_kubernetes_allows_is_accepted(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    # The operator fits it to ECI's 128 characters for the cache's Name and owner-name tag.
    accepted(controlplane, namespace, datacache("a" * 253))


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (
            {},
            {"path": "/models/elsewhere"},
            'spec.path: Invalid value: "/models/elsewhere": path is immutable',
        ),
        ({}, {"bucket": "other"}, "spec.bucket: Invalid value: bucket is immutable"),
        ({"bucket": "one"}, {"bucket": "two"}, "spec.bucket: Invalid value: bucket is immutable"),
        (
            {"region": "cn-hangzhou"},
            {"region": "cn-hongkong"},
            "spec.region: Invalid value: region is immutable once set",
        ),
        (
            {"dataCacheId": "edc-one"},
            {"dataCacheId": "edc-two"},
            "spec.dataCacheId: Invalid value: dataCacheId is immutable once set",
        ),
    ],
    ids=["path", "bucket-added", "bucket", "region", "dataCacheId"],
)
def test_immutable_fields_reject_a_change(
    controlplane: ControlPlane,
    datacache_crd: str,
    namespace: str,
    first: dict[str, Any],
    second: dict[str, Any],
    expected: str,
):
    original = datacache("immutable", **first)
    apply(controlplane, namespace, original)
    assert_rejected(controlplane, namespace, changed(original, **second), expected)


@pytest.mark.parametrize("field", ["region", "dataCacheId"])
def test_set_once_fields_cannot_be_removed_but_can_be_added(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, field: str
):
    value = {"region": "cn-shanghai", "dataCacheId": "edc-later"}[field]
    original = without(datacache("set-once"), "region") if field == "region" else datacache("set-once")
    apply(controlplane, namespace, original)
    with_field = changed(original, **{field: value})
    apply(controlplane, namespace, with_field)  # unset -> set is allowed
    assert_rejected(
        controlplane,
        namespace,
        without(with_field, field),
        f"spec.{field}: Invalid value: {field} is immutable once set",
    )


def patch_status(controlplane: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    controlplane.kubectl(
        "patch", "-n", namespace, "datacache", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "observed", "other"),
    [("region", "cn-hangzhou", "cn-shanghai"), ("dataCacheId", "edc-created", "edc-other")],
)
def test_a_field_set_late_must_match_what_status_observed(
    controlplane: ControlPlane, datacache_crd: str, namespace: str, field: str, observed: str, other: str
):
    # Unset region means the operator's default; once status records where the cache
    # lives, naming another region (or cache) in the spec would orphan it.
    original = without(datacache("late"), "region")
    apply(controlplane, namespace, original)
    patch_status(controlplane, namespace, "late", {field: observed})
    assert_rejected(
        controlplane,
        namespace,
        changed(original, **{field: other}),
        f"spec.{field}: Invalid value: spec.{field} must equal status.{field}",
    )
    apply(controlplane, namespace, changed(original, **{field: observed}))


def test_mutable_fields_can_change(controlplane: ControlPlane, datacache_crd: str, namespace: str):
    original = datacache("mutable", size=20, retentionDays=7)
    apply(controlplane, namespace, original)
    apply(
        controlplane,
        namespace,
        changed(original, size=40, retentionDays=14, tags={"team": "ml"}, deletionPolicy="Retain"),
    )
    spec = get(controlplane, namespace, "mutable")["spec"]
    assert (spec["size"], spec["retentionDays"], spec["deletionPolicy"]) == (40, 14, "Retain")


def test_defaults_are_applied_and_unknown_fields_pruned(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    obj = datacache("defaults")
    obj["spec"]["madeUp"] = "dropped"
    obj["spec"]["dataSource"]["extra"] = {"nested": True}
    result = controlplane.kubectl(
        "create", "-n", namespace, "-f", "-", "--validate=false", input=yaml.safe_dump(obj)
    )
    assert result.returncode == 0
    spec = get(controlplane, namespace, "defaults")["spec"]
    assert "bucket" not in spec  # the namespace's own, decided by the operator
    assert spec["size"] == 20
    assert "madeUp" not in spec
    assert "extra" not in spec["dataSource"]
    assert "deletionPolicy" not in spec  # no schema default: the operator-wide default applies


def test_status_subresource_accepts_the_documented_shape(
    controlplane: ControlPlane, datacache_crd: str, namespace: str
):
    apply(controlplane, namespace, datacache("with-status"))
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidParameter.Size",
                "message": "the data is larger than the cache",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 1,
            }
        ],
        "dataCacheId": "edc-123",
        "region": "cn-hangzhou",
        "bucket": "team-a",
        "status": "Loading",
        "progress": "45%",
        "creationTime": "2026-01-02T03:04:00Z",
        "unknownStatusField": "pruned",
    }
    patch_status(controlplane, namespace, "with-status", status)
    stored = get(controlplane, namespace, "with-status")["status"]
    assert stored["conditions"][0]["reason"] == "InvalidParameter.Size"
    assert stored["dataCacheId"] == "edc-123"
    assert "unknownStatusField" not in stored
    wide = controlplane.kubectl("get", "-n", namespace, "edc", "with-status", "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "READY", "STATUS", "ID", "REGION"]
    assert row.split()[:7] == [
        "with-status",
        "False",
        "Loading",
        "edc-123",
        "cn-hangzhou",
        "InvalidParameter.Size",
        "team-a",  # the bucket ECI reports
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies(controlplane: ControlPlane, datacache_crd: str, namespace: str, example: Path):
    controlplane.kubectl("apply", "-n", namespace, "-f", str(example))
    names = [
        d["metadata"]["name"] for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "DataCache"
    ]
    for name in names:
        assert get(controlplane, namespace, name)["spec"]["path"].startswith("/")


def test_examples_cover_the_documented_cases():
    documents = [d for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d["kind"] == "DataCache"]
    options = [d["spec"].get("dataSource", {}).get("options", {}) for d in documents]
    assert any(o.get("repoSource") == "HuggingFace/Model" for o in options)
    assert any(o.get("repoSource") == "ModelScope/Model" for o in options)
    assert any("url" in o and "repoSource" not in o for o in options)
    assert any("secretRef" in d["spec"].get("dataSource", {}) for d in documents)
    assert any("dataCacheId" in d["spec"] for d in documents)
    assert any(d["spec"].get("deletionPolicy") == "Retain" for d in documents)


def test_short_name_and_categories_resolve(controlplane: ControlPlane, datacache_crd: str, namespace: str):
    apply(controlplane, namespace, datacache("named"))
    for resource in ("edc", "eci", "datacache", "datacaches"):
        listed = controlplane.kubectl("get", "-n", namespace, resource, "-o", "name").stdout
        assert "datacache.eci.datacache.dev/named" in listed, resource


def test_explain_shows_descriptions(controlplane: ControlPlane, datacache_crd: str):
    # Discovery caches the OpenAPI document for a while; retry until the new kind shows up.
    explained = ""
    for _ in range(30):
        result = controlplane.kubectl("explain", "datacache.spec.dataSource", check=False)
        explained = result.stdout
        if result.returncode == 0:
            break
        time.sleep(1)
    assert "Where the data comes from" in explained
    assert "secretRef" in explained and "Secret whose keys become further options" in explained
    assert "repoSource" in explained  # the options description lists the keys
    type_help = controlplane.kubectl("explain", "datacache.spec.dataSource.type").stdout
    assert "URL" in type_help and "SNAPSHOT" in type_help
