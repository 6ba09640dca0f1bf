"""Each account's own ECI client (cloud/accounts.py) against the emulator with several
accounts, through the unmodified SDK and the credentials library's own providers: caches
stay in their account, a RAM role's temporary keys are refreshed across their expiry with no
failed call, and a revoked key fails its account only."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from eci_datacache_emulator import AccountConfig, Emulator, EmulatorConfig, RoleConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin
from tests.cloud.conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION, RecordingHooks

from datacache_operator.cloud import EciClient
from datacache_operator.cloud.accounts import AccountClients, AccountCredentials, eci_client_factory
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import CreateRequest
from datacache_operator.settings import OperatorSettings

OWN_ACCOUNT_ID, TEAM_ACCOUNT_ID = "1000000000000001", "1000000000000002"
TEAM_KEY, TEAM_SECRET = "team-b-key", "team-b-SECRET-never-shown-77c1"
TEAM_ROLE = f"acs:ram::{TEAM_ACCOUNT_ID}:role/eci-datacache"


@pytest.fixture(scope="module")
def accounts_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    config = EmulatorConfig(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        account_id=OWN_ACCOUNT_ID,
        accounts=[
            AccountConfig(
                TEAM_ACCOUNT_ID,
                {TEAM_KEY: TEAM_SECRET},
                roles=[RoleConfig("eci-datacache", trusted_accounts=(OWN_ACCOUNT_ID,))],
            )
        ],
        tls_dir=tmp_path_factory.mktemp("emulator-tls"),
        rate_limit=0,
    )
    with Emulator(config).in_thread() as running:
        yield running


@pytest.fixture
def team_admin(accounts_emulator: Emulator) -> Iterator[EmulatorAdmin]:
    client = EmulatorAdmin(accounts_emulator.admin_url)
    client.reset()
    yield client
    client.reset()


@pytest.fixture
async def clients(
    accounts_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, team_admin: EmulatorAdmin
) -> AsyncIterator[AccountClients]:
    from alibabacloud_credentials.provider import StaticAKCredentialsProvider
    from tests.cloud.conftest import static_credential

    monkeypatch.setenv("SSL_CERT_FILE", str(accounts_emulator.ca_file))  # STS is HTTPS only
    settings = OperatorSettings(
        endpoint=accounts_emulator.endpoint,
        protocol="http",
        rate_limit=1000,
        sts_endpoint=accounts_emulator.sts_endpoint,
    )
    operator_identity = StaticAKCredentialsProvider(
        access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET
    )
    pool = AccountClients(
        EciClient(settings, credential=static_credential()),
        eci_client_factory(settings, identity=operator_identity),
    )
    yield pool
    await pool.aclose()


def cache(path: str) -> CreateRequest:
    return CreateRequest(
        bucket="ml", path=path, data_source={"type": "URL", "options": {"url": "https://example.com/m"}}
    )


def ids_in(admin: EmulatorAdmin, account: str) -> set[str]:
    return {c["DataCacheId"] for c in admin.caches(account=account)}


async def test_each_account_builds_and_sees_only_its_own_caches(
    clients: AccountClients, team_admin: EmulatorAdmin
) -> None:
    team = AccountCredentials(account="team-b", access_key_id=TEAM_KEY, access_key_secret=TEAM_SECRET)
    assert TEAM_SECRET not in repr(team)
    ours = await clients.own.create(REGION, cache("/models/ours"), "token-ours")
    theirs = await clients.client(team).create(REGION, cache("/models/theirs"), "token-theirs")
    assert ids_in(team_admin, OWN_ACCOUNT_ID) >= {ours} and theirs not in ids_in(team_admin, OWN_ACCOUNT_ID)
    assert ids_in(team_admin, TEAM_ACCOUNT_ID) == {theirs}
    assert await clients.client(team).describe(REGION, ours) is None  # another account's: not there
    assert clients.client(team) is clients.client(team)  # one client per account


async def test_a_role_account_refreshes_its_temporary_keys_across_expiry_with_no_failed_call(
    clients: AccountClients, team_admin: EmulatorAdmin
) -> None:
    # 900 s, the least STS gives: the library renews 15 min before expiry, so before each call.
    role = AccountCredentials(account="team-b-role", role_arn=TEAM_ROLE, session_seconds=900)
    as_role = clients.client(role)
    built = await as_role.create(REGION, cache("/models/by-role"), "token-role")
    assert ids_in(team_admin, TEAM_ACCOUNT_ID) == {built}
    team_admin.advance(901)  # the first temporary keys have expired
    assert (await as_role.describe(REGION, built)) is not None
    calls = [c for c in team_admin.calls() if c["action"] != "AssumeRole"]
    assert [c["outcome"] for c in calls] == ["Success"] * len(calls)
    assert sum(1 for c in team_admin.calls() if c["action"] == "AssumeRole") >= 2


async def test_a_revoked_key_fails_its_account_only_and_rotated_keys_get_a_new_client(
    clients: AccountClients, team_admin: EmulatorAdmin
) -> None:
    team = AccountCredentials(account="team-b", access_key_id=TEAM_KEY, access_key_secret=TEAM_SECRET)
    first = clients.client(team)
    await first.describe(REGION, "edc-none")
    team_admin.disable_key(TEAM_KEY)
    with pytest.raises(EciError) as refused:
        await clients.client(team).describe(REGION, "edc-other")
    assert refused.value.code == "InvalidAccessKeyId.Inactive"
    assert TEAM_SECRET not in str(refused.value)
    assert await clients.own.describe(REGION, "edc-none") is None  # the operator's own still works
    rotated = AccountCredentials(account="team-b", access_key_id="team-b-key-2", access_key_secret="s2")
    assert clients.client(rotated) is not first


async def test_an_accounts_rate_limit_holds_at_the_emulator_for_all_its_regions_together(
    accounts_emulator: Emulator, team_admin: EmulatorAdmin
) -> None:
    """Account A (rateLimit 4) sends 20 describes over two regions at once while account B
    (no rateLimit: the operator's 1000 a second) sends 60: in no second at all, as the
    emulator answered them, did A make more than 4 calls, and B went far faster.

    Why no second at all, the first included: an account with a rateLimit gets one bucket for
    every region with a burst of 1, and a bucket lets at most ``burst + ceil(rate) - 1`` = 4
    calls be in flight or answered within any one second. The emulator logs a call when it
    answers, which is after the call took its token and before its answer reached the
    client, so every whole second of the log holds at most 4 of A's calls. (A burst of
    ``rate`` would let ``2 * rate - 1`` into a second: not only the first one, as any second
    could hold a late call of the second before and the prompt calls of its own.)"""
    rate, per_region, other_region = 4, 10, "cn-beijing"
    hooks = RecordingHooks()
    settings = OperatorSettings(
        endpoint=accounts_emulator.endpoint, protocol="http", rate_limit=1000, batching=False
    )
    build = eci_client_factory(settings, hooks=hooks)
    team_a = build(
        AccountCredentials(
            account="team-a", access_key_id=TEAM_KEY, access_key_secret=TEAM_SECRET, rate_limit=rate
        )
    )
    team_b = build(
        AccountCredentials(account="team-b", access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET)
    )
    try:
        a_calls = [
            team_a.describe(region, f"edc-a{region[3:]}{n:08d}")
            for region in (REGION, other_region)
            for n in range(per_region)
        ]
        b_calls = [team_b.describe(REGION, f"edc-b{n:012d}") for n in range(60)]
        # A deadline, not a timing claim: at 4 a second A's calls take about 5 s.
        await asyncio.wait_for(asyncio.gather(*a_calls, *b_calls), timeout=60)
    finally:
        await team_a.aclose()
        await team_b.aclose()

    a_log = team_admin.calls(action="DescribeDataCaches", account=TEAM_ACCOUNT_ID)
    assert len(a_log) == 2 * per_region
    assert Counter(call["region"] for call in a_log) == {REGION: per_region, other_region: per_region}
    per_second = team_admin.calls_per_second(action="DescribeDataCaches")
    assert max(per_second[TEAM_ACCOUNT_ID].values()) <= rate, per_second[TEAM_ACCOUNT_ID]
    assert sum(per_second[OWN_ACCOUNT_ID].values()) == 60
    assert max(per_second[OWN_ACCOUNT_ID].values()) > rate  # B is not held to A's limit
    # A's waits are reported with each call's own region.
    assert {region for region, _ in hooks.waits} == {REGION, other_region}
