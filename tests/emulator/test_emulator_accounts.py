"""Several accounts, RAM roles and STS: through the official ECI SDK and the credentials
library's own ``ram_role_arn`` provider, unmodified, over the emulator's HTTPS port.

The credentials library calls STS over https only and trusts the system's CAs plus certifi's;
``SSL_CERT_FILE`` (read by OpenSSL when a TLS context loads its default paths) makes it trust
the emulator's CA. Its TLS sessions are cached per host and port for the whole process, so every
emulator here shares one CA directory (``tls_dir``): a port reused by a later emulator is still
trusted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.models import Config as CredentialConfig
from alibabacloud_eci20180808 import models
from alibabacloud_eci20180808.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException
from eci_datacache_emulator import AccountConfig, Emulator, EmulatorConfig, RoleConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin
from eci_datacache_emulator.cli import accounts_from
from eci_datacache_emulator.signature import format_timestamp, v1_signature, v1_string_to_sign
from emulator_support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ONE_HOUR,
    OTHER_REGION,
    REGION,
    create_request,
    describe,
    make_client,
)

ACCOUNT_A = "1000000000000001"  # the default account: ACCESS_KEY_ID's
ACCOUNT_B = "1000000000000002"
ACCOUNT_C = "1000000000000003"
KEY_B, SECRET_B = "key-of-b", "secret-of-b"
KEY_B2, SECRET_B2 = "second-key-of-b", "second-secret-of-b"
KEY_C, SECRET_C = "key-of-c", "secret-of-c"
ROLE_B = f"acs:ram::{ACCOUNT_B}:role/eci-operator"  # trusts A: a namespace's cross-account role
ROLE_B_PRIVATE = f"acs:ram::{ACCOUNT_B}:role/private"  # trusts only B


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("emulator-tls")


@pytest.fixture
def accounts_config(tls_dir: Path) -> EmulatorConfig:
    return EmulatorConfig(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        account_id=ACCOUNT_A,
        accounts=[
            AccountConfig(
                ACCOUNT_B,
                {KEY_B: SECRET_B, KEY_B2: SECRET_B2},
                roles=[
                    RoleConfig("eci-operator", trusted_accounts=(ACCOUNT_A,)),
                    RoleConfig("private", max_session_duration=7200),
                ],
            ),
            AccountConfig(ACCOUNT_C, {KEY_C: SECRET_C}),
        ],
        tls_dir=tls_dir,
        seed=11,
    )


@pytest.fixture
def emu(accounts_config: EmulatorConfig, monkeypatch) -> Iterator[Emulator]:
    with Emulator(accounts_config).in_thread() as running:
        monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_file))
        yield running


@pytest.fixture
def emu_admin(emu: Emulator) -> EmulatorAdmin:
    return EmulatorAdmin(emu.admin_url)


def role_credentials(
    emu: Emulator,
    role_arn: str = ROLE_B,
    *,
    access_key_id: str = ACCESS_KEY_ID,
    access_key_secret: str = ACCESS_KEY_SECRET,
    duration: int | None = None,
) -> CredentialClient:
    """The credentials library's own ram_role_arn provider, pointed at the emulator's STS."""
    return CredentialClient(
        CredentialConfig(
            type="ram_role_arn",
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            role_arn=role_arn,
            role_session_name="namespace-team-b",
            role_session_expiration=duration,
            sts_endpoint=emu.sts_endpoint,
        )
    )


def eci_client(emu: Emulator, credential: CredentialClient) -> Client:
    return Client(openapi_models.Config(credential=credential, endpoint=emu.endpoint, protocol="http"))


def error_of(call) -> ClientException:
    with pytest.raises(ClientException) as caught:
        call()
    return caught.value


def signed_sts_get(
    emu: Emulator, params: dict[str, str], *, key: str = ACCESS_KEY_ID, secret: str = ACCESS_KEY_SECRET
) -> requests.Response:
    """An AssumeRole the way the credentials library sends it (GET, V1), for what it never sends."""
    query = {
        "Action": "AssumeRole",
        "Format": "JSON",
        "Version": "2015-04-01",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "Timestamp": format_timestamp(time.time()),
        "SignatureNonce": uuid.uuid4().hex,
        "AccessKeyId": key,
        "RoleSessionName": "raw-session",
        **params,
    }
    query["Signature"] = v1_signature(secret, v1_string_to_sign("GET", query))
    return requests.get(
        f"https://{emu.sts_endpoint}/", params=query, verify=str(emu.ca_file), timeout=10, proxies={}
    )


# ---- accounts ---------------------------------------------------------------------------


def test_accounts_never_see_each_others_caches(emu, emu_admin):
    a = make_client(emu.endpoint)
    b = make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
    b_too = make_client(emu.endpoint, access_key_id=KEY_B2, access_key_secret=SECRET_B2)
    a_cache = a.create_data_cache(create_request("/models/a")).body.data_cache_id
    b_cache = b.create_data_cache(create_request("/models/b")).body.data_cache_id
    emu_admin.advance(ONE_HOUR)

    assert [c.data_cache_id for c in describe(a).data_caches] == [a_cache]
    assert [c.data_cache_id for c in describe(b).data_caches] == [b_cache]
    assert [c.data_cache_id for c in describe(b_too).data_caches] == [b_cache]  # one account, two keys
    assert describe(b, data_cache_id=[a_cache]).total_count == 0
    assert describe(b, path="/models/a").total_count == 0

    for call in (
        lambda: b.update_data_cache(
            models.UpdateDataCacheRequest(region_id=REGION, data_cache_id=a_cache, name="stolen")
        ),
        lambda: b.delete_data_cache(models.DeleteDataCacheRequest(region_id=REGION, data_cache_id=a_cache)),
        lambda: b.copy_data_cache(
            models.CopyDataCacheRequest(
                region_id=REGION, data_cache_id=a_cache, destination_region_id=OTHER_REGION
            )
        ),
    ):
        error = error_of(call)
        assert (error.code, error.status_code) == ("DataCache.NotFound", 404)
    assert describe(a).data_caches[0].status == "Available"
    assert describe(a).data_caches[0].name is None

    by_id = {cache["DataCacheId"]: cache["AccountId"] for cache in emu_admin.caches()}
    assert by_id == {a_cache: ACCOUNT_A, b_cache: ACCOUNT_B}
    assert [cache["DataCacheId"] for cache in emu_admin.caches(account=ACCOUNT_B)] == [b_cache]
    assert {call["account"] for call in emu_admin.calls(action="CreateDataCache")} == {ACCOUNT_A, ACCOUNT_B}


def test_calls_per_second_counts_each_accounts_calls_in_each_second_all_regions_together(emu, emu_admin):
    a = make_client(emu.endpoint)
    b = make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
    b_too = make_client(emu.endpoint, access_key_id=KEY_B2, access_key_secret=SECRET_B2)
    stranger = make_client(emu.endpoint, access_key_id="no-such-key", access_key_secret="x")
    for _ in range(3):
        describe(a)
        describe(a, OTHER_REGION)
    describe(b)
    describe(b_too, OTHER_REGION)  # another key, another region: still account B
    error_of(lambda: describe(stranger))

    counts = emu_admin.calls_per_second()
    log = emu_admin.calls()
    assert {account: sum(seconds.values()) for account, seconds in counts.items()} == {
        ACCOUNT_A: 6,
        ACCOUNT_B: 2,
        "": 1,  # refused before its signature was checked: no account
    }
    for account, seconds in counts.items():
        assert seconds == dict(Counter(c["time"] for c in log if (c["account"] or "") == account))
    assert emu_admin.calls_per_second(account=ACCOUNT_B) == {ACCOUNT_B: counts[ACCOUNT_B]}
    assert sum(emu_admin.calls_per_second(region=OTHER_REGION)[ACCOUNT_A].values()) == 3


def test_client_tokens_and_quota_are_per_account(accounts_config):
    accounts_config.quota = 1
    with Emulator(accounts_config).in_thread() as emu:
        a = make_client(emu.endpoint)
        c = make_client(emu.endpoint, access_key_id=KEY_C, access_key_secret=SECRET_C)
        first = a.create_data_cache(create_request("/x", client_token="same-token")).body.data_cache_id
        # The same token in another account is another request; its quota is its own.
        other = c.create_data_cache(create_request("/x", client_token="same-token")).body.data_cache_id
        assert other != first
        error = error_of(lambda: a.create_data_cache(create_request("/y")))
        assert error.code == "QuotaExceeded"


def test_flow_control_counts_all_keys_of_an_account_together(accounts_config):
    accounts_config.rate_limit = 1  # one call a second, a burst of one
    with Emulator(accounts_config).in_thread() as emu:
        b = make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
        b_too = make_client(emu.endpoint, access_key_id=KEY_B2, access_key_secret=SECRET_B2)
        describe(b)
        with pytest.raises(ThrottlingException) as caught:
            describe(b_too)
        assert caught.value.code == "Throttling.User"
        describe(make_client(emu.endpoint))  # account A has its own budget


def test_state_file_keeps_each_accounts_caches(accounts_config, tmp_path):
    accounts_config.state_file = tmp_path / "emulator.json"
    with Emulator(accounts_config).in_thread() as first:
        a_cache = make_client(first.endpoint).create_data_cache(create_request("/a")).body.data_cache_id
        b = make_client(first.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
        b_cache = b.create_data_cache(create_request("/b")).body.data_cache_id
    with Emulator(accounts_config).in_thread() as second:
        assert [c.data_cache_id for c in describe(make_client(second.endpoint)).data_caches] == [a_cache]
        b = make_client(second.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
        assert [c.data_cache_id for c in describe(b).data_caches] == [b_cache]


def test_a_one_account_state_file_loads_into_the_default_account(emulator_config, tmp_path):
    emulator_config.state_file = tmp_path / "emulator.json"
    with Emulator(emulator_config).in_thread() as first:
        cache = make_client(first.endpoint).create_data_cache(create_request("/a")).body.data_cache_id
        (tmp_path / "v1.json").write_text(json.dumps(first.state.to_json()))
    emulator_config.state_file = tmp_path / "v1.json"
    with Emulator(emulator_config).in_thread() as second:
        assert [c.data_cache_id for c in describe(make_client(second.endpoint)).data_caches] == [cache]


# ---- STS --------------------------------------------------------------------------------


def test_assume_role_through_the_credentials_library_reaches_the_roles_account(emu, emu_admin):
    b = make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
    b_cache = b.create_data_cache(create_request("/models/b")).body.data_cache_id
    make_client(emu.endpoint).create_data_cache(create_request("/models/a"))

    credential = role_credentials(emu)
    temporary = credential.get_credential()
    assert temporary.access_key_id.startswith("STS.")
    assert temporary.security_token
    as_role = eci_client(emu, credential)
    assert [c.data_cache_id for c in describe(as_role).data_caches] == [b_cache]
    made = as_role.create_data_cache(create_request("/models/by-role")).body.data_cache_id
    assert emu_admin.cache(made)["AccountId"] == ACCOUNT_B
    assert {c.data_cache_id for c in describe(b).data_caches} == {b_cache, made}

    assume = emu_admin.calls(action="AssumeRole")
    assert [(call["outcome"], call["account"], call["signature"]) for call in assume] == [
        ("Success", ACCOUNT_A, "V1")
    ]
    assert assume[0]["params"]["RoleArn"] == ROLE_B
    [sts_key] = [
        key
        for account in emu_admin.accounts()
        if account["AccountId"] == ACCOUNT_B
        for key in account["AccessKeys"]
        if key["Type"] == "STS"
    ]
    assert sts_key["AccessKeyId"] == temporary.access_key_id
    assert (sts_key["RoleArn"], sts_key["AssumedByAccount"], sts_key["Expired"]) == (ROLE_B, ACCOUNT_A, False)
    text = str(emu_admin.accounts()) + str(emu_admin.calls())
    assert temporary.access_key_secret not in text and temporary.security_token not in text


def test_sts_answer_has_the_shape_sts_gives(emu):
    before = time.time()
    response = signed_sts_get(emu, {"RoleArn": ROLE_B, "DurationSeconds": "1200"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"RequestId", "AssumedRoleUser", "Credentials"}
    assert set(body["Credentials"]) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
    expiration = time.mktime(time.strptime(body["Credentials"]["Expiration"], "%Y-%m-%dT%H:%M:%SZ"))
    expiration -= time.timezone
    assert before + 1200 - 2 <= expiration <= time.time() + 1200
    user = body["AssumedRoleUser"]
    assert user["Arn"] == f"{ROLE_B}/raw-session"
    assert user["AssumedRoleId"].endswith(":raw-session") and user["AssumedRoleId"].split(":")[0].isdigit()


def test_temporary_keys_need_their_token(emu):
    temporary = role_credentials(emu).get_credential()

    def static(token):
        return make_client(
            emu.endpoint,
            access_key_id=temporary.access_key_id,
            access_key_secret=temporary.access_key_secret,
            security_token=token,
        )

    assert describe(static(temporary.security_token)).total_count == 0
    assert error_of(lambda: describe(static(None))).code == "InvalidSecurityToken.Malformed"
    assert error_of(lambda: describe(static("CAISnot-the-token"))).code == (
        "InvalidSecurityToken.MismatchWithAccessKey"
    )


def test_expired_token_is_refused_while_the_provider_still_trusts_it(emu, emu_admin):
    """The provider judges staleness by its own wall clock (Expiration - 15 min): with an hour's
    session it keeps its keys when only the emulator's clock moved, and ECI refuses them."""
    as_role = eci_client(emu, role_credentials(emu, duration=3600))
    assert describe(as_role).total_count == 0
    emu_admin.advance(3600)
    error = error_of(lambda: describe(as_role))
    assert (error.code, error.status_code) == ("InvalidSecurityToken.Expired", 400)
    assert len(emu_admin.calls(action="AssumeRole")) == 1


