"""Fair share of the cloud between namespaces: one namespace floods, another is not starved.

One real control plane, the ECI emulator in its own process and the operator as users run it
(`python -m datacache_operator run`, rate limit R calls a second). Two phases:

1. **alone**: SMALL (10) DataCaches are created in the namespace `small-alone` on an idle
   operator: their reactions (the create answered by the apiserver -> the emulator received
   the object's CreateDataCache) are the small namespace's own floor, measured.
2. **flood**: BIG (1,000) DataCaches in `big` and SMALL in `small` are created at once (both
   from their own thread pools, the small ones 0.5 s after the flood starts, so that they
   arrive behind a queue of big ones): the small ones' reactions.

What is judged: the small namespace's p99 under the flood within 1 s of its own floor. Its
floor is what its share of the cloud allows: two namespaces at work get R / 2 calls a second
each, and each first create costs CALLS_PER_CREATE calls, so the k-th small object (in arrival
order, from 1) cannot be created before k x CALLS_PER_CREATE / (R / 2) s (`small_floor_p99_s`;
alone, the same with R). A FIFO limiter would have kept the small ones behind every big object
before them (`fifo_floor_p99_s`: their position in arrival order x calls per object / R).

    .venv/bin/python benchmarks/fairness_bench.py [--big 1000] [--small 10]

writes ``benchmarks/results/fairness.json`` and its table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.floors import percentile, rnd
from benchmarks.machine import machine, wait_healthy

# Importing operator_bench sets the environment the SDK and loopback calls need, before any
# SDK import (they are imported in the functions that call).
from benchmarks.operator_bench import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    CREATE_THREADS,
    GROUP,
    OWNER_UID_TAG,
    PLURAL,
    REGION,
    REPO,
    VERSION,
    kube_api,
    start_emulator,
)
from benchmarks.readme import put_table

RESULT_FILE = Path(__file__).parent / "results" / "fairness.json"
SMALL_DELAY_SECONDS = 0.5
# Each first create costs one describe at its bucket and path (its own cache, lost, or another's) and the create.
CALLS_PER_CREATE = 2


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DataCache",
        "metadata": {"name": name},
        "spec": {
            "path": f"/models/{name}",
            "dataSource": {"type": "URL", "options": {"url": f"https://example.invalid/{name}"}},
        },
    }


def create_all(api: Any, namespace: str, n: int, threads: int) -> dict[str, float]:
    """uid -> when the apiserver answered its create."""

    def one(index: int) -> tuple[str, float]:
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest(f"{namespace}-{index:05d}")
        )
        return created["metadata"]["uid"], time.time()

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, range(n)))


def first_creates(calls: list[dict[str, Any]]) -> dict[str, float]:
    """uid -> when the emulator received the first CreateDataCache carrying it."""
    found: dict[str, float] = {}
    for call in calls:
        if call.get("action") != "CreateDataCache" or call.get("t") is None:
            continue
        params = call.get("params") or {}
        for key, value in params.items():
            if key.startswith("Tag.") and key.endswith(".Key") and value == OWNER_UID_TAG:
                uid = params.get(key.replace(".Key", ".Value"))
                if uid and uid not in found:
                    found[uid] = call["t"]
    return found


def wait_for_creates(admin: Any, uids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.time() + timeout
    while True:
        seen = first_creates(admin.calls())
        if uids <= seen.keys() or time.time() > deadline:
            return {uid: t for uid, t in seen.items() if uid in uids}
        time.sleep(1.0)


def reactions(answered: dict[str, float], created: dict[str, float]) -> list[float]:
    return [created[uid] - t for uid, t in answered.items() if uid in created]


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from eci_datacache_emulator.admin_client import EmulatorAdmin
    from tests.support.controlplane import ControlPlane, free_port

    plane = ControlPlane(root=work / "controlplane")
    plane.start()
    emulator = operator = None
    try:
        for crd in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
            plane.kubectl("apply", "--server-side", "-f", str(crd))
        plane.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
        for namespace in ("small-alone", "big", "small"):
            plane.kubectl("create", "namespace", namespace)
        emulator, endpoint, admin_url = start_emulator(1.0, work / "emulator.log")
        admin = EmulatorAdmin(admin_url, timeout=120)
        health = free_port()
        env = {
            **plane.env(),
            "ECI_ENDPOINT": endpoint,
            "ECI_PROTOCOL": "http",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
            "DATACACHE_DEFAULT_REGION": REGION,
            "DATACACHE_RATE_LIMIT": str(args.rate_limit),
            "DATACACHE_POLL_INTERVAL_LOADING": "30",
            "DATACACHE_POLL_INTERVAL_STABLE": "300",
            "DATACACHE_HEALTH_PORT": str(health),
            "DATACACHE_METRICS_PORT": str(free_port()),
        }
        log = (work / "operator.log").open("ab")
        operator = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "datacache_operator", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_healthy(operator, health)
        time.sleep(3.0)  # kopf's watches start just after /healthz answers
        api = kube_api(plane.kubeconfig)

        print(f"alone: {args.small} DataCaches in small-alone", flush=True)
        alone = create_all(api, "small-alone", args.small, args.small)
        alone_reactions = reactions(alone, wait_for_creates(admin, set(alone), 120))
        time.sleep(2.0)

        print(f"flood: {args.big} in big, then {args.small} in small", flush=True)
        results: dict[str, dict[str, float]] = {}

        def flood() -> None:
            results["big"] = create_all(api, "big", args.big, CREATE_THREADS)

        flooding = threading.Thread(target=flood)
        flooding.start()
        time.sleep(SMALL_DELAY_SECONDS)
        small = create_all(api, "small", args.small, args.small)
        small_created = wait_for_creates(admin, set(small), 300)
        flooding.join()
        big = results["big"]
        big_created = first_creates(admin.calls())
        small_reactions = reactions(small, small_created)
        ahead = [sum(1 for t in big.values() if t <= answered) for answered in small.values()]
        if args.keep:
            (work / "small.json").write_text(
                plane.kubectl("get", "edc", "-n", "small", "-o", "json", "--show-managed-fields").stdout
            )
        (work / "calls.json").write_text(
            json.dumps({"alone": alone, "small": small, "big": big, "calls": admin.calls()})
        )
    finally:
        for process in (operator, emulator):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        plane.stop()

    alone_p99 = percentile(alone_reactions, 0.99)
    flood_p99 = percentile(small_reactions, 0.99)
    share = args.rate_limit / 2
    floor = [(k + 1) * CALLS_PER_CREATE / share for k in range(len(small))]
    alone_floor = [(k + 1) * CALLS_PER_CREATE / args.rate_limit for k in range(len(alone))]
    floor_p99 = percentile(floor, 0.99) or 0.0
    fifo = [(k + 1) * CALLS_PER_CREATE / args.rate_limit for k in ahead]
    return {
        "rate_limit": args.rate_limit,
        "big": args.big,
        "small": args.small,
        "small_alone_p50_s": rnd(percentile(alone_reactions, 0.50)),
        "small_alone_p99_s": rnd(alone_p99),
        "small_alone_floor_p99_s": rnd(percentile(alone_floor, 0.99)),
        "small_flood_p50_s": rnd(percentile(small_reactions, 0.50)),
        "small_flood_p99_s": rnd(flood_p99),
        "small_flood_over_alone_p99_s": rnd((flood_p99 or 0.0) - (alone_p99 or 0.0)),
        "small_floor_p99_s": rnd(floor_p99),
        "small_over_floor_p99_s": rnd((flood_p99 or 0.0) - floor_p99),
        "big_objects_ahead_of_small_p50": int(percentile([float(a) for a in ahead], 0.5) or 0),
        "fifo_floor_p99_s": rnd(percentile(fifo, 0.99)),
        "big_created_when_small_done": sum(
            1 for uid, t in big_created.items() if uid in big and t <= max(small_created.values(), default=0)
        ),
        "small_measured": len(small_reactions),
        "within_a_second_of_its_floor": flood_p99 is not None and flood_p99 - floor_p99 <= 1.0,
    }


def table(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| R calls/s | big / small | small alone p50 / p99 s (floor) | small in the flood p50 / p99 s "
            "| its floor p99 s (R / 2) | over the floor p99 s | FIFO floor p99 s (big ahead p50) "
            "| big objects created before the small were done |",
            "|---|---|---|---|---|---|---|---|",
            f"| {result['rate_limit']} | {result['big']} / {result['small']} "
            f"| {result['small_alone_p50_s']} / {result['small_alone_p99_s']} ({result['small_alone_floor_p99_s']}) "
            f"| {result['small_flood_p50_s']} / {result['small_flood_p99_s']} "
            f"| {result['small_floor_p99_s']} | {result['small_over_floor_p99_s']} "
            f"| {result['fifo_floor_p99_s']} ({result['big_objects_ahead_of_small_p50']}) "
            f"| {result['big_created_when_small_done']} |",
        ]
    )


def update_readme(result: dict[str, Any]) -> None:
    put_table("fairness-bench", "Fair share between namespaces (`make bench-fairness`)", table(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--rate-limit", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", type=Path, help="keep the logs and the emulator's calls in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fairness-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work)
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **result}
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULT_FILE.write_text(json.dumps(result, indent=2) + "\n")
        update_readme(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
