"""Settings of one emulator instance, shared by the CLI and in-process use."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY_ID_VARIABLE = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ACCESS_KEY_SECRET_VARIABLE = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
# Obviously fake, so nobody mistakes them for real keys; used when the environment has none.
DEFAULT_ACCESS_KEY_ID = "emulator-access-key-id"
DEFAULT_ACCESS_KEY_SECRET = "emulator-access-key-secret"
# Cloud durations are multiplied by this: a create (30 s + 90 s in the cloud) takes 2.4 s.
DEFAULT_TIME_SCALE = 0.02
DEFAULT_QUOTA = 1000
ACTIONS = ("CreateDataCache", "DescribeDataCaches", "UpdateDataCache", "DeleteDataCache", "CopyDataCache")
# The account the single configured key pair belongs to (Alibaba Cloud account ids are 16 digits).
DEFAULT_ACCOUNT_ID = "1000000000000001"
# STS AssumeRole: DurationSeconds is 900..3600 unless a role allows longer (RAM: up to 43200).
STS_MIN_DURATION_SECONDS = 900
STS_DEFAULT_MAX_DURATION_SECONDS = 3600
RAM_MAX_SESSION_DURATION_SECONDS = 43_200
_ACCOUNT_ID = re.compile(r"^[0-9]{1,20}$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")


def _environment_or(variable: str, default: str) -> str:
    return os.environ.get(variable) or default


@dataclass(frozen=True)
class CloudDurations:
    """How long each phase takes in the cloud, in seconds, before `time_scale` applies."""

    creating: float = 30.0
    loading: float = 90.0
    updating: float = 60.0
    deleting: float = 10.0
    copy_creating: float = 20.0
    copy_loading: float = 60.0
    container_starting: float = 10.0  # a container group Pending before Running
    container_running: float = 30.0  # a group that restarts Never or OnFailure runs, then Succeeded


@dataclass(frozen=True)
class RoleConfig:
    """A RAM role of an account: ``acs:ram::<account id>:role/<name>``, assumable through STS.

    `trusted_accounts` is the trust policy: the accounts whose keys may assume the role. The
    role's own account is always trusted (RAM's default policy for an account role); add other
    account ids for cross-account access.
    """

    name: str
    max_session_duration: int = STS_DEFAULT_MAX_DURATION_SECONDS
    trusted_accounts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _ROLE_NAME.match(self.name):
            raise ValueError(f"role name {self.name!r}: use up to 64 letters, digits, '.', '-' or '_'")
        if not 1 <= self.max_session_duration <= RAM_MAX_SESSION_DURATION_SECONDS:
            raise ValueError(
                f"role {self.name}: max_session_duration must be 1..{RAM_MAX_SESSION_DURATION_SECONDS}"
            )
        for account_id in self.trusted_accounts:
            if not _ACCOUNT_ID.match(account_id):
                raise ValueError(f"role {self.name}: trusted account {account_id!r} is not an account id")


@dataclass
class AccountConfig:
    """One Alibaba Cloud account: its AccessKey pairs (id -> secret) and RAM roles.

    Each account has caches and container groups of its own. An `AccountConfig` with the
    default account's id adds keys and roles to the default account.
    """

    account_id: str
    access_keys: dict[str, str] = field(default_factory=dict, repr=False)
    roles: list[RoleConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _ACCOUNT_ID.match(self.account_id):
            raise ValueError(f"account id {self.account_id!r}: use up to 20 digits")
        names = [role.name.lower() for role in self.roles]
        if len(set(names)) != len(names):
            raise ValueError(f"account {self.account_id}: role names must be unique")
        for key_id, secret in self.access_keys.items():
            if not key_id or not secret:
                raise ValueError(f"account {self.account_id}: empty AccessKey id or secret")

    def __repr__(self) -> str:  # key ids only, never secrets
        return f"AccountConfig(account_id={self.account_id!r}, access_keys={sorted(self.access_keys)}, roles={self.roles!r})"


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    access_key_id: str = field(
        default_factory=lambda: _environment_or(ACCESS_KEY_ID_VARIABLE, DEFAULT_ACCESS_KEY_ID)
    )
    access_key_secret: str = field(
        default_factory=lambda: _environment_or(ACCESS_KEY_SECRET_VARIABLE, DEFAULT_ACCESS_KEY_SECRET),
        repr=False,
    )
    # When set the key pair is an STS one: every request must carry this token.
    security_token: str | None = field(default=None, repr=False)
    # The account the pair above belongs to; `accounts` adds others (or keys and roles to this one).
    account_id: str = DEFAULT_ACCOUNT_ID
    accounts: list[AccountConfig] = field(default_factory=list)
    # HTTPS beside HTTP (the credentials library calls STS over https only): a local CA and a
    # server certificate for 127.0.0.1 are written to `tls_dir` (a CA found there is reused),
    # or to a temporary directory removed at stop.
    tls: bool = True
    tls_port: int = 0  # 0 picks a free port
    tls_dir: str | Path | None = None
    # The shortest STS session AssumeRole grants (STS: 900 s); lower it for tests that expire keys.
    sts_min_duration_seconds: int = STS_MIN_DURATION_SECONDS
    time_scale: float = DEFAULT_TIME_SCALE
    quota: int = DEFAULT_QUOTA  # data caches per region; 0 = unlimited
    rate_limit: float = 0.0  # ECI requests per second per account (all its keys); 0 = unlimited
    fault_500_rate: float = 0.0
    fault_503_rate: float = 0.0
    fault_throttle_rate: float = 0.0
    fault_latency_ms: float = 0.0
    fault_drop_rate: float = 0.0
    fault_actions: list[str] | None = None  # None = faults apply to every action
    seed: int | None = None  # fixes fault rolls and generated ids
    state_file: str | Path | None = None
    durations: CloudDurations = field(default_factory=CloudDurations)
    # Tests count calls across a whole session: keep plenty before the oldest are dropped.
    call_log_limit: int = 50_000

    def __post_init__(self) -> None:
        if self.time_scale < 0:
            raise ValueError("time_scale must not be negative")
        if self.quota < 0:
            raise ValueError("quota must not be negative")
        if self.rate_limit < 0:
            raise ValueError("rate_limit must not be negative")
        for name in ("fault_500_rate", "fault_503_rate", "fault_throttle_rate", "fault_drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.fault_latency_ms < 0:
            raise ValueError("fault_latency_ms must not be negative")
        if not 1 <= self.sts_min_duration_seconds <= STS_DEFAULT_MAX_DURATION_SECONDS:
            raise ValueError(f"sts_min_duration_seconds must be 1..{STS_DEFAULT_MAX_DURATION_SECONDS}")
        if not _ACCOUNT_ID.match(self.account_id):
            raise ValueError(f"account id {self.account_id!r}: use up to 20 digits")
        key_ids = [self.access_key_id, *(key for account in self.accounts for key in account.access_keys)]
        twice = sorted({key for key in key_ids if key_ids.count(key) > 1})
        if twice:
            raise ValueError(f"AccessKey ids given twice: {twice}")
        if self.fault_actions is not None:
            unknown = set(self.fault_actions) - set(ACTIONS)
            if unknown:
                raise ValueError(f"unknown actions in fault_actions: {sorted(unknown)}")