def test_provider_fetches_new_keys_across_expiry(emu, emu_admin):
    """With DurationSeconds 900 (the least the provider asks for) its keys are stale at once by
    its rule (Expiration - 15 min), so it assumes the role again before a call: past the
    emulator's Expiration the next ECI call succeeds with new keys, and the old ones are expired."""
    credential = role_credentials(emu, duration=900)
    as_role = eci_client(emu, credential)
    first = credential.get_credential()
    describe(as_role)
    emu_admin.advance(901)
    old = make_client(
        emu.endpoint,
        access_key_id=first.access_key_id,
        access_key_secret=first.access_key_secret,
        security_token=first.security_token,
    )
    assert error_of(lambda: describe(old)).code == "InvalidSecurityToken.Expired"
    assert describe(as_role).total_count == 0
    assert credential.get_credential().access_key_id != first.access_key_id
    calls = emu_admin.calls()
    last_describe = max(i for i, call in enumerate(calls) if call["action"] == "DescribeDataCaches")
    assert calls[last_describe]["outcome"] == "Success"
    assert calls[last_describe - 1]["action"] == "AssumeRole"  # fetched right before the call


def test_sts_minimum_is_configurable_for_short_sessions(accounts_config, monkeypatch):
    accounts_config.sts_min_duration_seconds = 60
    with Emulator(accounts_config).in_thread() as emu:
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_file))
        response = signed_sts_get(emu, {"RoleArn": ROLE_B, "DurationSeconds": "60"})
        assert response.status_code == 200, response.json()
        body = signed_sts_get(emu, {"RoleArn": ROLE_B, "DurationSeconds": "59"}).json()
        assert (body["Code"], body["Message"]) == (
            "InvalidParameter.DurationSeconds",
            "The Min/Max value of DurationSeconds is 60s/3600s.",
        )


