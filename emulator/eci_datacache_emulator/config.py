"""Settings of one emulator instance, shared by the CLI and in-process use."""

from __future__ import annotations

import os
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
    time_scale: float = DEFAULT_TIME_SCALE
    quota: int = DEFAULT_QUOTA  # data caches per region; 0 = unlimited
    rate_limit: float = 0.0  # requests per second per access key; 0 = unlimited
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
        if self.fault_actions is not None:
            unknown = set(self.fault_actions) - set(ACTIONS)
            if unknown:
                raise ValueError(f"unknown actions in fault_actions: {sorted(unknown)}")
