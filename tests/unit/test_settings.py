"""OperatorSettings: exact environment names, defaults, flags over environment, no secrets."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from datacache_operator.settings import (
    OperatorSettings,
    add_settings_arguments,
    is_loopback_endpoint,
    settings_from_args,
)

ENV_NAMES = {
    "default_region": "DATACACHE_DEFAULT_REGION",
    "endpoint": "ECI_ENDPOINT",
    "endpoint_template": "ECI_ENDPOINT_TEMPLATE",
    "protocol": "ECI_PROTOCOL",
    "rate_limit": "DATACACHE_RATE_LIMIT",
    "rate_burst": "DATACACHE_RATE_BURST",
    "poll_interval_loading": "DATACACHE_POLL_INTERVAL_LOADING",
    "poll_interval_stable": "DATACACHE_POLL_INTERVAL_STABLE",
    "poll_jitter": "DATACACHE_POLL_JITTER",
    "namespaces": "DATACACHE_NAMESPACES",
    "default_deletion_policy": "DATACACHE_DEFAULT_DELETION_POLICY",
    "batching": "DATACACHE_BATCHING",
    "describe_batch_window": "DATACACHE_DESCRIBE_BATCH_WINDOW",
    "max_concurrent_passes": "DATACACHE_MAX_CONCURRENT_PASSES",
    "connect_timeout": "DATACACHE_CONNECT_TIMEOUT",
    "read_timeout": "DATACACHE_READ_TIMEOUT",
    "metrics_port": "DATACACHE_METRICS_PORT",
    "health_port": "DATACACHE_HEALTH_PORT",
    "log_level": "DATACACHE_LOG_LEVEL",
    "log_json": "DATACACHE_LOG_JSON",
    "cluster_region": "DATACACHE_CLUSTER_REGION",
    "operator_namespace": "DATACACHE_OPERATOR_NAMESPACE",
    "cluster_id": "DATACACHE_CLUSTER_ID",
    "sts_endpoint": "DATACACHE_STS_ENDPOINT",
    "huggingface_endpoint": "DATACACHE_HUGGINGFACE_ENDPOINT",
    "modelscope_endpoint": "DATACACHE_MODELSCOPE_ENDPOINT",
    "tenancy": "DATACACHE_TENANCY",
    "rollouts": "DATACACHE_ROLLOUTS",
    "regions": "DATACACHE_REGIONS",
    "max_regions": "DATACACHE_MAX_REGIONS",
    "eci_placement": "DATACACHE_ECI_PLACEMENT",
    "eci_node_selector": "DATACACHE_ECI_NODE_SELECTOR",
    "eci_toleration": "DATACACHE_ECI_TOLERATION",
    "webhook_port": "DATACACHE_WEBHOOK_PORT",
    "webhook_certificate": "DATACACHE_WEBHOOK_CERTIFICATE",
    "webhook_secret": "DATACACHE_WEBHOOK_SECRET",
    "webhook_hosts": "DATACACHE_WEBHOOK_HOSTS",
    "webhook_configuration": "DATACACHE_WEBHOOK_CONFIGURATION",
    "pod_resync_interval": "DATACACHE_POD_RESYNC_INTERVAL",
    "leader_election": "DATACACHE_LEADER_ELECTION",
    "leader_election_lease_name": "DATACACHE_LEADER_ELECTION_LEASE_NAME",
    "leader_election_identity": "POD_NAME",
    "leader_election_lease_duration": "DATACACHE_LEADER_ELECTION_LEASE_DURATION",
    "leader_election_renew_deadline": "DATACACHE_LEADER_ELECTION_RENEW_DEADLINE",
    "leader_election_retry_period": "DATACACHE_LEADER_ELECTION_RETRY_PERIOD",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)


def test_every_field_has_its_documented_environment_variable() -> None:
    assert set(OperatorSettings.model_fields) == set(ENV_NAMES)
    for field_name, env_name in ENV_NAMES.items():
        alias = OperatorSettings.model_fields[field_name].validation_alias
        assert alias.choices == [env_name]  # type: ignore[union-attr]


def test_defaults() -> None:
    settings = OperatorSettings()
    assert settings.default_region == "cn-hangzhou"
    assert settings.endpoint is None
    assert settings.endpoint_for("cn-beijing") == "eci.cn-beijing.aliyuncs.com"
    assert settings.effective_protocol == "https"
    assert settings.rate_limit == 10 and settings.effective_rate_burst == 10
    assert (settings.poll_interval_loading, settings.poll_interval_stable, settings.poll_jitter) == (
        5,
        300,
        0.1,
    )
    assert settings.namespaces == []
    assert settings.default_deletion_policy == "Delete"
    assert settings.batching is True and settings.describe_batch_window == 0.05
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)
    assert (settings.log_level, settings.log_json) == ("INFO", False)
    # The webhook is off unless asked for (the chart asks); pods run in the default region.
    assert settings.webhook_port == 0 and settings.effective_cluster_region == "cn-hangzhou"
    assert settings.rollouts is False  # workloads are rolled only when the chart enables it
    assert settings.effective_webhook_hosts == ["eci-datacache-operator-webhook.eci-datacache-system.svc"]


def test_values_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACACHE_DEFAULT_REGION", "cn-shanghai")
    monkeypatch.setenv("ECI_ENDPOINT_TEMPLATE", "eci-vpc.{region}.aliyuncs.com")
    monkeypatch.setenv("DATACACHE_RATE_LIMIT", "2.5")
    monkeypatch.setenv("DATACACHE_NAMESPACES", " team-a, team-b ,,")
    monkeypatch.setenv("DATACACHE_DEFAULT_DELETION_POLICY", "retain")
    monkeypatch.setenv("DATACACHE_BATCHING", "false")
    monkeypatch.setenv("DATACACHE_LOG_LEVEL", "debug")
    monkeypatch.setenv("DATACACHE_READ_TIMEOUT", "3")
    settings = OperatorSettings()
    assert settings.default_region == "cn-shanghai"
    assert settings.endpoint_for("cn-shanghai") == "eci-vpc.cn-shanghai.aliyuncs.com"
    assert settings.rate_limit == 2.5 and settings.effective_rate_burst == 3
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.default_deletion_policy == "Retain"
    assert settings.batching is False
    assert settings.log_level == "DEBUG"
    assert settings.read_timeout == 3


def test_endpoint_overrides_every_region_and_loopback_defaults_to_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ECI_ENDPOINT", "127.0.0.1:18082")
    settings = OperatorSettings()
    assert settings.endpoint_for("cn-hangzhou") == settings.endpoint_for("us-west-1") == "127.0.0.1:18082"
    assert settings.effective_protocol == "http"
    monkeypatch.setenv("ECI_PROTOCOL", "HTTPS")
    assert OperatorSettings().effective_protocol == "https"


def test_scheme_in_endpoint_sets_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECI_ENDPOINT", "http://eci.example.test:8080")
    settings = OperatorSettings()
    assert settings.endpoint_for("x") == "eci.example.test:8080"
    assert settings.effective_protocol == "http"
    monkeypatch.setenv("ECI_PROTOCOL", "https")
    with pytest.raises(ValidationError, match="ECI_PROTOCOL"):
        OperatorSettings()


def test_empty_environment_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECI_ENDPOINT", "")
    assert OperatorSettings().endpoint is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ECI_ENDPOINT", "127.0.0.1:1/path"),
        ("ECI_ENDPOINT_TEMPLATE", "eci.aliyuncs.com"),
        ("ECI_ENDPOINT_TEMPLATE", "eci.{zone}.aliyuncs.com"),
        ("ECI_PROTOCOL", "ftp"),
        ("DATACACHE_RATE_LIMIT", "0"),
        ("DATACACHE_RATE_BURST", "0"),
        ("DATACACHE_POLL_JITTER", "1.5"),
        ("DATACACHE_DEFAULT_DELETION_POLICY", "Orphan"),
        ("DATACACHE_METRICS_PORT", "70000"),
    ],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        OperatorSettings()


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACACHE_RATE_LIMIT", "3")
    monkeypatch.setenv("DATACACHE_DEFAULT_REGION", "cn-beijing")
    parser = argparse.ArgumentParser()
    parser.add_argument("--unrelated", default="x")
    add_settings_arguments(parser)
    args = parser.parse_args(
        ["--rate-limit", "7", "--no-batching", "--namespaces", "a,b", "--log-level", "warning"]
    )
    settings = settings_from_args(args)
    assert settings.rate_limit == 7  # flag beats environment
    assert settings.default_region == "cn-beijing"  # not given as a flag: environment stays
    assert settings.batching is False
    assert settings.namespaces == ["a", "b"]
    assert settings.log_level == "WARNING"


def test_overrides_mapping_ignores_none_and_rejects_typos() -> None:
    assert settings_from_args({"rate_burst": 4, "endpoint": None}).rate_burst == 4
    with pytest.raises(ValueError, match="rate_limt"):
        settings_from_args({"rate_limt": 4})


def test_settings_never_show_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-should-not-appear")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "secret-should-not-appear")
    settings = OperatorSettings()
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "should-not-appear" not in shown
    # webhook_secret is the *name* of the Secret holding the webhook's TLS pair, not a value.
    names = set(OperatorSettings.model_fields) - {"webhook_secret"}
    assert not any("secret" in name or "key" in name for name in names)


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("127.0.0.1:18082", True),
        ("localhost", True),
        ("http://localhost:80", True),
        ("[::1]:8080", True),
        ("127.1.2.3", True),
        ("eci.cn-hangzhou.aliyuncs.com", False),
        ("10.0.0.1:80", False),
    ],
)
def test_loopback_detection(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback
