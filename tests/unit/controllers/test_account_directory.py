"""The account directory: a namespace's account from its labels (its name among them) and the
EciAccounts, each account's Secret read at most once a minute, and what an administrator
must fix said plainly. With the watches off, every read goes to the (fake) apiserver."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from datacache_operator.cloud.accounts import AccountClients, AccountCredentials, AccountCredentialsError
from datacache_operator.controllers.accounts import AccountDirectory
from datacache_operator.kube import SecretNotFound
from datacache_operator.reconcile.accounts import AccountChoice


def eci_account(name: str, **selector: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": selector,
            "credentials": {"secretRef": {"namespace": "admins", "name": f"{name}-keys"}},
        },
    }


class Apiserver:
    def __init__(self) -> None:
        self.accounts = [
            eci_account("team-a", matchLabels={"kubernetes.io/metadata.name": "ml"}),
            eci_account("gpu", matchLabels={"tier": "gpu"}),
        ]
        self.labels: dict[str, dict[str, str]] = {"ml": {}, "vision": {"tier": "gpu"}}
        self.secrets: dict[tuple[str, str], dict[str, str] | Exception] = {
            ("admins", "team-a-keys"): {
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "k1",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s1",
            }
        }
        self.secret_reads = 0

    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        assert (plural, namespace) == ("eciaccounts", None)
        return self.accounts

    async def read_namespace(self, name: str) -> dict[str, Any] | None:
        labels = self.labels.get(name)
        # The apiserver puts the name label on every Namespace; the directory adds it anyway.
        return None if labels is None else {"metadata": {"name": name, "labels": labels}}

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        self.secret_reads += 1
        found = self.secrets.get((namespace, name))
        if found is None:
            raise SecretNotFound(f"Secret {namespace}/{name} not found")
        if isinstance(found, Exception):
            raise found
        return found


def directory(api: Apiserver, clock: list[float]) -> tuple[AccountDirectory, list[AccountCredentials]]:
    built: list[AccountCredentials] = []

    def build(credentials: AccountCredentials) -> Any:
        built.append(credentials)
        return f"client of {credentials.account}"

    clients = AccountClients("own client", build)  # type: ignore[arg-type]
    made = AccountDirectory(
        clients,
        watch=False,
        list_objects=api.list_objects,
        read_namespace=api.read_namespace,
        read_secret=api.read_secret,
        clock=lambda: clock[0],
    )
    return made, built


async def test_a_namespace_is_chosen_by_its_name_or_its_labels_and_otherwise_uses_the_own() -> None:
    api = Apiserver()
    accounts, _ = directory(api, [0.0])
    assert await accounts.choice("ml") == AccountChoice(name="team-a")
    assert await accounts.choice("vision") == AccountChoice(name="gpu")
    assert await accounts.choice("web") == AccountChoice()
    api.labels["ml"] = {"tier": "gpu"}
    assert await accounts.choice("ml") == AccountChoice(conflict=("gpu", "team-a"))


async def test_an_accounts_secret_is_read_again_only_once_a_minute_old() -> None:
    api, clock = Apiserver(), [0.0]
    accounts, built = directory(api, clock)
    assert await accounts.client("team-a") == "client of team-a"
    assert await accounts.client("") == "own client"
    api.secrets[("admins", "team-a-keys")] = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "k2",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s2",
    }  # rotated
    clock[0] = 59.0
    await accounts.client("team-a")
    assert api.secret_reads == 1 and [c.access_key_id for c in built] == ["k1"]
    clock[0] = 61.0
    await accounts.client("team-a")
    assert api.secret_reads == 2 and [c.access_key_id for c in built] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        (None, "EciAccount team-a: Secret admins/team-a-keys not found"),
        (ApiException(status=403), "the operator may not read Secret admins/team-a-keys"),
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "k1"}, "has no ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
    ],
)
async def test_what_an_administrator_must_fix_is_said(secret: Any, said: str) -> None:
    api = Apiserver()
    if secret is None:
        del api.secrets[("admins", "team-a-keys")]
    else:
        api.secrets[("admins", "team-a-keys")] = secret
    accounts, _ = directory(api, [0.0])
    with pytest.raises(AccountCredentialsError, match=said):
        await accounts.client("team-a")
    with pytest.raises(AccountCredentialsError, match="EciAccount gone not found"):
        await accounts.client("gone")
