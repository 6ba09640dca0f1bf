"""What one ECI call costs the operator in CPU: the SDK's blocking call against its ``*_async`` one.

The operator sends every ECI call through the official SDK (``cloud/client.py``). The SDK's
two paths differ below the signature: the blocking one sends through one ``requests``
session per endpoint (kept-alive connections, one SSL context); the async one builds a new
aiohttp session and connection for every call and, over HTTPS, a new SSL context with
certifi's CA bundle loaded into it. This measures, in this process's CPU time
(``time.process_time``, every thread):

* ``http``: DescribeDataCaches (20 ids) against the emulator over HTTP, one call at a time,
  each path, after a warm-up;
* ``https_context_ms``: building the SSL context the async path builds per HTTPS call, and
  the blocking path once per endpoint (the emulator serves HTTP only, so the handshake it
  adds per call is not in these figures).

    .venv/bin/python benchmarks/sdk_call_bench.py [--calls 500]

writes ``benchmarks/results/sdk_calls.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.emulator_bench import IDS_PER_CALL, REGION, create_caches, sdk_client, start_emulator  # noqa: E402

RESULT_FILE = Path(__file__).parent / "results" / "sdk_calls.json"


def cpu_ms_per_call(calls: int, run: Any) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run(calls)
    return {
        "cpu_ms_per_call": round((time.process_time() - cpu) / calls * 1000, 3),
        "wall_ms_per_call": round((time.perf_counter() - wall) / calls * 1000, 3),
    }


def main() -> int:
    import argparse

    import certifi
    from alibabacloud_eci20180808 import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per path (default 500)")
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    args = parser.parse_args()

    emulator, endpoint = start_emulator()
    try:
        ids = create_caches(endpoint, IDS_PER_CALL)
        client = sdk_client(endpoint)
        request = models.DescribeDataCachesRequest(region_id=REGION, data_cache_id=ids)

        def blocking(calls: int) -> None:
            for _ in range(calls):
                client.describe_data_caches(request)

        def in_loop(calls: int) -> None:
            async def go() -> None:
                for _ in range(calls):
                    await client.describe_data_caches_async(request)

            asyncio.run(go())

        blocking(50)  # warm-up: imports, the session, the credential
        in_loop(50)
        results = {
            "blocking": cpu_ms_per_call(args.calls, blocking),
            "async": cpu_ms_per_call(args.calls, in_loop),
        }
    finally:
        emulator.terminate()
        emulator.wait(10)

    def contexts(calls: int) -> None:
        for _ in range(calls):
            ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_verify_locations(certifi.where())

    context = cpu_ms_per_call(50, contexts)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "calls": args.calls,
        "http": results,
        "https_context_ms": context["cpu_ms_per_call"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
