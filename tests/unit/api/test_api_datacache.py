"""DataCache models: parsing specs and kopf bodies, options from Secrets, status output."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml
from pydantic import ValidationError

from datacache_operator.api import (
    DataCache,
    DataCacheSpec,
    DataCacheStatus,
    DataSourceType,
    DeletionPolicy,
    InternetChargeType,
    Isp,
    MissingSecretKeyError,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("datacache-*.yaml"))


def test_minimal_spec_gets_the_schema_defaults():
    spec = DataCacheSpec.model_validate({"path": "/models/x", "dataSource": {"type": "URL"}})
    assert (spec.bucket, spec.size) == (None, 20)  # the bucket: the namespace's own (api.buckets)
    assert spec.region is None and spec.deletion_policy is None and spec.data_cache_id is None
    assert spec.tags == {} and spec.data_source is not None and spec.data_source.options == {}


def test_full_spec_parses_from_camel_case():
    spec = DataCacheSpec.model_validate(
        {
            "region": "cn-hongkong",
            "bucket": "models",
            "path": "/models/qwen",
            "name": "qwen",
            "size": 40,
            "retentionDays": 7,
            "dataSource": {
                "type": "URL",
                "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2.5-7B-Instruct"},
                "secretRef": {"name": "hf", "items": [{"key": "token", "option": "accessToken"}]},
            },
            "netConfig": {
                "securityGroupId": "sg-1",
                "vSwitchId": "vsw-1",
                "eipCreateParam": {"bandwidth": 10, "internetChargeType": "PayByTraffic", "isp": "BGP_PRO"},
            },
            "tags": {"team": "ml"},
            "resourceGroupId": "rg-1",
            "dataCacheId": "edc-1",
            "deletionPolicy": "Retain",
            "someFutureField": "ignored",
        }
    )
    assert spec.retention_days == 7
    assert spec.data_source is not None and spec.data_source.type is DataSourceType.URL
    assert spec.data_source.secret_ref is not None and spec.data_source.secret_ref.name == "hf"
    assert spec.net_config is not None and spec.net_config.v_switch_id == "vsw-1"
    eip = spec.net_config.eip_create_param
    assert eip is not None
    assert (eip.bandwidth, eip.internet_charge_type, eip.isp) == (
        10,
        InternetChargeType.PAY_BY_TRAFFIC,
        Isp.BGP_PRO,
    )
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert spec.data_cache_id == "edc-1" and spec.resource_group_id == "rg-1"


def test_snake_case_names_work_in_python():
    spec = DataCacheSpec(path="/x", retention_days=3, deletion_policy=DeletionPolicy.DELETE)
    assert spec.to_dict() == {
        "path": "/x",
        "size": 20,
        "retentionDays": 3,
        "tags": {},
        "deletionPolicy": "Delete",
    }


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"path": "/x", "size": 0},
        {"path": "/x", "retentionDays": -1},
        {"path": "/x", "dataSource": {"type": "FTP"}},
        {"path": "/x", "deletionPolicy": "Orphan"},
        {"path": "/x", "region": "Hangzhou"},
    ],
)
def test_invalid_specs_fail_in_python_too(spec: dict):
    with pytest.raises(ValidationError):
        DataCacheSpec.model_validate(spec)


def source(**secret_ref):
    return DataCacheSpec.model_validate(
        {
            "path": "/x",
            "dataSource": {
                "type": "OSS",
                "options": {"bucket": "b", "akId": "inline"},
                "secretRef": secret_ref,
            },
        }
    ).data_source


def test_secret_keys_become_options_and_win():
    data_source = source(name="oss")
    secret = {"akId": "id-from-secret", "akSecret": "s3cr3t"}
    assert data_source.resolved_options(secret) == {
        "bucket": "b",
        "akId": "id-from-secret",
        "akSecret": "s3cr3t",
    }
    assert data_source.secret_option_keys(secret) == {"akId", "akSecret"}


def test_secret_items_pick_and_rename_keys():
    data_source = source(name="hf", items=[{"key": "token", "option": "accessToken"}])
    secret = {"token": "hf_abc", "unrelated": "x"}
    assert data_source.resolved_options(secret) == {"bucket": "b", "akId": "inline", "accessToken": "hf_abc"}
    assert data_source.secret_option_keys(secret) == {"accessToken"}


def test_missing_secret_key_names_the_key_not_values():
    data_source = source(name="hf", items=[{"key": "token", "option": "accessToken"}])
    with pytest.raises(MissingSecretKeyError) as raised:
        data_source.resolved_options({"other": "super-secret-value"})
    assert "token" in str(raised.value) and "super-secret-value" not in str(raised.value)


def test_without_secret_ref_options_are_a_copy():
    spec = DataCacheSpec.model_validate(
        {"path": "/x", "dataSource": {"type": "URL", "options": {"url": "u"}}}
    )
    assert spec.data_source is not None
    resolved = spec.data_source.resolved_options({"ignored": "x"})
    resolved["url"] = "changed"
    assert spec.data_source.options == {"url": "u"}
    assert spec.data_source.secret_option_keys() == set()


def test_from_kopf_body():
    body = MappingProxyType(
        {
            "apiVersion": "eci.datacache.dev/v1alpha1",
            "kind": "DataCache",
            "metadata": MappingProxyType(
                {"name": "qwen", "namespace": "ml", "uid": "u-1", "generation": 2, "annotations": {"a": "b"}}
            ),
            "spec": MappingProxyType({"path": "/m", "dataSource": {"type": "URL"}}),
            "status": {"dataCacheId": "edc-1", "conditions": [], "kopf": {"progress": {}}},
        }
    )
    obj = DataCache.from_body(body)
    assert (obj.metadata.name, obj.metadata.namespace, obj.metadata.uid, obj.metadata.generation) == (
        "qwen",
        "ml",
        "u-1",
        2,
    )
    assert obj.spec.path == "/m" and obj.status.data_cache_id == "edc-1"


def test_from_body_without_status():
    obj = DataCache.from_body({"metadata": {"name": "x"}, "spec": {"path": "/x"}})
    assert obj.status == DataCacheStatus()


def test_status_dumps_to_the_crd_shape():
    status = DataCacheStatus(
        observed_generation=2,
        data_cache_id="edc-1",
        status="Available",
        creation_time=datetime.fromisoformat("2023-06-16T02:43Z"),
        last_sync_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert status.to_dict() == {
        "observedGeneration": 2,
        "dataCacheId": "edc-1",
        "status": "Available",
        "creationTime": "2023-06-16T02:43:00Z",
        "lastSyncTime": "2026-01-02T03:04:05Z",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse(example: Path):
    documents = [d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "DataCache"]
    assert documents
    for document in documents:
        DataCache.from_body(document)
