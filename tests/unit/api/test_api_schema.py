"""The pydantic -> structural schema converter and the generated DataCache CRD."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from datacache_operator import GROUP, VERSION
from datacache_operator.api.crds import HEADER, all_crds, render, rendered_files
from datacache_operator.api.datacache import DATACACHE
from datacache_operator.api.schema import SchemaError, structural_schema

REPO = Path(__file__).resolve().parents[3]
CRD_DIRECTORY = REPO / "deploy" / "crds"


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.prop`, `[]` for items, `{}` for map values)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return next(c for c in all_crds() if c["metadata"]["name"] == f"datacaches.{GROUP}")


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]


def test_names_scope_and_subresources(crd: dict[str, Any], version: dict[str, Any]):
    assert crd["spec"]["group"] == GROUP == "eci.datacache.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "DataCache",
        "listKind": "DataCacheList",
        "plural": "datacaches",
        "singular": "datacache",
        "shortNames": ["edc"],
        "categories": ["eci", "datacache"],
    }
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]):
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    default_columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default_columns == ["Ready", "Status", "ID", "Region", "Consumers", "Age"]
    assert columns["Consumers"]["jsonPath"] == ".status.consumers"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Reason"]["priority"] == 1
    assert columns["Status"]["jsonPath"] == ".status.status"
    assert columns["ID"]["jsonPath"] == ".status.dataCacheId"
    assert columns["Region"]["jsonPath"] == ".status.region"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def test_schema_is_structural(root: dict[str, Any]):
    for path, node in walk(root):
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title"} & node.keys(), path
        assert "type" in node, f"{path or '<root>'} has no type"
        assert node.get("default", "unset") is not None, f"{path}: default null"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert "properties" in node or "additionalProperties" in node, f"{path}: free-form object"


def test_every_spec_and_status_field_is_described(root: dict[str, Any]):
    for path, node in walk(root):
        if path.startswith((".spec", ".status")) and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path} has no description"


def test_spec_shape(root: dict[str, Any]):
    spec = root["properties"]["spec"]
    assert set(spec["properties"]) == {
        "region", "bucket", "path", "name", "size", "retentionDays", "dataSource", "netConfig",
        "tags", "resourceGroupId", "dataCacheId", "deletionPolicy", "managementPolicies", "podDisk",
        "updatePolicy", "revisionHistoryLimit", "expireAfterUnused", "refresh",
    }  # fmt: skip
    assert spec["required"] == ["path"]
    assert root["required"] == ["spec"]
    source = spec["properties"]["dataSource"]
    assert source["required"] == ["type"]
    assert source["properties"]["type"]["enum"] == ["URL", "OSS", "NAS", "SNAPSHOT"]
    assert source["properties"]["options"]["additionalProperties"] == {"type": "string"}
    assert source["properties"]["secretRef"]["required"] == ["name"]
    net = spec["properties"]["netConfig"]["properties"]
    assert set(net) == {"securityGroupId", "vSwitchId", "eipInstanceId", "eipCreateParam"}
    eip = net["eipCreateParam"]["properties"]
    assert set(eip) == {
        "bandwidth",
        "commonBandwidthPackage",
        "internetChargeType",
        "publicIpAddressPoolId",
        "isp",
    }
    assert eip["internetChargeType"]["enum"] == ["PayByBandwidth", "PayByTraffic"]
    assert eip["isp"]["enum"] == ["BGP", "BGP_PRO"]
    assert spec["properties"]["tags"]["additionalProperties"] == {"type": "string", "maxLength": 128}
    assert spec["properties"]["deletionPolicy"]["enum"] == ["Delete", "Retain"]


def test_defaults_live_in_the_schema(root: dict[str, Any]):
    spec = root["properties"]["spec"]["properties"]
    # The namespace decides the bucket when unset (api.buckets), so the schema must not.
    assert "default" not in spec["bucket"]
    assert spec["size"]["default"] == 20
    assert spec["size"]["minimum"] == 1
    assert spec["retentionDays"]["minimum"] == 1
    # The operator-wide setting decides when unset, so the schema must not.
    assert "default" not in spec["deletionPolicy"]
    assert "default" not in spec["region"]


def test_cel_rules_are_where_they_apply(root: dict[str, Any]):
    spec = root["properties"]["spec"]
    rules = {r["rule"]: r for r in spec["x-kubernetes-validations"]}
    region_rule = "!has(oldSelf.region) || (has(self.region) && self.region == oldSelf.region)"
    assert rules[region_rule]["fieldPath"] == ".region"
    assert any("oldSelf.dataCacheId" in r for r in rules)
    path_rules = [r["rule"] for r in spec["properties"]["path"]["x-kubernetes-validations"]]
    assert path_rules == ["self.startsWith('/')", "self == oldSelf"]
    bucket_rules = [r["rule"] for r in spec["properties"]["bucket"]["x-kubernetes-validations"]]
    assert "self != 'eci-system'" in bucket_rules
    net_rules = spec["properties"]["netConfig"]["x-kubernetes-validations"]
    assert net_rules[0]["rule"] == "!(has(self.eipInstanceId) && has(self.eipCreateParam))"
    object_rules = [r["fieldPath"] for r in root["x-kubernetes-validations"]]
    assert object_rules == [".spec.region", ".spec.dataCacheId"]  # checked against status
    for _, node in walk(root):
        for rule in node.get("x-kubernetes-validations", ()):
            assert rule["message"], rule


def test_status_shape(root: dict[str, Any]):
    status = root["properties"]["status"]["properties"]
    assert {
        "observedGeneration", "conditions", "dataCacheId", "region", "status", "bucket", "path", "size",
        "progress", "creationTime", "expireTime", "lastSyncTime", "message",
    } <= set(status)  # fmt: skip
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert item["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert status["creationTime"]["format"] == "date-time"


def test_committed_crd_files_are_up_to_date():
    """Fails when a model changed without `make crds`; the diff is the fix."""
    for name, content in rendered_files().items():
        committed = CRD_DIRECTORY / name
        assert committed.exists(), f"{committed} is missing: run `make crds`"
        assert committed.read_text() == content, f"{committed} is stale: run `make crds`"


def test_rendering_is_deterministic_and_round_trips():
    first = all_crds()
    assert [render(c) for c in first] == [render(c) for c in all_crds()]
    assert yaml.safe_load(render(first[0])) == first[0]
    assert all(content.startswith(HEADER) for content in rendered_files().values())
    assert DATACACHE.file_name == "eci.datacache.dev_datacaches.yaml"
    assert list(rendered_files()) == [
        "eci.datacache.dev_datacaches.yaml",
        "eci.datacache.dev_datacachereplications.yaml",
        "eci.datacache.dev_eciaccounts.yaml",
    ]


# The converter is generic: check it on small models, including what it must refuse.


class Colour(StrEnum):
    """Enum docstring (overridden at the field)."""

    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    """Inner docstring."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": "true", "message": "m"}]}
    )

    value: int = Field(default=3, ge=0, description="A value.")


