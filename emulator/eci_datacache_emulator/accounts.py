"""Accounts, their AccessKey pairs and RAM roles, and STS AssumeRole (Version 2015-04-01).

Every key belongs to one account, and a call acts as that account: its caches and container
groups only. Temporary (STS) keys act as the account of the role they were issued for.

AssumeRole, as STS answers it (codes from Alibaba's STS error tables and its "common STS
errors" page; where nothing is documented the choice is marked):

* ``RoleArn`` missing: 400 ``MissingRoleArn``; ``RoleSessionName`` missing: 400
  ``MissingRoleSessionName`` (the POP ``Missing<Name>`` form; chosen);
* ``RoleArn`` not ``acs:ram::<account id>:role/<name>``: 400 ``InvalidParameter.RoleArn``
  "The parameter RoleArn is wrongly formed.";
* no such account or role (names compare case-insensitively, as RAM's): 404
  ``EntityNotExist.Role`` "The specified Role not exists.";
* the caller's account is not in the role's trust policy (its own account always is): 403
  ``NoPermission`` "No permission perform sts:AssumeRole on this Role. ...";
* ``RoleSessionName`` not 2-64 of ``A-Za-z0-9.@-_``: 400 ``InvalidParameter.RoleSessionName``;
* ``DurationSeconds`` (default 3600) outside ``sts_min_duration_seconds`` (900) .. the role's
  ``max_session_duration`` (3600): 400 ``InvalidParameter.DurationSeconds`` "The Min/Max
  value of DurationSeconds is 15min/1hr." (with the bounds in seconds when they differ);
* ``Policy`` that is not a JSON object: 400 ``InvalidParameter.PolicyGrammar``; over 2048
  characters: 400 ``InvalidParameter.PolicySize``. A valid policy is accepted and NOT
  enforced: the temporary key may do what the role's account may (the emulator has no RAM
  policies). ``ExternalId`` is accepted and ignored.
* Every permanent key may call AssumeRole (as a RAM user with AliyunSTSAssumeRoleAccess; the
  emulator has no root-account keys, so never "Roles may not be assumed by root accounts").
  Temporary keys may too (role chaining), their token checked like any call's.

The answer: ``RequestId``, ``AssumedRoleUser {AssumedRoleId "<role id>:<session>", Arn
"<role arn>/<session>"}`` and ``Credentials {AccessKeyId "STS.<24>", AccessKeySecret,
SecurityToken, Expiration "%Y-%m-%dT%H:%M:%SZ"}``; Expiration is virtual-clock now plus
DurationSeconds, so advancing the clock expires the keys. After it, every call with them is
400 ``InvalidSecurityToken.Expired`` "Specified SecurityToken is expired." (the gateway's
code; some product pages show 403 for it, the common gateway table 400). Temporary keys live
in memory only, like container groups; ``reset`` forgets them and brings back the configured
keys and their statuses.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .config import (
    STS_DEFAULT_MAX_DURATION_SECONDS,
    STS_MIN_DURATION_SECONDS,
    AccountConfig,
    EmulatorConfig,
    RoleConfig,
)
from .errors import ApiError
from .signature import Caller, Credential, format_timestamp
from .wire import Parameters

STS_VERSION = "2015-04-01"
STS_ACTIONS = frozenset({"AssumeRole"})
MAX_POLICY_LENGTH = 2048
DEFAULT_DURATION_SECONDS = 3600
# Expired temporary keys are kept (so they answer Expired, not NotFound) up to this many.
MAX_TEMPORARY_KEYS = 100_000
_ROLE_ARN = re.compile(r"^acs:ram::(?P<account>[0-9]+):role/(?P<name>[^/:]+)$")
_SESSION_NAME = re.compile(r"^[A-Za-z0-9.@\-_]{2,64}$")
_KEY_ALPHABET = string.ascii_letters + string.digits


def role_arn(account_id: str, role_name: str) -> str:
    return f"acs:ram::{account_id}:role/{role_name.lower()}"


def role_id(account_id: str, role_name: str) -> str:
    """A stable, role-id-like number (RAM shows 18-19 digits)."""
    digest = hashlib.sha256(role_arn(account_id, role_name).encode()).digest()
    return str(300_000_000_000_000_000 + int.from_bytes(digest[:8], "big") % 10**17)


@dataclass(frozen=True)
class TemporaryKey:
    """What STS issued a temporary key for (no secrets: those stay in the Credential)."""

    access_key_id: str
    account_id: str
    role_arn: str
    session_name: str
    caller_access_key_id: str
    caller_account_id: str
    issued_at: float
    expires_at: float


class AccountRegistry:
    """The accounts of one emulator: keys by id (permanent and STS) and roles by account."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self.reset()

    @property
    def default_account_id(self) -> str:
        return self._config.account_id

    def reset(self) -> None:
        config = self._config
        self.roles: dict[str, dict[str, RoleConfig]] = {config.account_id: {}}
        self.keys: dict[str, Credential] = {
            config.access_key_id: Credential(
                config.access_key_id,
                config.access_key_secret,
                config.security_token or None,
                account_id=config.account_id,
            )
        }
        self.temporary: dict[str, TemporaryKey] = {}
        for account in config.accounts:
            self._add_account(account)

    def _add_account(self, account: AccountConfig) -> None:
        roles = self.roles.setdefault(account.account_id, {})
        for role in account.roles:
            roles[role.name.lower()] = role
        for key_id, secret in account.access_keys.items():
            self.keys[key_id] = Credential(key_id, secret, None, account_id=account.account_id)

    # ---- keys --------------------------------------------------------------------------

    @property
    def account_ids(self) -> list[str]:
        return list(self.roles)

    def find(self, access_key_id: str) -> Credential | None:
        return self.keys.get(access_key_id)

    def add_key(self, account_id: str, access_key_id: str, access_key_secret: str) -> None:
        if account_id not in self.roles:
            raise KeyError(f"no account {account_id}")
        if not access_key_id or not access_key_secret:
            raise ValueError("an AccessKey needs an id and a secret")
        if access_key_id in self.keys:
            raise ValueError(f"the AccessKey id {access_key_id} exists already")
        self.keys[access_key_id] = Credential(access_key_id, access_key_secret, None, account_id=account_id)

    def set_active(self, access_key_id: str, active: bool) -> Credential:
        credential = self.keys.get(access_key_id)
        if credential is None:
            raise KeyError(f"no AccessKey {access_key_id}")
        self.keys[access_key_id] = replace(credential, active=active)
        return self.keys[access_key_id]

    def revoke(self, access_key_id: str) -> None:
        """The key is gone: calls with it answer InvalidAccessKeyId.NotFound."""
        if self.keys.pop(access_key_id, None) is None:
            raise KeyError(f"no AccessKey {access_key_id}")
        self.temporary.pop(access_key_id, None)

    # ---- STS ---------------------------------------------------------------------------

    def call(self, action: str, params: Parameters, caller: Caller) -> dict[str, Any]:
        if action != "AssumeRole":  # the server routes only STS_ACTIONS here
            raise ApiError(404, "InvalidAction.NotFound", "Specified api is not found.")
        return self.assume_role(params, caller)

    def assume_role(self, params: Parameters, caller: Caller) -> dict[str, Any]:
        arn = params.text("RoleArn")
        if arn is None:
            raise ApiError(400, "MissingRoleArn", "RoleArn is mandatory for this action.")
        session_name = params.text("RoleSessionName")
        if session_name is None:
            raise ApiError(400, "MissingRoleSessionName", "RoleSessionName is mandatory for this action.")
        match = _ROLE_ARN.match(arn)
        if match is None:
            raise ApiError(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.")
        account_id, name = match["account"], match["name"]
        role = self.roles.get(account_id, {}).get(name.lower())
        if role is None:
            raise ApiError(404, "EntityNotExist.Role", "The specified Role not exists.")
        if caller.account_id != account_id and caller.account_id not in role.trusted_accounts:
            raise ApiError(
                403,
                "NoPermission",
                "No permission perform sts:AssumeRole on this Role. Maybe you are not authorized to "
                "perform sts:AssumeRole or the specified role does not trust you",
            )
        if not _SESSION_NAME.match(session_name):
            raise ApiError(
                400, "InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrongly formed."
            )
        duration = self._duration(params.text("DurationSeconds"), role)
        _check_policy(params.text("Policy"))
        now = self._clock()
        credential, temporary = self._issue(account_id, role, session_name, caller, now, duration)
        return {
            "AssumedRoleUser": {
                "AssumedRoleId": f"{role_id(account_id, role.name)}:{session_name}",
                "Arn": f"{role_arn(account_id, role.name)}/{session_name}",
            },
            "Credentials": {
                "AccessKeyId": credential.access_key_id,
                "AccessKeySecret": credential.access_key_secret,
                "SecurityToken": credential.security_token,
                "Expiration": format_timestamp(temporary.expires_at),
            },
        }

    def _duration(self, text: str | None, role: RoleConfig) -> int:
        low, high = self._config.sts_min_duration_seconds, role.max_session_duration
        if (low, high) == (STS_MIN_DURATION_SECONDS, STS_DEFAULT_MAX_DURATION_SECONDS):
            message = "The Min/Max value of DurationSeconds is 15min/1hr."
        else:
            message = f"The Min/Max value of DurationSeconds is {low}s/{high}s."
        if text is None:
            duration = DEFAULT_DURATION_SECONDS
        else:
            try:
                duration = int(text)
            except ValueError:
                raise ApiError(400, "InvalidParameter.DurationSeconds", message) from None
        if not low <= duration <= max(low, high):
            raise ApiError(400, "InvalidParameter.DurationSeconds", message)
        return duration

    def _issue(
        self, account_id: str, role: RoleConfig, session_name: str, caller: Caller, now: float, duration: int
    ) -> tuple[Credential, TemporaryKey]:
        key_id = "STS." + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(24))
        credential = Credential(
            key_id,
            "".join(secrets.choice(_KEY_ALPHABET) for _ in range(44)),
            "CAIS" + secrets.token_urlsafe(180),
            account_id=account_id,
            expires_at=now + duration,
        )
        temporary = TemporaryKey(
            access_key_id=key_id,
            account_id=account_id,
            role_arn=role_arn(account_id, role.name),
            session_name=session_name,
            caller_access_key_id=caller.access_key_id,
            caller_account_id=caller.account_id,
            issued_at=now,
            expires_at=now + duration,
        )
        self._forget_old_temporary_keys()
        self.keys[key_id] = credential
        self.temporary[key_id] = temporary
        return credential, temporary

    def _forget_old_temporary_keys(self) -> None:
        if len(self.temporary) < MAX_TEMPORARY_KEYS:
            return
        now = self._clock()
        for key_id, temporary in sorted(self.temporary.items(), key=lambda item: item[1].expires_at):
            if temporary.expires_at > now or len(self.temporary) < MAX_TEMPORARY_KEYS:
                break
            del self.temporary[key_id]
            self.keys.pop(key_id, None)

    # ---- views -------------------------------------------------------------------------

    def admin_view(self) -> list[dict[str, Any]]:
        """Every account with its key ids, their status and its roles; never a secret."""
        now = self._clock()
        accounts = []
        for account_id, roles in self.roles.items():
            keys = []
            for key_id, credential in self.keys.items():
                if credential.account_id != account_id:
                    continue
                entry: dict[str, Any] = {
                    "AccessKeyId": key_id,
                    "Status": "Active" if credential.active else "Inactive",
                    "Type": "STS" if credential.security_token else "AccessKey",
                }
                temporary = self.temporary.get(key_id)
                if temporary is not None:
                    entry.update(
                        {
                            "RoleArn": temporary.role_arn,
                            "RoleSessionName": temporary.session_name,
                            "AssumedBy": temporary.caller_access_key_id,
                            "AssumedByAccount": temporary.caller_account_id,
                            "Expiration": format_timestamp(temporary.expires_at),
                            "Expired": now >= temporary.expires_at,
                        }
                    )
                keys.append(entry)
            accounts.append(
                {
                    "AccountId": account_id,
                    "Default": account_id == self.default_account_id,
                    "AccessKeys": keys,
                    "Roles": [
                        {
                            "RoleName": role.name,
                            "Arn": role_arn(account_id, role.name),
                            "RoleId": role_id(account_id, role.name),
                            "MaxSessionDuration": role.max_session_duration,
                            "TrustedAccounts": [account_id, *role.trusted_accounts],
                        }
                        for role in roles.values()
                    ],
                }
            )
        return accounts


def _check_policy(policy: str | None) -> None:
    if policy is None:
        return
    if len(policy) > MAX_POLICY_LENGTH:
        raise ApiError(
            400,
            "InvalidParameter.PolicySize",
            f"The size of Policy must be smaller than {MAX_POLICY_LENGTH} bytes.",
        )
    try:
        document = json.loads(policy)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ApiError(
            400, "InvalidParameter.PolicyGrammar", "The parameter Policy has not passed grammar check."
        )
