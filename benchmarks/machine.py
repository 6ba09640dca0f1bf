"""What the benchmarks read of the machine and of their processes: CPU seconds and memory from
/proc, the machine's CPU use (and a warning when it is busy before a run), a description of the
machine for the results, and the operator's health endpoint."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

# A run started on a machine busier than this is flagged: its figures are not comparable.
BUSY_BEFORE_WARNING_PCT = 10.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def processes_cpu(pids: dict[str, int]) -> dict[str, float]:
    """name -> CPU seconds so far, of the processes still running."""
    result: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            result[name] = cpu_seconds(pid)
        except OSError:
            pass
    return result


def machine_cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The machine's CPU use (%) between two ``machine_cpu_busy`` readings."""
    return (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 100


def idle_machine_check(label: str, seconds: float = 3.0) -> float:
    """The machine's CPU use (%) over a few seconds before a run starts anything: anything
    else running then takes CPU from the apiserver and the operator, and the figures with it."""
    before = machine_cpu_busy()
    time.sleep(seconds)
    after = machine_cpu_busy()
    busy = round(busy_pct(before, after), 1)
    if busy > BUSY_BEFORE_WARNING_PCT:
        print(f"[{label}] warning: the machine was {busy} % busy before this run started", flush=True)
    return busy


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "note": "control plane, emulator, operator and the benchmark share these CPUs; "
        "other people's test runs may share them too (see each run's machine_busy_pct)",
    }


def wait_healthy(operator: subprocess.Popen[bytes], port: int) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + 90
    while time.time() < deadline:
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the operator's health endpoint never answered")
