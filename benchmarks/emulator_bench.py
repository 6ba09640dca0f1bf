"""How many DescribeDataCaches calls per second the emulator sustains, signatures checked.

The emulator runs as its own process (``eci-datacache-emulator``), as it does for the
operator's tests; a few client processes each drive the official SDK (sync client, V3
signatures, one keep-alive connection each) in a loop of DescribeDataCaches with 20 ids
until the time is up. Clients and server share this machine's CPUs, so the calls/s figure
is a lower bound of the server's capacity; ``calls_per_server_cpu_second`` says what one
core of server time buys.

    .venv/bin/python benchmarks/emulator_bench.py [--duration 20] [--clients 3]

writes ``benchmarks/results/emulator.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
for _proxy_variable in ("HTTP_PROXY", "http_proxy"):
    os.environ.pop(_proxy_variable, None)

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

ACCESS_KEY_ID = "bench-access-key-id"
ACCESS_KEY_SECRET = "bench-access-key-secret"
REGION = "cn-hangzhou"
IDS_PER_CALL = 20
WARM_UP_SECONDS = 2.0
RESULT_FILE = Path(__file__).parent / "results" / "emulator.json"


def sdk_client(endpoint: str):
    from alibabacloud_eci20180808.client import Client
    from alibabacloud_tea_openapi import models as openapi_models

    config = openapi_models.Config(
        access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, endpoint=endpoint, protocol="http"
    )
    return Client(config)


def create_caches(endpoint: str, count: int) -> list[str]:
    from alibabacloud_eci20180808 import models

    client = sdk_client(endpoint)
    source = models.CreateDataCacheRequestDataSource(type="URL", options={"url": "https://example.com/m.tar"})
    return [
        client.create_data_cache(
            models.CreateDataCacheRequest(region_id=REGION, path=f"/bench/{index}", data_source=source)
        ).body.data_cache_id
        for index in range(count)
    ]


def client_worker(endpoint: str, ids: list[str], start_at: float, stop_at: float, results) -> None:
    """Call until `stop_at`; report calls, errors and latencies made after `start_at`."""
    from alibabacloud_eci20180808 import models

    client = sdk_client(endpoint)
    request = models.DescribeDataCachesRequest(region_id=REGION, data_cache_id=ids)
    calls = errors = 0
    latencies: list[float] = []
    while True:
        before = time.time()
        if before >= stop_at:
            break
        try:
            body = client.describe_data_caches(request).body
            ok = len(body.data_caches) == len(ids)
        except Exception:
            ok = False
        after = time.time()
        if before >= start_at:
            calls += 1
            errors += 0 if ok else 1
            latencies.append((after - before) * 1000)
    results.put((calls, errors, latencies))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def start_emulator() -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "eci_datacache_emulator",
        "--port",
        "0",
        "--access-key-id",
        ACCESS_KEY_ID,
        "--access-key-secret",
        ACCESS_KEY_SECRET,
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    match = re.fullmatch(r"ECI_ENDPOINT=(\S+)\n", line)
    if not match:
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, match.group(1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    args = parser.parse_args()

    emulator, endpoint = start_emulator()
    try:
        ids = create_caches(endpoint, IDS_PER_CALL)
        start_at = time.time() + WARM_UP_SECONDS
        stop_at = start_at + args.duration
        results = multiprocessing.get_context("spawn").Queue()
        workers = [
            multiprocessing.get_context("spawn").Process(
                target=client_worker, args=(endpoint, ids, start_at, stop_at, results)
            )
            for _ in range(args.clients)
        ]
        for worker in workers:
            worker.start()
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = cpu_seconds(emulator.pid)
        time.sleep(max(0.0, stop_at - time.time()))
        cpu_used = cpu_seconds(emulator.pid) - cpu_before
        reports = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)

    calls = sum(report[0] for report in reports)
    errors = sum(report[1] for report in reports)
    latencies = [latency for report in reports for latency in report[2]]
    result = {
        "benchmark": "emulator DescribeDataCaches, ACS3-HMAC-SHA256 signatures verified",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "calls_per_second": round(calls / args.duration, 1),
        "calls_per_server_cpu_second": round(calls / cpu_used, 1) if cpu_used else None,
        "server_cpu_share": round(cpu_used / args.duration, 2),
        "duration_seconds": args.duration,
        "clients": args.clients,
        "ids_per_call": IDS_PER_CALL,
        "calls": calls,
        "errors": errors,
        "latency_ms": {
            "mean": round(statistics.fmean(latencies), 2) if latencies else None,
            "p50": percentile(latencies, 0.50) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "clients, server and other work share these CPUs",
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