# (AssumeRole parameters, key, secret) -> (status, code)
STS_REFUSALS = {
    "unknown role": ({"RoleArn": f"acs:ram::{ACCOUNT_B}:role/nobody"}, KEY_C, SECRET_C, 404, "EntityNotExist.Role"),
    "unknown account": ({"RoleArn": "acs:ram::1999999999999999:role/x"}, KEY_C, SECRET_C, 404, "EntityNotExist.Role"),
    "not trusted": ({"RoleArn": ROLE_B}, KEY_C, SECRET_C, 403, "NoPermission"),
    "trusts only its account": ({"RoleArn": ROLE_B_PRIVATE}, ACCESS_KEY_ID, ACCESS_KEY_SECRET, 403, "NoPermission"),
    "malformed arn": ({"RoleArn": f"acs:ram::{ACCOUNT_B}:user/x"}, KEY_C, SECRET_C, 400, "InvalidParameter.RoleArn"),
    "no arn": ({}, KEY_C, SECRET_C, 400, "MissingRoleArn"),
    "too short": ({"RoleArn": ROLE_B, "DurationSeconds": "899"}, ACCESS_KEY_ID, ACCESS_KEY_SECRET, 400, "InvalidParameter.DurationSeconds"),
    "too long": ({"RoleArn": ROLE_B, "DurationSeconds": "3601"}, ACCESS_KEY_ID, ACCESS_KEY_SECRET, 400, "InvalidParameter.DurationSeconds"),
    "session name": ({"RoleArn": ROLE_B, "RoleSessionName": "a b"}, ACCESS_KEY_ID, ACCESS_KEY_SECRET, 400, "InvalidParameter.RoleSessionName"),
    "policy grammar": ({"RoleArn": ROLE_B, "Policy": "{not json"}, ACCESS_KEY_ID, ACCESS_KEY_SECRET, 400, "InvalidParameter.PolicyGrammar"),
    "wrong secret": ({"RoleArn": ROLE_B}, ACCESS_KEY_ID, "not-the-secret", 400, "SignatureDoesNotMatch"),
    "unknown key": ({"RoleArn": ROLE_B}, "nobody", "x", 404, "InvalidAccessKeyId.NotFound"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STS_REFUSALS), ids=list(STS_REFUSALS))
