"""The cloud account each object's calls go with: its namespace's EciAccount (chosen by the
namespaces' labels, `reconcile.accounts`) and that account's ECI client (`cloud.accounts`).

EciAccounts and Namespaces are read from watches (`kube.WatchedObjects`): a pass costs the
apiserver nothing more than it did before accounts. While a watch is not healthy (at start,
after an error) they are read from the apiserver, so a choice is never made from a partial
list: a namespace whose EciAccount was not seen yet would otherwise be served with the
operator's own credentials.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from datacache_operator import kube
from datacache_operator.api.account import ECI_ACCOUNT
from datacache_operator.cloud.accounts import (
    AccountClients,
    AccountCredentials,
    AccountCredentialsError,
    credentials_of,
    secret_of,
)
from datacache_operator.cloud.client import CloudClient
from datacache_operator.kube import NamespaceReader, SecretNotFound, SecretReader
from datacache_operator.reconcile.accounts import OWN_ACCOUNT, AccountChoice, account_for

ECI_ACCOUNTS = ECI_ACCOUNT.plural
NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every Namespace

ObjectLister = Callable[[str, str | None], Awaitable[list[dict[str, Any]]]]


class Accounts(Protocol):
    """What the controllers ask: a namespace's account, and an account's client."""

    async def choice(self, namespace: str) -> AccountChoice: ...

    async def client(self, account: str) -> CloudClient:
        """Raises AccountCredentialsError when the account's credentials cannot be used."""
        ...


class OwnCredentialsOnly:
    """Every namespace on the operator's own credentials: no EciAccount is read (unit tests,
    and tools that run one controller)."""

    def __init__(self, cloud: CloudClient) -> None:
        self.cloud = cloud

    async def choice(self, namespace: str) -> AccountChoice:
        return AccountChoice()

    async def client(self, account: str) -> CloudClient:
        if account != OWN_ACCOUNT:
            raise AccountCredentialsError(f"EciAccount {account}: this operator reads no EciAccounts")
        return self.cloud


class AccountDirectory:
    """EciAccounts and Namespaces as watched, each account's Secret (read again once
    `SECRET_SECONDS` old, so a rotated key is used within that time) and each account's client."""

    SECRET_SECONDS = 60.0

    def __init__(
        self,
        clients: AccountClients,
        *,
        watch: bool = True,
        list_objects: ObjectLister = kube.list_objects,
        read_namespace: NamespaceReader = kube.read_namespace,
        read_secret: SecretReader = kube.read_secret,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = clients
        self.accounts_view = kube.WatchedObjects(ECI_ACCOUNTS, []) if watch else None
        self.namespaces_view: kube.WatchedObjects | None = kube.WatchedNamespaces() if watch else None
        self._list_objects = list_objects
        self._read_namespace = read_namespace
        self._read_secret = read_secret
        self._clock = clock
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}

    def start(self) -> None:
        for view in (self.accounts_view, self.namespaces_view):
            if view is not None:
                view.start()

    def stop(self) -> None:
        for view in (self.accounts_view, self.namespaces_view):
            if view is not None:
                view.stop()

    async def accounts(self) -> list[dict[str, Any]]:
        """Every EciAccount, as the apiserver has them."""
        view = self.accounts_view
        if view is not None and view.covers(""):
            return view.in_namespace("")
        return await self._list_objects(ECI_ACCOUNTS, None)

    def namespaces(self) -> list[dict[str, Any]] | None:
        """Every Namespace, from the watch; None while it is not healthy."""
        view = self.namespaces_view
        return view.in_namespace("") if view is not None and view.covers("") else None

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        view = self.namespaces_view
        found = view.get("", namespace) if view is not None and view.covers("") else None
        if found is None:  # not watched, not listed yet, or created a moment ago
            found = await self._read_namespace(namespace)
        labels: dict[str, str] = ((found or {}).get("metadata") or {}).get("labels") or {}
        return {**labels, NAME_LABEL: namespace}

    def queued_seconds(self, namespace: str) -> float:
        """How long the calls already waiting for the rate limiter of `namespace`'s account take
        to go: from the watches alone (no call: it decides whether a poll runs now); the
        operator's own client's while they are not healthy."""
        client = self.clients.own
        accounts, namespaces = self.accounts_view, self.namespaces_view
        if accounts is not None and namespaces is not None and accounts.covers("") and namespaces.covers(""):
            found = namespaces.get("", namespace) or {}
            labels = {**((found.get("metadata") or {}).get("labels") or {}), NAME_LABEL: namespace}
            choice = account_for(labels, accounts.in_namespace(""))
            client = (self.clients.known(choice.name) if choice.usable else None) or client
        queued: float = client.queued_seconds()
        return queued

    async def choice(self, namespace: str) -> AccountChoice:
        return account_for(await self.namespace_labels(namespace), await self.accounts())

    async def credentials(self, account: Mapping[str, Any]) -> AccountCredentials:
        """What an EciAccount object resolves to (its Secret read at most every SECRET_SECONDS)."""
        ref = secret_of(account)
        data = await self._secret(str(account["metadata"]["name"]), ref) if ref else None
        return credentials_of(account, data)

    async def _secret(self, account: str, ref: tuple[str, str]) -> dict[str, str] | None:
        known = self._secrets.get(ref)
        now = self._clock()
        if known is not None and now - known[0] < self.SECRET_SECONDS:
            return known[1]
        try:
            data: dict[str, str] | None = await self._read_secret(*ref)
        except SecretNotFound:
            data = None
        except ApiException as error:
            if error.status != 403:
                raise
            raise AccountCredentialsError(
                f"EciAccount {account}: the operator may not read Secret {ref[0]}/{ref[1]} "
                "(name it in the chart's accountSecrets)"
            ) from None
        self._secrets[ref] = (now, data)
        return data

    async def client(self, account: str) -> CloudClient:
        if account == OWN_ACCOUNT:
            return self.clients.own
        found = next((a for a in await self.accounts() if a["metadata"]["name"] == account), None)
        if found is None:
            raise AccountCredentialsError(f"EciAccount {account} not found")
        return await self.client_of(found)

    async def client_of(self, account: Mapping[str, Any]) -> CloudClient:
        """The client of an EciAccount object as given (its own pass: newer than the watch)."""
        return self.clients.client(await self.credentials(account))

    def forget(self, account: str, secret: tuple[str, str] | None) -> None:
        """An EciAccount deleted or changed: its client and Secret go (read again on next use)."""
        self.clients.forget(account)
        if secret is not None:
            self._secrets.pop(secret, None)
