"""Running the emulator: state file across restarts, the CLI as a subprocess, many connections."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from alibabacloud_eci20180808 import models
from eci_datacache_emulator import Emulator, EmulatorConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin
from emulator_support import ONE_HOUR, REGION, create_request, describe, describe_one, make_client

START_TIMEOUT = 20.0


def test_state_file_keeps_caches_tokens_and_clock_across_restarts(tmp_path, emulator_config):
    emulator_config.state_file = tmp_path / "state" / "emulator.json"
    with Emulator(emulator_config).in_thread() as first_run:
        client = make_client(first_run.endpoint)
        ready = client.create_data_cache(create_request("/ready", client_token="uid-1")).body.data_cache_id
        EmulatorAdmin(first_run.admin_url).advance(ONE_HOUR)
        loading = client.create_data_cache(create_request("/loading")).body.data_cache_id
        offset = EmulatorAdmin(first_run.admin_url).clock()["offsetSeconds"]

    assert emulator_config.state_file.exists()
    with Emulator(emulator_config).in_thread() as second_run:
        client = make_client(second_run.endpoint)
        admin = EmulatorAdmin(second_run.admin_url)
        assert admin.clock()["offsetSeconds"] == offset
        assert describe_one(client, ready).status == "Available"
        assert describe_one(client, loading).status in ("Creating", "Loading")
        again = client.create_data_cache(create_request("/ready", client_token="uid-1")).body.data_cache_id
        assert again == ready
        fresh = client.create_data_cache(create_request("/new")).body.data_cache_id
        assert fresh not in (ready, loading)
        admin.advance(ONE_HOUR)
        assert describe_one(client, loading).status == "Available"


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return process.stdout.readline()


def test_cli_prints_its_endpoint_first_serves_and_exits_on_sigterm(tmp_path):
    environment = {
        **os.environ,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "cli-key",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "cli-secret",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eci_datacache_emulator",
            "--port",
            "0",
            "--seed",
            "1",
            "--quota",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        first_line = _read_line(process, START_TIMEOUT)
        match = re.fullmatch(r"ECI_ENDPOINT=(127\.0\.0\.1:\d+)\n", first_line)
        assert match, first_line
        endpoint = match.group(1)
        client = make_client(endpoint, access_key_id="cli-key", access_key_secret="cli-secret")
        data_cache_id = client.create_data_cache(create_request()).body.data_cache_id
        assert describe_one(client, data_cache_id).status == "Creating"
        assert EmulatorAdmin(f"http://{endpoint}/_emulator").state()["quota"] == 5

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT) == 0
        assert "cli-secret" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_bad_settings():
    result = subprocess.run(
        [sys.executable, "-m", "eci_datacache_emulator", "--fault-500-rate", "3"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 2
    assert "fault_500_rate" in result.stderr


def test_many_keep_alive_clients_at_once(emulator, client):
    created = [
        client.create_data_cache(create_request(f"/m/{index}")).body.data_cache_id for index in range(20)
    ]

    def worker(_: int) -> int:
        own_client = make_client(emulator.endpoint)  # its own pooled keep-alive connection
        return sum(len(describe(own_client, data_cache_id=created).data_caches) for _ in range(5))

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(worker, range(64)))
    assert results == [100] * 64


async def test_many_concurrent_async_calls(async_emulator):
    client = make_client(async_emulator.endpoint)
    request = models.DescribeDataCachesRequest(region_id=REGION)
    started = time.monotonic()
    answers = await asyncio.gather(*(client.describe_data_caches_async(request) for _ in range(100)))
    assert all(answer.status_code == 200 for answer in answers)
    assert len({answer.body.request_id for answer in answers}) == 100
    assert time.monotonic() - started < 30


def test_in_thread_emulator_stops_cleanly_with_connections_open():
    config = EmulatorConfig(access_key_id="k", access_key_secret="s")
    emulator = Emulator(config)
    with emulator.in_thread():
        describe(make_client(emulator.endpoint, access_key_id="k", access_key_secret="s"))
    started = time.monotonic()
    with emulator.in_thread():  # the same object can serve again
        describe(make_client(emulator.endpoint, access_key_id="k", access_key_secret="s"))
    assert time.monotonic() - started < 10
