"""Each namespace's objects call the cloud with their namespace's account only: against two
in-memory clouds (one per account), which calls each pass makes where, what the status
says, and what is refused. The same cases run against the real apiserver and the emulator's
accounts in tests/integration/test_accounts.py."""

from __future__ import annotations

from typing import Any

from tests.unit.controllers.test_controllers import (
    NOW,
    DataCacheObject,
    FakeCloud,
    ReplicationObject,
    condition,
    settings,
    source_cache,
)

from datacache_operator.api.conditions import get_condition
from datacache_operator.cloud.accounts import AccountCredentialsError
from datacache_operator.cloud.errors import EciError
from datacache_operator.controllers.datacache import DataCacheController
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.reconcile.accounts import AccountChoice


class Accounts:
    """The `Accounts` seam: which account namespace ml is on, and a cloud per account."""

    def __init__(self, **clouds: FakeCloud) -> None:
        self.clouds = clouds
        self.chosen = AccountChoice()
        self.broken: set[str] = set()

    async def choice(self, namespace: str) -> AccountChoice:
        return self.chosen

    async def client(self, account: str) -> FakeCloud:
        if account in self.broken:
            raise AccountCredentialsError(f"EciAccount {account}: Secret accounts/{account}-keys not found")
        return self.clouds[account]

    def calls(self) -> dict[str, list[str]]:
        return {name: cloud.actions() for name, cloud in self.clouds.items()}


def cache_controller(accounts: Accounts) -> DataCacheController:
    return DataCacheController(
        settings(),
        accounts.clouds[""],
        read_secret=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
        accounts=accounts,  # type: ignore[arg-type]
    )


def message(status: dict[str, Any], type_: str = "Ready") -> str:
    return str((get_condition(status.get("conditions"), type_) or {}).get("message"))


async def built_in(accounts: Accounts, obj: DataCacheObject, account: str) -> str:
    """Build the object's cache in `account` until Available; the calls are then forgotten."""
    accounts.chosen = AccountChoice(name=account)
    await obj.pass_(cache_controller(accounts))
    cache_id = str(obj.body["status"]["dataCacheId"])
    accounts.clouds[account].set(cache_id, status="Available")
    await obj.pass_(cache_controller(accounts))
    for cloud in accounts.clouds.values():
        cloud.calls.clear()
    return cache_id


async def test_a_namespace_on_an_account_builds_there_and_shows_it() -> None:
    accounts = Accounts(**{"": FakeCloud(), "team-ml": FakeCloud()})
    obj = DataCacheObject()
    cache_id = await built_in(accounts, obj, "team-ml")
    assert obj.body["status"]["account"] == "team-ml"
    assert cache_id in accounts.clouds["team-ml"].caches and not accounts.clouds[""].caches
    assert condition(obj.body["status"], "Ready") == ("True", "Available")

    own = DataCacheObject()
    own.body["metadata"]["uid"] = "uid-2"
    accounts.chosen = AccountChoice()
    await own.pass_(cache_controller(accounts))
    assert own.body["status"]["account"] == "" and accounts.calls()["team-ml"] == []


async def test_a_namespace_selected_twice_makes_no_call_until_one_account_selects_it() -> None:
    accounts = Accounts(**{"": FakeCloud(), "a": FakeCloud(), "b": FakeCloud()})
    accounts.chosen = AccountChoice(conflict=("a", "b"))
    obj = DataCacheObject()
    result = await obj.pass_(cache_controller(accounts))
    assert condition(result.status, "Stalled") == ("True", "AccountConflict")
    assert "EciAccounts a and b" in message(result.status)
    assert accounts.calls() == {"": [], "a": [], "b": []}

    accounts.chosen = AccountChoice(name="b")  # the administrator fixed a selector
    await obj.pass_(cache_controller(accounts))
    assert accounts.calls()["b"] == ["find_at", "create"] and obj.body["status"]["account"] == "b"


