"""What an EciAccount resolves to (cloud/accounts.py, api/account.py): pure parts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from datacache_operator.api.account import session_seconds
from datacache_operator.cloud.accounts import (
    AccountClients,
    AccountCredentials,
    AccountCredentialsError,
    credentials_of,
    secret_of,
)

SECRET = "a-SECRET-value-never-shown"


def account(**credentials: Any) -> dict[str, Any]:
    return {"metadata": {"name": "team-b"}, "spec": {"namespaceSelector": {}, "credentials": credentials}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(None, 3600), ("1h", 3600), ("90m", 5400), ("1h30m", 5400), ("900s", 900), ("1.5h", 5400)],
)
def test_session_durations_read_as_cel_reads_them(text: str | None, seconds: int) -> None:
    assert session_seconds(text) == seconds


def test_a_malformed_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        session_seconds("an hour")


def test_an_access_key_pair_from_the_named_secret_with_its_key_names() -> None:
    obj = account(
        secretRef={
            "namespace": "eci-accounts",
            "name": "team-b",
            "accessKeyIdKey": "id",
            "accessKeySecretKey": "secret",
        }
    )
    obj["spec"]["rateLimit"] = 5
    assert secret_of(obj) == ("eci-accounts", "team-b")
    found = credentials_of(obj, {"id": "AK-1", "secret": SECRET})
    assert (found.access_key_id, found.access_key_secret, found.rate_limit) == ("AK-1", SECRET, 5.0)
    assert SECRET not in repr(found)


def test_a_missing_secret_or_key_is_named_and_no_value_shown() -> None:
    obj = account(secretRef={"namespace": "eci-accounts", "name": "team-b"})
    with pytest.raises(AccountCredentialsError, match="Secret eci-accounts/team-b not found"):
        credentials_of(obj, None)
    with pytest.raises(AccountCredentialsError, match="has no ALIBABA_CLOUD_ACCESS_KEY_SECRET") as error:
        credentials_of(obj, {"ALIBABA_CLOUD_ACCESS_KEY_ID": "AK-1"})
    assert "AK-1" not in str(error.value)


def test_a_role_needs_no_secret() -> None:
    obj = account(ramRoleArn="acs:ram::1000000000000002:role/eci", sessionDuration="2h")
    assert secret_of(obj) is None
    found = credentials_of(obj, None)
    assert (found.role_arn, found.session_seconds, found.access_key_id) == (
        "acs:ram::1000000000000002:role/eci",
        7200,
        None,
    )


async def test_one_client_per_account_built_again_when_its_credentials_change() -> None:
    built: list[str] = []

    class Client:
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    def build(credentials: AccountCredentials) -> Any:
        built.append(credentials.account)
        return Client()

    own = Client()
    pool = AccountClients(own, build)  # type: ignore[arg-type]
    first = AccountCredentials(account="team-b", access_key_id="AK-1", access_key_secret=SECRET)
    assert pool.client(None) is own
    assert pool.client(first) is pool.client(first) and built == ["team-b"]
    old = pool.client(first)
    rotated = AccountCredentials(account="team-b", access_key_id="AK-2", access_key_secret=SECRET)
    pool.RETIRE_SECONDS = 0.01
    assert pool.client(rotated) is not old and built == ["team-b", "team-b"]
    deadline = asyncio.get_running_loop().time() + 5
    while not old.closed:  # closed once the calls under way have had their time
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    current = pool.client(rotated)
    await pool.aclose()
    assert current.closed and own.closed is False  # the operator's own client is closed by its owner


def test_a_malformed_session_duration_is_the_accounts_error() -> None:
    with pytest.raises(AccountCredentialsError, match="EciAccount team-b: not a duration"):
        credentials_of(account(ramRoleArn="acs:ram::1:role/eci", sessionDuration="1d"), None)
