"""What the CRDs refuse at apply, as pure logic: the tag limits count the operator's own tags,
long object names are fitted to ECI's 128 characters, the rules carry reasons the apiserver
knows, and the data source rules ask for what the emulator needs to load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from eci_datacache_emulator.outcomes import REPO_SOURCES as EMULATOR_REPO_SOURCES
from eci_datacache_emulator.outcomes import assess_source

from datacache_operator.api.common import (
    MAX_CLOUD_NAME_LENGTH,
    MAX_CLOUD_TAGS,
    MAX_TAG_VALUE_LENGTH,
    OWNER_NAME_TAG,
    OWNER_TAG_KEYS,
    fit_name,
)
from datacache_operator.api.crds import all_crds
from datacache_operator.api.datacache import REPO_SOURCES, REQUIRED_OPTIONS, DataCacheSpec, DataSourceType
from datacache_operator.api.replication import COPY_TAG_KEYS
from datacache_operator.controllers.datacache import desired_cache
from datacache_operator.reconcile.common import cloud_name, owner_tags
from datacache_operator.reconcile.ownership import Identity
from datacache_operator.reconcile.replication import copy_tags
from datacache_operator.settings import OperatorSettings

# The longest name Kubernetes allows a custom object (a DNS subdomain).
LONGEST_OBJECT_NAME = "a" * 253
LONGEST_OWNER = Identity(cluster="c" * 128, namespace="n" * 63, name=LONGEST_OBJECT_NAME, uid="0" * 36)
APISERVER_REASONS = {"FieldValueRequired", "FieldValueForbidden", "FieldValueInvalid", "FieldValueDuplicate"}


def crd(plural: str) -> dict[str, Any]:
    return next(c for c in all_crds() if c["spec"]["names"]["plural"] == plural)


def spec_schema(plural: str) -> dict[str, Any]:
    return crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def rules(node: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {rule["rule"]: rule for rule in node.get("x-kubernetes-validations", ())}


def all_rules(node: dict[str, Any]) -> Iterator[dict[str, str]]:
    yield from node.get("x-kubernetes-validations", ())
    for sub in node.get("properties", {}).values():
        yield from all_rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from all_rules(node[key])


def full_tags(count: int) -> dict[str, str]:
    """`count` tags with keys and values as long as ECI allows."""
    return {f"{index:03d}".ljust(128, "k"): "v" * MAX_TAG_VALUE_LENGTH for index in range(count)}


@pytest.mark.parametrize("plural", ["datacaches", "datacachereplications"])
def test_every_rule_has_a_message_and_a_reason_the_apiserver_knows(plural: str):
    schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found = list(all_rules(schema))
    assert found
    for rule in found:
        assert rule["message"], rule
        assert rule.get("reason", "FieldValueInvalid") in APISERVER_REASONS, rule


@pytest.mark.parametrize(
    ("plural", "tags_node", "operator_tags"),
    [
        ("datacaches", lambda spec: spec["properties"]["tags"], OWNER_TAG_KEYS),
        (
            "datacachereplications",
            lambda spec: spec["properties"]["destinations"]["items"]["properties"]["tags"],
            COPY_TAG_KEYS,
        ),
    ],
    ids=["datacache", "destination"],
)
def test_the_tag_limit_leaves_room_for_the_operators_own_tags(plural, tags_node, operator_tags):
    limit = MAX_CLOUD_TAGS - len(operator_tags)
    count_rule = rules(tags_node(spec_schema(plural)))[f"size(self) <= {limit}"]
    assert f"at most {limit} tags" in count_rule["message"]
    assert all(key in count_rule["message"] for key in operator_tags)


def test_the_operator_tags_are_the_ones_the_limits_count():
    assert set(owner_tags("cluster", "uid", "ns", "name")) == set(OWNER_TAG_KEYS)
    assert set(copy_tags({}, LONGEST_OWNER, "cn-beijing")) == set(COPY_TAG_KEYS)
    assert len(COPY_TAG_KEYS) == len(OWNER_TAG_KEYS) + 1 == 5


def test_the_most_a_datacache_may_hold_fits_eci():
    spec = DataCacheSpec.model_validate(
        {"path": "/m", "dataSource": {"type": "URL", "options": {"url": "u"}}, "tags": full_tags(16)}
    )
    meta = {"uid": "0" * 36, "namespace": "n" * 63, "name": LONGEST_OBJECT_NAME}
    desired = desired_cache(spec, meta, OperatorSettings(cluster_id="c" * 128), None)
    assert len(desired.tags) == MAX_CLOUD_TAGS
    assert all(len(key) <= 128 and len(value) <= MAX_TAG_VALUE_LENGTH for key, value in desired.tags.items())
    assert len(desired.name) == MAX_CLOUD_NAME_LENGTH


def test_the_most_a_destination_may_hold_fits_eci():
    tags = copy_tags(full_tags(15), LONGEST_OWNER, "cn-beijing")
    assert len(tags) == MAX_CLOUD_TAGS
    assert all(len(value) <= MAX_TAG_VALUE_LENGTH for value in tags.values())


def test_names_that_fit_are_kept_and_longer_ones_get_a_digest():
    assert fit_name("qwen", 128) == "qwen"
    assert fit_name("q" * 128, 128) == "q" * 128
    long_one, other = "m" * 200 + "-one", "m" * 200 + "-two"
    fitted = fit_name(long_one, 128)
    assert len(fitted) == 128 and re.fullmatch("m{117}-[0-9a-f]{10}", fitted)
    assert fit_name(long_one, 128) == fitted  # the same name, the same cloud name
    assert fit_name(other, 128) != fitted  # same head, still apart
    assert cloud_name(LONGEST_OBJECT_NAME) == fit_name(LONGEST_OBJECT_NAME, MAX_CLOUD_NAME_LENGTH)
    assert owner_tags("c", "u", "ns", LONGEST_OBJECT_NAME)[OWNER_NAME_TAG] == fit_name(
        LONGEST_OBJECT_NAME, 128
    )


def test_an_explicit_name_is_sent_as_it_is():
    spec = DataCacheSpec.model_validate({"path": "/m", "name": "Qwen 2.5", "dataCacheId": "edc-1"})
    meta = {"uid": "u", "namespace": "ns", "name": LONGEST_OBJECT_NAME}
    assert desired_cache(spec, meta, OperatorSettings(), None).name == "Qwen 2.5"


@pytest.mark.parametrize("source_type", list(DataSourceType))
def test_each_set_of_required_options_is_enough_for_the_emulator(source_type: DataSourceType):
    for keys in REQUIRED_OPTIONS[source_type]:
        options = {key: "HuggingFace/Model" if key == "repoSource" else "x" for key in keys}
        assert assess_source(source_type.value, options).failure is None, options
    assert assess_source(source_type.value, {}).failure is not None


def test_the_repo_sources_are_the_emulators():
    assert REPO_SOURCES == EMULATOR_REPO_SOURCES