def test_assume_role_refusals_answer_as_sts(emu, case):
    params, key, secret, status, code = STS_REFUSALS[case]
    response = signed_sts_get(emu, params, key=key, secret=secret)
    body = response.json()
    assert (response.status_code, body["Code"]) == (status, code)
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["HostId"] == "sts.aliyuncs.com"


def test_role_max_session_duration_allows_longer_sessions(emu):
    response = signed_sts_get(
        emu, {"RoleArn": ROLE_B_PRIVATE, "DurationSeconds": "7200"}, key=KEY_B, secret=SECRET_B
    )
    assert response.status_code == 200, response.json()


def test_provider_with_a_wrong_secret_is_refused_without_leaking_it(emu):
    credential = role_credentials(emu, access_key_secret="the-wrong-secret-XYZ")
    with pytest.raises(CredentialException) as caught:
        credential.get_credential()
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert "the-wrong-secret-XYZ" not in str(caught.value)


def test_sts_is_served_over_https_with_the_printed_ca(emu):
    assert emu.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{emu.sts_endpoint}/_emulator/health", timeout=10, verify=True, proxies={})
    health = requests.get(
        f"https://{emu.tls_endpoint}/_emulator/health", timeout=10, verify=str(emu.ca_file), proxies={}
    )
    assert health.json()["ok"] is True