async def test_a_cache_is_never_read_changed_or_deleted_with_the_next_accounts_credentials() -> None:
    accounts = Accounts(**{"": FakeCloud(), "a": FakeCloud(), "b": FakeCloud()})
    obj = DataCacheObject(deletionPolicy="Delete")
    cache_id = await built_in(accounts, obj, "a")

    accounts.chosen = AccountChoice(name="b")  # the namespace moved to another account
    obj.change(retentionDays=7)
    result = await obj.pass_(cache_controller(accounts))
    assert condition(result.status, "Stalled") == ("True", "AccountChanged")
    assert f"cache {cache_id} lives in the account of EciAccount a" in message(result.status)
    assert obj.body["status"]["account"] == "a"
    done, events, status = await cache_controller(accounts).finalize(obj.body)
    assert not done and status is not None and condition(status, "Ready") == ("False", "AccountChanged")
    assert [e.reason for e in events] == ["AccountChanged"]
    assert accounts.calls() == {"": [], "a": [], "b": []}

    accounts.chosen = AccountChoice(name="a")  # moved back: served again, and deleted where it lives
    await obj.pass_(cache_controller(accounts))
    assert "update" in accounts.calls()["a"]  # the retention held back meanwhile
    assert condition(obj.body["status"], "Stalled")[0] == "False"
    done, _, _ = await cache_controller(accounts).finalize(obj.body)
    assert "delete" in accounts.calls()["a"] and accounts.calls()["b"] == []


async def test_a_cache_made_before_accounts_stays_with_the_operators_own_credentials() -> None:
    accounts = Accounts(**{"": FakeCloud(), "a": FakeCloud()})
    obj = DataCacheObject()
    cache_id = await built_in(accounts, obj, "")
    del obj.body["status"]["account"]  # written by an operator that knew no accounts
    accounts.chosen = AccountChoice(name="a")
    result = await obj.pass_(cache_controller(accounts))
    assert condition(result.status, "Stalled") == ("True", "AccountChanged")
    assert f"cache {cache_id} lives in the account of the operator's own credentials" in message(
        result.status
    )


async def test_unusable_credentials_are_retried_and_an_eci_error_names_the_account() -> None:
    accounts = Accounts(**{"": FakeCloud(), "a": FakeCloud()})
    accounts.chosen = AccountChoice(name="a")
    accounts.broken.add("a")
    obj = DataCacheObject()
    result = await obj.pass_(cache_controller(accounts))
    assert condition(result.status, "Ready") == ("False", "AccountNotReady")
    assert condition(result.status, "Stalled") == ("", "")  # an administrator's fix is seen next poll
    assert "Secret accounts/a-keys not found" in message(result.status) and result.delay == 30

    accounts.broken.clear()
    accounts.clouds["a"].refuse["find_at"] = EciError(
        "InvalidAccessKeyId.NotFound", "Specified access key is not found."
    )
    result = await obj.pass_(cache_controller(accounts))
    assert condition(result.status, "Stalled") == (
        "True",
        "InvalidAccessKeyIdNotFound",
    )  # the code as a condition reason
    assert message(result.status).startswith("EciAccount a: InvalidAccessKeyId.NotFound: ")


async def test_copies_are_made_read_and_deleted_with_their_namespaces_account_only() -> None:
    accounts = Accounts(**{"": FakeCloud(), "a": FakeCloud(), "b": FakeCloud()})
    _, source = source_cache(accounts.clouds["a"])
    accounts.chosen = AccountChoice(name="a")

    async def read_object(plural: str, namespace: str, name: str) -> dict[str, Any]:
        return source

    controller = ReplicationController(
        settings(),
        accounts.clouds[""],
        read_object,
        clock=lambda: NOW,
        accounts=accounts,  # type: ignore[arg-type]
    )
    obj = ReplicationObject("cn-beijing")
    await obj.pass_(controller)
    assert "copy" in accounts.calls()["a"] and obj.body["status"]["account"] == "a"

    accounts.chosen = AccountChoice(name="b")
    for cloud in accounts.clouds.values():
        cloud.calls.clear()
    result = await obj.pass_(controller)
    assert condition(result.status, "Stalled") == ("True", "AccountChanged")
    done, _, _ = await controller.finalize(obj.body)
    assert not done and accounts.calls() == {"": [], "a": [], "b": []}
