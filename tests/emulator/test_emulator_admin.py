"""The admin API: state, call log without secrets, counters, rules, clock, out-of-band deletion."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from alibabacloud_eci20180808 import models
from eci_datacache_emulator.admin_client import EmulatorAdmin, EmulatorAdminError
from emulator_support import ONE_HOUR, OTHER_REGION, REGION, create_request, describe, describe_one

SECRETS = {
    "accessToken": "hf_TOPSECRET1",
    "akId": "LTAI_TOPSECRET2",
    "akSecret": "TOPSECRET3",
    "#8#password": "TOPSECRET4",
}


def secret_source() -> models.CreateDataCacheRequestDataSource:
    return models.CreateDataCacheRequestDataSource(
        type="OSS", options={"bucket": "b", "url": "oss-cn-hangzhou.aliyuncs.com", **SECRETS}
    )


def test_secrets_never_come_back(client, admin, emulator):
    data_cache_id = client.create_data_cache(create_request(data_source=secret_source())).body.data_cache_id
    admin.advance(ONE_HOUR)
    client.update_data_cache(
        models.UpdateDataCacheRequest(
            region_id=REGION,
            data_cache_id=data_cache_id,
            data_source=models.UpdateDataCacheRequestDataSource(
                type="OSS", options={"bucket": "b", **SECRETS}
            ),
        )
    )
    seen = [
        json.dumps(describe(client).to_map()),
        json.dumps(admin.state()),
        json.dumps(admin.calls()),
        json.dumps(emulator.state.to_json()),
    ]
    for text in seen:
        assert "TOPSECRET" not in text
    options = json.loads(describe_one(client, data_cache_id).data_source.options)
    assert options == {
        "bucket": "b",
        "accessToken": "******",
        "akId": "******",
        "akSecret": "******",
        "password": "******",
    }
    logged = admin.calls(action="CreateDataCache")[0]["params"]
    assert logged["DataSource.Options.accessToken"] == "******"
    assert logged["DataSource.Options.#8#password"] == "******"
    assert logged["DataSource.Options.bucket"] == "b"


def test_v1_call_log_hides_signature_and_access_key(emulator, admin):
    from emulator_support import make_client

    describe(make_client(emulator.endpoint, v1=True))
    params = admin.calls()[-1]["params"]
    assert params == {"RegionId": REGION}


def test_call_log_filters_and_counters(client, admin):
    client.create_data_cache(create_request())
    client.create_data_cache(create_request(region_id=OTHER_REGION))
    describe(client)
    with pytest.raises(Exception):  # noqa: B017 - any SDK error will do
        client.create_data_cache(create_request(bucket="eci-system"))

    assert [call["action"] for call in admin.calls(region=OTHER_REGION)] == ["CreateDataCache"]
    creates = admin.calls(action="CreateDataCache")
    assert [call["outcome"] for call in creates] == ["Success", "Success", "InvalidParameter"]
    assert [call["status"] for call in creates] == [200, 200, 400]
    assert all(call["latency_ms"] >= 0 and call["time"].endswith("Z") for call in creates)
    assert admin.counters() == {
        "CreateDataCache": {"Success": 2, "InvalidParameter": 1},
        "DescribeDataCaches": {"Success": 1},
    }


def test_state_dump_and_reset(client, admin):
    data_cache_id = client.create_data_cache(
        create_request(client_token="tok", tag=[models.CreateDataCacheRequestTag(key="k", value="v")])
    ).body.data_cache_id
    state = admin.state()
    cache = state["regions"][REGION]["caches"][0]
    assert cache["DataCacheId"] == data_cache_id
    assert cache["Tags"] == [{"Key": "k", "Value": "v"}]
    assert cache["ClientTokens"] == [{"Action": "CreateDataCache", "ClientToken": "tok"}]
    assert cache["DataSizeGiB"] >= 1 and cache["Status"] == "Creating"
    assert admin.caches(OTHER_REGION) == []

    admin.add_rule("fail", path="/x")
    admin.set_faults(fault_latency_ms=1)
    admin.reset()
    assert admin.caches() == [] and admin.calls() == [] and admin.rules() == []
    assert admin.faults()["fault_latency_ms"] == 0
    assert describe(client).total_count == 0


def test_rule_fails_a_cache_by_path_with_its_message(client, admin):
    rule = admin.add_rule("fail", "disk quota exceeded on the builder", path="/models/bad")
    bad = client.create_data_cache(create_request("/models/bad")).body.data_cache_id
    good = client.create_data_cache(create_request("/models/good")).body.data_cache_id
    admin.advance(ONE_HOUR)
    failed = describe_one(client, bad)
    assert failed.status == "Failed"
    assert failed.events[-1].message == "disk quota exceeded on the builder"
    assert describe_one(client, good).status == "Available"
    assert admin.rules() == [rule]


def test_rule_added_after_create_by_id_and_succeed_overrides_builtin_failure(client, admin):
    doomed = client.create_data_cache(create_request()).body.data_cache_id
    rescued = client.create_data_cache(
        create_request(
            data_source=models.CreateDataCacheRequestDataSource(type="URL", options={"url": "https://x/fail"})
        )
    ).body.data_cache_id
    admin.add_rule("fail", dataCacheId=doomed)
    admin.add_rule("succeed", match={"dataCacheId": rescued})
    admin.advance(ONE_HOUR)
    assert describe_one(client, doomed).status == "Failed"
    assert describe_one(client, rescued).status == "Available"


def test_rule_for_updates_only_and_limited_times(client, admin):
    data_cache_id = client.create_data_cache(create_request(name="n")).body.data_cache_id
    admin.add_rule("fail", "update broke", name="n", operations=["update"], times=1)
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Available"

    update = models.UpdateDataCacheRequest(region_id=REGION, data_cache_id=data_cache_id, size=30)
    client.update_data_cache(update)
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "UpdateFailed"
    assert admin.rules() == []  # used up
    client.update_data_cache(update)  # retry from UpdateFailed rebuilds
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Available"


def test_stall_rule_keeps_loading_until_removed(client, admin):
    rule = admin.add_rule("stall", path="/slow")
    data_cache_id = client.create_data_cache(create_request("/slow")).body.data_cache_id
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Loading"
    admin.remove_rule(rule["id"])
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Available"


def test_copy_can_be_failed_by_rule(client, admin):
    source = client.create_data_cache(create_request()).body.data_cache_id
    admin.advance(ONE_HOUR)
    admin.add_rule("fail", "cross-region copy failed", regionId=OTHER_REGION, operations=["copy"])
    copied = client.copy_data_cache(
        models.CopyDataCacheRequest(
            region_id=REGION, data_cache_id=source, destination_region_id=OTHER_REGION
        )
    ).body.data_cache_id
    admin.advance(ONE_HOUR)
    failed = describe_one(client, copied, OTHER_REGION)
    assert (failed.status, failed.events[-1].message) == ("Failed", "cross-region copy failed")


def test_delete_out_of_band(client, admin):
    data_cache_id = client.create_data_cache(create_request()).body.data_cache_id
    assert admin.delete_out_of_band(data_cache_id) == {"deleted": data_cache_id, "region": REGION}
    assert describe(client).data_caches == []
    assert admin.state()["removed"][-1]["Reason"] == "deleted out of band"
    with pytest.raises(EmulatorAdminError) as caught:
        admin.delete_out_of_band(data_cache_id)
    assert caught.value.status == 404


def test_clock(admin):
    before = admin.clock()
    after = admin.advance(90)
    assert after["offsetSeconds"] == before["offsetSeconds"] + 90
    with pytest.raises(EmulatorAdminError):
        admin.advance(-1)


def test_bad_admin_requests_answer_json(emulator, admin):
    for bad_rule in (
        {"outcome": "fail"},
        {"match": {"colour": "red"}},
        {"match": {"path": "/p"}, "outcome": "x"},
    ):
        response = requests.post(f"{emulator.admin_url}/rules", json=bad_rule, timeout=5)
        assert response.status_code == 400 and "error" in response.json()
    not_json = requests.post(f"{emulator.admin_url}/clock/advance", data="{", timeout=5)
    assert not_json.status_code == 400 and not_json.json()["error"]
    with pytest.raises(EmulatorAdminError) as caught:
        admin.remove_rule("rule-404")
    assert caught.value.status == 404


def test_phase_durations_set_at_run_time_apply_to_phases_begun_after(admin: EmulatorAdmin) -> None:
    before = admin.durations()
    try:
        answer = admin.set_durations(creating=500, loading=1000)
        assert (answer["creating"], answer["loading"], answer["timeScale"]) == (
            500,
            1000,
            before["timeScale"],
        )
        with pytest.raises(EmulatorAdminError, match="unknown phases warming"):
            admin.set_durations(warming=3)
        with pytest.raises(EmulatorAdminError, match="'creating' must be a non-negative number"):
            admin.set_durations(creating=-1)
    finally:
        admin.set_durations(creating=before["creating"], loading=before["loading"])
    assert admin.durations() == before


def test_the_admin_api_answers_this_machine_only() -> None:
    """Loopback, or a peer calling from the very address it called (this machine, to an emulator
    bound where a local cluster's pods reach it); never a pod's own address."""
    from types import SimpleNamespace

    from eci_datacache_emulator.admin import _from_this_machine

    def request(peer: str, own: str) -> Any:
        transport = SimpleNamespace(get_extra_info=lambda key: (own, 8080) if key == "sockname" else None)
        return SimpleNamespace(remote=peer, transport=transport)

    assert _from_this_machine(request("127.0.0.1", "127.0.0.1"))
    assert _from_this_machine(request("10.200.0.1", "10.200.0.1"))
    assert not _from_this_machine(request("10.200.0.7", "10.200.0.1"))  # a pod of the cluster
    assert not _from_this_machine(request("not an address", "10.200.0.1"))