# ---- disabled and revoked keys -------------------------------------------------------------


def test_disabled_and_revoked_keys_answer_the_gateways_codes(emu, emu_admin):
    b = make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B)
    describe(b)
    emu_admin.disable_key(KEY_B)
    error = error_of(lambda: describe(b))
    assert (error.code, error.status_code) == ("InvalidAccessKeyId.Inactive", 400)
    with pytest.raises(CredentialException) as caught:
        role_credentials(
            emu, ROLE_B_PRIVATE, access_key_id=KEY_B, access_key_secret=SECRET_B
        ).get_credential()
    assert "InvalidAccessKeyId.Inactive" in str(caught.value)
    emu_admin.enable_key(KEY_B)
    describe(b)
    emu_admin.revoke_key(KEY_B)
    error = error_of(lambda: describe(b))
    assert (error.code, error.status_code) == ("InvalidAccessKeyId.NotFound", 404)
    # The account's other key still works, and a key added now does too.
    describe(make_client(emu.endpoint, access_key_id=KEY_B2, access_key_secret=SECRET_B2))
    emu_admin.add_key(ACCOUNT_B, "rotated-key", "rotated-secret")
    describe(make_client(emu.endpoint, access_key_id="rotated-key", access_key_secret="rotated-secret"))
    assert "rotated-secret" not in str(emu_admin.accounts())


def test_a_revoked_sts_key_is_gone_and_reset_brings_back_the_configured_keys(emu, emu_admin):
    temporary = role_credentials(emu).get_credential()
    static = make_client(
        emu.endpoint,
        access_key_id=temporary.access_key_id,
        access_key_secret=temporary.access_key_secret,
        security_token=temporary.security_token,
    )
    describe(static)
    emu_admin.revoke_key(temporary.access_key_id)
    assert error_of(lambda: describe(static)).code == "InvalidAccessKeyId.NotFound"
    emu_admin.revoke_key(KEY_B)
    emu_admin.reset()
    describe(make_client(emu.endpoint, access_key_id=KEY_B, access_key_secret=SECRET_B))


# ---- configuration ------------------------------------------------------------------------


def test_cli_account_and_role_settings():
    accounts = accounts_from(
        [f"{ACCOUNT_B}:{KEY_B}:{SECRET_B}", f"{ACCOUNT_B}:{KEY_B2}:with:colons", f"{ACCOUNT_C}:{KEY_C}:s"],
        [f"{ACCOUNT_B}:ops:trust={ACCOUNT_A},{ACCOUNT_C}:max=7200", f"{ACCOUNT_C}:reader"],
    )
    by_id = {account.account_id: account for account in accounts}
    assert by_id[ACCOUNT_B].access_keys == {KEY_B: SECRET_B, KEY_B2: "with:colons"}
    assert by_id[ACCOUNT_B].roles == [RoleConfig("ops", 7200, (ACCOUNT_A, ACCOUNT_C))]
    assert by_id[ACCOUNT_C].roles == [RoleConfig("reader")]
    assert SECRET_B not in repr(accounts)
    with pytest.raises(SystemExit) as refused:
        accounts_from([f"{ACCOUNT_B}:only-a-key-and-TOPSECRET"], [])
    assert "TOPSECRET" not in str(refused.value)


def test_a_key_id_in_two_accounts_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        EmulatorConfig(
            access_key_id="k", access_key_secret="s", accounts=[AccountConfig(ACCOUNT_B, {"k": "other"})]
        )
