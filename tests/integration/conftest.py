"""The operator as users run it: a `datacache-operator run` process against the real
kube-apiserver and the ECI emulator, one operator per test namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from tests.integration.support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    REPO,
    Kube,
    OperatorProcess,
    wait_until_the_webhook_answers,
    webhook_configuration_manifest,
)
from tests.support.controlplane import ControlPlane, free_port

from datacache_operator import kube as operator_kube


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    from eci_datacache_emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, seed=7)
    with Emulator(config).in_thread() as running:
        yield running


@pytest.fixture
def eci(emulator: Any) -> Any:
    """The emulator's admin client, with faults and rules cleared after each test."""
    from eci_datacache_emulator.admin_client import EmulatorAdmin

    admin = EmulatorAdmin(emulator.admin_url)
    yield admin
    admin.set_faults(
        fault_500_rate=0, fault_503_rate=0, fault_throttle_rate=0, fault_latency_ms=0, fault_drop_rate=0
    )
    admin.clear_rules()


@pytest.fixture(scope="session")
def datacache_crds(controlplane: ControlPlane) -> list[str]:
    names = []
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        controlplane.kubectl("apply", "--server-side", "-f", str(path))
        names.append(path.name.split("_", 1)[1].removesuffix(".yaml") + "." + path.name.split("_", 1)[0])
    for name in names:
        controlplane.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{name}")
    return names


@pytest.fixture
def operator_env(controlplane: ControlPlane, emulator: Any, namespace: str) -> dict[str, str]:
    env = controlplane.env()
    env.update(
        ECI_ENDPOINT=emulator.endpoint,
        ECI_PROTOCOL="http",
        ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET,
        DATACACHE_DEFAULT_REGION="cn-hangzhou",
        # A RAM role of an EciAccount is assumed at the emulator's STS, never the Internet's.
        DATACACHE_STS_ENDPOINT=emulator.sts_endpoint,
        # Hub branches are resolved at the emulator's hubs, never the Internet's.
        DATACACHE_HUGGINGFACE_ENDPOINT=emulator.hub_endpoint("huggingface"),
        DATACACHE_MODELSCOPE_ENDPOINT=emulator.hub_endpoint("modelscope"),
        SSL_CERT_FILE=str(emulator.ca_file),
        DATACACHE_NAMESPACES=namespace,
        DATACACHE_POLL_INTERVAL_LOADING="0.5",
        DATACACHE_POLL_INTERVAL_STABLE="3",
        DATACACHE_RATE_LIMIT="50",
        DATACACHE_HEALTH_PORT=str(free_port()),
        DATACACHE_METRICS_PORT=str(free_port()),
        DATACACHE_LOG_LEVEL="DEBUG",
    )
    return env


@pytest.fixture
def operator(
    operator_env: dict[str, str], datacache_crds: list[str], tmp_path: Path
) -> Iterator[OperatorProcess]:
    running = OperatorProcess(operator_env, tmp_path / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
        log = running.log()
        assert ACCESS_KEY_SECRET not in log, "the access key secret leaked into the operator log"


@pytest.fixture
def kube(controlplane: ControlPlane, namespace: str) -> Kube:
    return Kube(controlplane, namespace)


@pytest.fixture
def webhook_configuration(controlplane: ControlPlane, namespace: str) -> Iterator[dict[str, Any]]:
    """A MutatingWebhookConfiguration like the chart's, calling the operator on 127.0.0.1 and
    limited to the test's namespace (other tests' pods never reach it); no caBundle: the
    operator puts its own CA in."""
    port = free_port()
    name = f"datacache-pods-{namespace}"
    configuration = webhook_configuration_manifest(name, port, namespace)
    controlplane.apply(configuration)
    try:
        yield {"name": name, "port": port}
    finally:
        controlplane.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")


@pytest.fixture
def binding_env(
    operator_env: dict[str, str], namespace: str, webhook_configuration: dict[str, Any]
) -> dict[str, str]:
    return {
        **operator_env,
        "DATACACHE_WEBHOOK_PORT": str(webhook_configuration["port"]),
        "DATACACHE_WEBHOOK_HOSTS": "127.0.0.1",
        "DATACACHE_WEBHOOK_CONFIGURATION": webhook_configuration["name"],
        "DATACACHE_OPERATOR_NAMESPACE": namespace,  # the certificate's Secret goes there
    }


@pytest.fixture
def binding_operator(
    binding_env: dict[str, str], datacache_crds: list[str], tmp_path: Path, kube: Kube
) -> Iterator[OperatorProcess]:
    """The operator serving the pod webhook, started once the apiserver trusts it."""
    running = OperatorProcess(binding_env, tmp_path / "operator.log")
    running.start()
    try:
        wait_until_the_webhook_answers(kube)
        yield running
    finally:
        running.stop()
        log = running.log()
        assert ACCESS_KEY_SECRET not in log, "the access key secret leaked into the operator log"


@pytest.fixture
def kube_in_process(controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """kube's calls from this process to the test's apiserver (the client read its default
    kubeconfig's location when it was imported)."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(controlplane.kubeconfig), client_configuration=configuration
    )
    monkeypatch.setattr(operator_kube, "_configuration", [configuration])
