"""The credentials of each cloud account, and one ECI client per account.

An EciAccount resolves to an AccessKey pair (from its Secret) or a RAM role that the
operator's own identity assumes with STS AssumeRole (the credentials library's own
`ram_role_arn` provider, which refreshes the temporary keys before they expire). Each account
gets an `EciClient` of its own, so its describes are batched, rate-limited and signed apart
from every other account's: a call for one namespace is never made with another's keys. An
account's calls in every region share one token bucket, as ECI's flow control counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datacache_operator.api.account import (
    ACCESS_KEY_ID_KEY,
    ACCESS_KEY_SECRET_KEY,
    session_seconds,
)
from datacache_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from alibabacloud_credentials.client import Client as CredentialClient

    from datacache_operator.cloud.client import EciClient

ROLE_SESSION_NAME = "eci-datacache-operator"


class AccountCredentialsError(ValueError):
    """An EciAccount's credentials cannot be used (the message names the account and what is
    missing, never a value)."""


@dataclass(frozen=True)
class AccountCredentials:
    """What one EciAccount resolves to. The secret is never shown (`repr` leaves it out)."""

    account: str
    access_key_id: str | None = None
    access_key_secret: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    session_seconds: int = 3600
    rate_limit: float | None = None


def secret_of(account: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the Secret an EciAccount names, if it names one."""
    ref = ((account.get("spec") or {}).get("credentials") or {}).get("secretRef")
    return (str(ref["namespace"]), str(ref["name"])) if ref else None


def credentials_of(account: Mapping[str, Any], secret_data: Mapping[str, str] | None) -> AccountCredentials:
    """An EciAccount object (and its Secret's decoded data, when it names one) -> credentials."""
    name = str(account["metadata"]["name"])
    spec = account.get("spec") or {}
    credentials = spec.get("credentials") or {}
    rate_limit = float(spec["rateLimit"]) if spec.get("rateLimit") else None
    if credentials.get("ramRoleArn"):
        try:
            seconds = session_seconds(credentials.get("sessionDuration"))
        except ValueError as error:
            raise AccountCredentialsError(f"EciAccount {name}: {error}") from None
        return AccountCredentials(
            account=name,
            role_arn=str(credentials["ramRoleArn"]),
            session_seconds=seconds,
            rate_limit=rate_limit,
        )
    ref = credentials.get("secretRef") or {}
    if not ref:
        raise AccountCredentialsError(f"EciAccount {name} names neither a Secret nor a RAM role")
    keys = (
        ref.get("accessKeyIdKey") or ACCESS_KEY_ID_KEY,
        ref.get("accessKeySecretKey") or ACCESS_KEY_SECRET_KEY,
    )
    where = f"Secret {ref.get('namespace')}/{ref.get('name')}"
    if secret_data is None:
        raise AccountCredentialsError(f"EciAccount {name}: {where} not found")
    missing = [key for key in keys if not secret_data.get(key)]
    if missing:
        raise AccountCredentialsError(f"EciAccount {name}: {where} has no {' or '.join(missing)}")
    return AccountCredentials(
        account=name,
        access_key_id=secret_data[keys[0]],
        access_key_secret=secret_data[keys[1]],
        rate_limit=rate_limit,
    )


def credential_client(
    credentials: AccountCredentials, sts_endpoint: str | None = None, identity: Any = None
) -> CredentialClient:
    """The credentials library's client for one account: a static AccessKey pair, or the RAM
    role assumed with `identity` (a credentials provider; default: the operator's own, the
    default chain)."""
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.provider import (
        DefaultCredentialsProvider,
        RamRoleArnCredentialsProvider,
        StaticAKCredentialsProvider,
    )

    from datacache_operator.cloud.client import quiet_credentials_log

    quiet_credentials_log()  # imported above: its handler is set up by now
    if credentials.role_arn:
        session = f"{ROLE_SESSION_NAME}-{credentials.account}"[:64]  # ActionTrail names the account
        provider: Any = RamRoleArnCredentialsProvider(
            credentials_provider=identity or DefaultCredentialsProvider(),
            role_arn=credentials.role_arn,
            role_session_name=session,
            duration_seconds=credentials.session_seconds,
            sts_endpoint=sts_endpoint,
        )
    else:
        provider = StaticAKCredentialsProvider(
            access_key_id=credentials.access_key_id, access_key_secret=credentials.access_key_secret
        )
    return CredentialClient(provider=provider)


ClientFactory = Callable[[AccountCredentials], "EciClient"]


def eci_client_factory(settings: OperatorSettings, identity: Any = None, **options: Any) -> ClientFactory:
    """Builds an account's EciClient: the operator's settings, signed with the account's
    credentials (`identity`: who assumes roles, see `credential_client`; `options` go to every
    EciClient: hooks, guard). Its calls in all regions share one token bucket, as ECI counts
    an account's calls: at the account's `rateLimit` with a burst of 1, so that no second
    holds more than ceil(rateLimit) of its calls as ECI receives them (the bucket lets
    `burst + ceil(rate) - 1` into a second); without one, at DATACACHE_RATE_LIMIT and
    DATACACHE_RATE_BURST. A refused key or token is retried, not a stall of the objects: the
    fix is an administrator's, to the EciAccount or its Secret."""
    from datacache_operator.cloud.client import EciClient

    assumer: list[Any] = [identity]  # one default chain for every role: each starts a thread

    def build(credentials: AccountCredentials) -> EciClient:
        if credentials.role_arn and assumer[0] is None:
            from alibabacloud_credentials.provider import DefaultCredentialsProvider

            assumer[0] = DefaultCredentialsProvider()
        own = settings
        if credentials.rate_limit:
            own = settings.model_copy(update={"rate_limit": credentials.rate_limit, "rate_burst": 1})
        credential = credential_client(credentials, settings.sts_endpoint, assumer[0])
        return EciClient(
            own,
            credential=credential,
            one_bucket_for_all_regions=True,
            credential_errors_retryable=True,
            **options,
        )

    return build


class AccountClients:
    """One EciClient per account: the operator's own for "", one per EciAccount, built on
    first use and built again when its credentials change; the one replaced is closed once
    the calls under way on it have had `RETIRE_SECONDS` to end."""

    RETIRE_SECONDS = 120.0

    def __init__(self, own: EciClient, build: ClientFactory) -> None:
        self.own = own
        self._build = build
        self._clients: dict[str, tuple[AccountCredentials, EciClient]] = {}
        self._retiring: dict[asyncio.Task[None], EciClient] = {}

    def client(self, credentials: AccountCredentials | None) -> EciClient:
        if credentials is None:
            return self.own
        known = self._clients.get(credentials.account)
        if known is not None and known[0] == credentials:
            return known[1]
        if known is not None:
            self._retire(known[1])
        client = self._build(credentials)
        self._clients[credentials.account] = (credentials, client)
        return client

    def known(self, account: str) -> EciClient | None:
        """The account's client if one was built ("" : the operator's own)."""
        if not account:
            return self.own
        known = self._clients.get(account)
        return None if known is None else known[1]

    def forget(self, account: str) -> None:
        """An EciAccount deleted: its client goes."""
        known = self._clients.pop(account, None)
        if known is not None:
            self._retire(known[1])

    def _retire(self, client: EciClient) -> None:
        async def close_later() -> None:
            await asyncio.sleep(self.RETIRE_SECONDS)
            await client.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring[task] = client
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def aclose(self) -> None:
        """Close every account's client (not the operator's own: its owner closes it)."""
        clients = [client for _, client in self._clients.values()]
        for task, client in list(self._retiring.items()):
            task.cancel()
            clients.append(client)
        self._clients.clear()
        for client in clients:
            await client.aclose()