class Outer(BaseModel):
    colour: Colour | None = Field(default=None, description="Field description wins.")
    inner: Inner | None = Field(
        default=None,
        description="Inner at its site.",
        json_schema_extra={"x-kubernetes-validations": [{"rule": "false", "message": "site"}]},
    )
    inners: list[Inner] = Field(default_factory=list, description="A list.")
    labels: dict[str, str] = Field(default_factory=dict, description="A map.")
    fixed: str = Field(default="x", pattern="^x$", description="A pattern and a default.")


def test_converter_inlines_references_and_collapses_optional():
    schema = structural_schema(Outer)
    properties = schema["properties"]
    assert properties["colour"] == {
        "type": "string",
        "enum": ["red", "blue"],
        "description": "Field description wins.",
    }
    inner = properties["inner"]
    assert inner["description"] == "Inner at its site."
    assert inner["properties"]["value"] == {
        "type": "integer",
        "minimum": 0,
        "default": 3,
        "description": "A value.",
    }
    # Rules of the model and of the site both apply.
    assert [r["message"] for r in inner["x-kubernetes-validations"]] == ["m", "site"]
    assert properties["inners"]["items"]["description"] == "Inner docstring."
    assert properties["labels"]["additionalProperties"] == {"type": "string"}
    assert properties["fixed"] == {
        "type": "string",
        "pattern": "^x$",
        "default": "x",
        "description": "A pattern and a default.",
    }
    assert "required" not in schema


class Undescribed(BaseModel):
    name: str


class Unioned(BaseModel):
    value: int | str = Field(description="Either.")


class FreeForm(BaseModel):
    blob: dict[str, Any] = Field(description="Anything.")


class Untyped(BaseModel):
    value: Any = Field(description="Anything at all.")


class Recursive(BaseModel):
    child: Recursive | None = Field(default=None, description="Itself.")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Undescribed, "Undescribed.name: every field needs a description"),
        (Unioned, "unions are not structural"),
        (FreeForm, "free-form objects need an explicit value type"),
        (Untyped, "Untyped.value: no type"),
        (Recursive, "recursive model"),
    ],
)
def test_converter_refuses_what_a_crd_cannot_express(model: type[BaseModel], message: str):
    with pytest.raises(SchemaError, match=message):
        structural_schema(model)


def test_descriptions_can_be_optional_for_other_uses():
    assert structural_schema(Undescribed, require_descriptions=False)["properties"]["name"] == {
        "type": "string"
    }


def test_exclusive_bounds_are_written_as_openapi_v3_0_has_them():
    class Limited(BaseModel):
        rate: float = Field(gt=0, lt=1000, description="calls a second")

    rate = structural_schema(Limited)["properties"]["rate"]
    assert {k: rate[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")} == {
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1000,
        "exclusiveMaximum": True,
    }
