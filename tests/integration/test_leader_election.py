"""Two or three operator replicas against the real apiserver and the emulator: one Lease,
one replica acting, handovers on SIGKILL, SIGTERM and SIGSTOP, never a second cache.

Short lease timings keep the tests quick: LeaseDuration 3 s, RenewDeadline 2 s, RetryPeriod
0.5 s (the SIGTERM test uses a 30 s LeaseDuration, so that a takeover within 10 s can only
come from the Lease being released).
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.support import Kube, OperatorProcess, wait_for
from tests.integration.test_datacache_lifecycle import caches_owned_by, datacache, unique
from tests.support.controlplane import ControlPlane, free_port

LEASE = "eci-datacache-operator"
FAST = {
    "DATACACHE_LEADER_ELECTION_LEASE_DURATION": "3",
    "DATACACHE_LEADER_ELECTION_RENEW_DEADLINE": "2",
    "DATACACHE_LEADER_ELECTION_RETRY_PERIOD": "0.5",
}


class Replicas:
    """Operator processes sharing one Lease in the test's namespace."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.by_name: dict[str, OperatorProcess] = {}

    def start(self, name: str, **extra: str) -> OperatorProcess:
        env = {
            **self.env,
            **extra,
            "POD_NAME": name,
            "DATACACHE_HEALTH_PORT": str(free_port()),
            "DATACACHE_METRICS_PORT": str(free_port()),
        }
        process = OperatorProcess(env, self.folder / f"{name}.log")
        process.start()  # healthy at once: every replica serves health, leader or not
        self.by_name[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.by_name.values():
            process.stop()


@pytest.fixture
def replicas(
    operator_env: dict[str, str], namespace: str, datacache_crds: list[str], tmp_path: Path
) -> Iterator[Replicas]:
    env = {
        **operator_env,
        **FAST,
        "DATACACHE_LEADER_ELECTION": "true",
        "DATACACHE_OPERATOR_NAMESPACE": namespace,
    }
    running = Replicas(env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def holder(controlplane: ControlPlane, namespace: str) -> str:
    result = controlplane.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return ""
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")


def new_leader(controlplane: ControlPlane, namespace: str, old: str) -> str:
    """Until another replica than `old` holds the Lease; its name."""
    found: str = wait_for(
        lambda: (h := holder(controlplane, namespace)) and h != old and h, timeout=30, what="a new leader"
    )
    return found


def leader_gauge(process: OperatorProcess) -> float:
    port = process.env["DATACACHE_METRICS_PORT"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("datacache_leader ")))


def acted(process: OperatorProcess, since: int = 0) -> list[str]:
    """Lines of the process's log showing a cloud call or a status write (the operator's
    own actions; kopf's bookkeeping patches of finalizers and annotations are not counted)."""
    lines = process.log()[since:].splitlines()
    return [
        line
        for line in lines
        if "ECI call " in line or ("PATCH /apis/eci.datacache.dev/" in line and "/status " in line)
    ]


def one_cache_each(eci: Any, kube: Kube, names: list[str]) -> None:
    for name in names:
        uid = kube.get("datacache", name)["metadata"]["uid"]  # type: ignore[index]
        assert len(caches_owned_by(eci, uid)) == 1, f"{name} has {len(caches_owned_by(eci, uid))} caches"


def test_exactly_one_replica_acts(
    replicas: Replicas, kube: Kube, controlplane: ControlPlane, namespace: str, eci: Any
):
    for name in ("op-a", "op-b", "op-c"):
        replicas.start(name)
    leader = wait_for(lambda: holder(controlplane, namespace), what="a leader")
    names = [unique("one") for _ in range(3)]
    for name in names:
        kube.apply(datacache(name))
    for name in names:
        kube.wait_condition("datacache", name, "Ready", "True")
    one_cache_each(eci, kube, names)
    for name, process in replicas.by_name.items():
        if name == leader:
            assert acted(process) and leader_gauge(process) == 1
        else:
            assert not acted(process), f"{name} acted without the lease: {acted(process)[:3]}"
            assert leader_gauge(process) == 0
    assert holder(controlplane, namespace) == leader  # renewed all along, never handed over


def test_sigkill_of_the_leader_hands_over_and_the_new_leader_converges(
    replicas: Replicas, kube: Kube, controlplane: ControlPlane, namespace: str, eci: Any
):
    for name in ("op-a", "op-b"):
        replicas.start(name)
    first = wait_for(lambda: holder(controlplane, namespace), what="a leader")
    before = unique("before")
    kube.apply(datacache(before))
    kube.wait_condition("datacache", before, "Ready", "True")

    replicas.by_name[first].kill()
    after = unique("after")
    kube.apply(datacache(after))  # created after the kill: only the new leader can build it
    second = new_leader(controlplane, namespace, first)
    kube.wait_condition("datacache", after, "Ready", "True", timeout=60)
    one_cache_each(eci, kube, [before, after])
    assert acted(replicas.by_name[second])


def test_sigterm_of_the_leader_releases_the_lease(
    replicas: Replicas, kube: Kube, controlplane: ControlPlane, namespace: str, eci: Any
):
    slow = {
        "DATACACHE_LEADER_ELECTION_LEASE_DURATION": "30",
        "DATACACHE_LEADER_ELECTION_RENEW_DEADLINE": "20",
    }
    for name in ("op-a", "op-b"):
        replicas.start(name, **slow)
    first = wait_for(lambda: holder(controlplane, namespace), what="a leader")
    name = unique("term")
    kube.apply(datacache(name))
    kube.wait_condition("datacache", name, "Ready", "True")

    process = replicas.by_name[first]
    os.killpg(process.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
    assert process.process.wait(20) == 0  # type: ignore[union-attr]
    assert "released the lease" in process.log()
    # Well inside the 30 s lease: only a released Lease is taken this fast.
    wait_for(
        lambda: holder(controlplane, namespace) not in ("", first),
        timeout=10,
        what="the other replica leading",
    )
    late = unique("late")
    kube.apply(datacache(late))
    kube.wait_condition("datacache", late, "Ready", "True", timeout=60)
    one_cache_each(eci, kube, [name, late])


def test_a_frozen_leader_is_replaced_and_exits_without_acting_when_resumed(
    replicas: Replicas, kube: Kube, controlplane: ControlPlane, namespace: str, eci: Any
):
    for name in ("op-a", "op-b"):
        replicas.start(name)
    first = wait_for(lambda: holder(controlplane, namespace), what="a leader")
    name = unique("frozen")
    kube.apply(datacache(name))
    kube.wait_condition("datacache", name, "Ready", "True")
    frozen = replicas.by_name[first]
    pid = frozen.process.pid  # type: ignore[union-attr]

    os.killpg(pid, signal.SIGSTOP)  # a frozen or partitioned leader
    try:
        second = new_leader(controlplane, namespace, first)
        during = unique("during")
        kube.apply(datacache(during))  # work for the frozen one to find when it wakes up
        kube.wait_condition("datacache", during, "Ready", "True", timeout=60)
        resumed_at = len(frozen.log())
    finally:
        os.killpg(pid, signal.SIGCONT)
    assert frozen.process.wait(30) == 1  # type: ignore[union-attr]
    assert "leader election lost" in frozen.log()[resumed_at:]
    assert not acted(frozen, since=resumed_at), acted(frozen, since=resumed_at)
    assert holder(controlplane, namespace) == second
    one_cache_each(eci, kube, [name, during])
