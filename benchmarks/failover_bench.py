"""Leader failover: two replicas with leader election (the chart's lease settings unless told
otherwise), the leader stopped by SIGKILL or SIGTERM, and the seconds until the new leader's
first ECI call.

* ``sigkill_s``: kill -> the other replica's first cloud call (target <= LeaseDuration + 5 s:
  the Lease must expire first, as measured on the candidate's clock);
* ``sigterm_s``: SIGTERM -> the other replica's first cloud call (target <= 3 s: the leader
  releases the Lease on its way out, the candidate takes it at its next retry).

Both times come from this machine's wall clock: the benchmark's own before the signal, the
operator's log line ("ECI call ...", written right before a request is sent) after it.

    .venv/bin/python benchmarks/failover_bench.py [--trials 3] [--lease-duration 15 ...]

writes ``benchmarks/results/failover.json`` and its table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
for _proxy_variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_proxy_variable, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.binding_bench import (  # noqa: E402
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    GROUP,
    NAMESPACE,
    VERSION,
    api_client,
    datacache,
    operator_env,
    ready,
    wait,
)
from benchmarks.floors import rnd  # noqa: E402
from benchmarks.machine import machine, wait_healthy  # noqa: E402
from benchmarks.readme import put_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = Path(__file__).parent / "results" / "failover.json"
OBJECTS = 5


class Replica:
    def __init__(self, base_env: dict[str, str], work: Path, identity: str) -> None:
        from tests.support.controlplane import free_port

        self.identity = identity
        self.health = free_port()
        self.log_path = work / f"{identity}.log"
        env = {**base_env, "POD_NAME": identity, "DATACACHE_HEALTH_PORT": str(self.health)}
        env["DATACACHE_METRICS_PORT"] = str(free_port())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "datacache_operator", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_healthy(self.process, self.health)

    def first_call_after(self, since: float) -> float | None:
        """Wall time of this replica's first ECI call logged after `since`."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "ECI call " not in line or not line.startswith("["):
                continue
            stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp > since:
                return stamp
        return None

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)
        self.process.wait(60)


def lease_holder(plane: Any) -> str:
    found = plane.kubectl(
        "get", "lease", "eci-datacache-operator", "-n", NAMESPACE, "-o", "json", check=False
    )
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "") if found.returncode == 0 else ""


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eci_datacache_emulator import Emulator, EmulatorConfig
    from kubernetes import client
    from tests.support.controlplane import ControlPlane

    work = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    figures: dict[str, list[float]] = {"sigkill": [], "sigterm": []}
    with ControlPlane() as plane:
        plane.install_crds(REPO / "deploy" / "crds")
        plane.kubectl("create", "namespace", NAMESPACE)
        emulator_config = EmulatorConfig(
            access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, time_scale=0.02, quota=0
        )
        with Emulator(emulator_config).in_thread() as emulator:
            base = operator_env(
                plane,
                emulator,
                DATACACHE_POLL_INTERVAL_STABLE="30",
                DATACACHE_LEADER_ELECTION="true",
                DATACACHE_LEADER_ELECTION_LEASE_DURATION=str(args.lease_duration),
                DATACACHE_LEADER_ELECTION_RENEW_DEADLINE=str(args.renew_deadline),
                DATACACHE_LEADER_ELECTION_RETRY_PERIOD=str(args.retry_period),
                DATACACHE_LOG_LEVEL="DEBUG",  # the "ECI call" lines
            )
            custom = client.CustomObjectsApi(api_client(plane))
            replicas = {name: Replica(base, work, name) for name in ("r-0", "r-1")}
            count = 2
            try:
                for index in range(OBJECTS):
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, "datacaches", datacache(f"m-{index}")
                    )
                for index in range(OBJECTS):
                    wait(
                        lambda i=index: ready(
                            custom.get_namespaced_custom_object(
                                GROUP, VERSION, NAMESPACE, "datacaches", f"m-{i}"
                            )
                        ),
                        90,
                        "Ready",
                    )
                for kind, signum in (("sigkill", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
                    for _ in range(args.trials):
                        leader = wait(lambda: lease_holder(plane), 60, "a leader")
                        standby = next(r for n, r in replicas.items() if n != leader)
                        time.sleep(args.retry_period * 2)  # a steady state: the standby retrying
                        before = time.time()
                        replicas[leader].signal(signum)
                        first = wait(
                            lambda s=standby, b=before: s.first_call_after(b),
                            120,
                            "the new leader's first call",
                        )
                        figures[kind].append(first - before)
                        del replicas[leader]
                        name = f"r-{count}"  # a new pod, as a ReplicaSet would make
                        count += 1
                        replicas[name] = Replica(base, work, name)
            finally:
                for replica in replicas.values():
                    if replica.process.poll() is None:
                        replica.signal(signal.SIGTERM)
    return {
        "sigkill_s": [rnd(v, 2) for v in figures["sigkill"]],
        "sigterm_s": [rnd(v, 2) for v in figures["sigterm"]],
        "sigkill_max_s": rnd(max(figures["sigkill"]), 2),
        "sigterm_max_s": rnd(max(figures["sigterm"]), 2),
    }


def table(result: dict[str, Any]) -> str:
    lease = result["lease"]
    kill_target = lease["lease_duration_s"] + 5
    rows = [
        (
            "SIGKILL of the leader -> first ECI call of the new one (s)",
            result["sigkill_s"],
            f"<= {kill_target:g}",
            result["sigkill_max_s"] <= kill_target,
        ),
        (
            "SIGTERM of the leader -> first ECI call of the new one (s)",
            result["sigterm_s"],
            "<= 3",
            result["sigterm_max_s"] <= 3,
        ),
    ]
    lines = [
        f"Run {result['finished_at']}, LeaseDuration {lease['lease_duration_s']:g} s, RenewDeadline "
        f"{lease['renew_deadline_s']:g} s, RetryPeriod {lease['retry_period_s']:g} s, {result['trials']} trials each",
        "",
        "| figure | each trial | target | met (worst trial) |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {', '.join(map(str, values))} | {target} | {'yes' if met else 'NO'} |"
            for name, values, target, met in rows
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = run(args)
    result.update(
        trials=args.trials,
        lease={
            "lease_duration_s": args.lease_duration,
            "renew_deadline_s": args.renew_deadline,
            "retry_period_s": args.retry_period,
        },
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
    )
    RESULT_FILE.write_text(json.dumps(result, indent=2) + "\n")
    put_table("failover-bench", "Leader failover (`benchmarks/failover_bench.py`)", table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
