"""``eci-datacache-emulator``: serve the ECI DataCache emulator until interrupted.

The first line on stdout is ``ECI_ENDPOINT=<host>:<port>`` (flushed at once), so a parent
process can start it with ``--port 0`` and read where it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys

from .config import (
    ACCESS_KEY_ID_VARIABLE,
    ACCESS_KEY_SECRET_VARIABLE,
    ACTIONS,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_QUOTA,
    DEFAULT_TIME_SCALE,
    CloudDurations,
    EmulatorConfig,
)
from .server import Emulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument(
        "--access-key-id",
        help=f"accepted AccessKey id (default ${ACCESS_KEY_ID_VARIABLE}, else {DEFAULT_ACCESS_KEY_ID})",
    )
    parser.add_argument(
        "--access-key-secret",
        help=f"its secret (default ${ACCESS_KEY_SECRET_VARIABLE}, else a fixed development value)",
    )
    parser.add_argument("--security-token", help="treat the key pair as STS: requests must carry this token")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help=f"multiplies cloud durations; 1 is realistic (default {DEFAULT_TIME_SCALE}: Available in ~2.4 s)",
    )
    phases = ", ".join(field.name for field in dataclasses.fields(CloudDurations))
    parser.add_argument(
        "--duration",
        action="append",
        default=[],
        metavar="PHASE=SECONDS",
        help=f"how long a phase takes in the cloud, before --time-scale (repeatable; phases: {phases})",
    )
    parser.add_argument(
        "--quota",
        type=int,
        default=DEFAULT_QUOTA,
        help=f"data caches per region, 0 = unlimited (default {DEFAULT_QUOTA})",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="requests per second per access key, 0 = unlimited (default)",
    )
    faults = parser.add_argument_group("faults (rates are probabilities per call)")
    faults.add_argument("--fault-500-rate", type=float, default=0.0, help="500 InternalError")
    faults.add_argument("--fault-503-rate", type=float, default=0.0, help="503 ServiceUnavailable")
    faults.add_argument(
        "--fault-throttle-rate", type=float, default=0.0, help="400 Throttling.User + retry-after"
    )
    faults.add_argument("--fault-latency-ms", type=float, default=0.0, help="latency added to every call")
    faults.add_argument(
        "--fault-drop-rate", type=float, default=0.0, help="connection closed without an answer"
    )
    faults.add_argument(
        "--fault-actions",
        help=f"comma-separated actions the faults apply to (default all: {','.join(ACTIONS)})",
    )
    parser.add_argument("--seed", type=int, help="seed for fault rolls and generated ids (reproducible runs)")
    parser.add_argument("--state-file", help="JSON file that keeps the caches across restarts")
    parser.add_argument("--log-level", default="INFO", help="log level on stderr (default INFO)")


def durations_from(settings: list[str]) -> CloudDurations:
    """`PHASE=SECONDS` settings over the default durations."""
    phases = {field.name for field in dataclasses.fields(CloudDurations)}
    chosen: dict[str, float] = {}
    for setting in settings:
        phase, _, seconds = setting.partition("=")
        if phase not in phases:
            raise SystemExit(
                f"--duration {setting}: unknown phase {phase!r} (one of {', '.join(sorted(phases))})"
            )
        try:
            chosen[phase] = float(seconds)
        except ValueError:
            raise SystemExit(f"--duration {setting}: {seconds!r} is not a number of seconds") from None
    return dataclasses.replace(CloudDurations(), **chosen)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    overrides = {}
    if args.access_key_id:
        overrides["access_key_id"] = args.access_key_id
    if args.access_key_secret:
        overrides["access_key_secret"] = args.access_key_secret
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        security_token=args.security_token or None,
        time_scale=args.time_scale,
        durations=durations_from(args.duration),
        quota=args.quota,
        rate_limit=args.rate_limit,
        fault_500_rate=args.fault_500_rate,
        fault_503_rate=args.fault_503_rate,
        fault_throttle_rate=args.fault_throttle_rate,
        fault_latency_ms=args.fault_latency_ms,
        fault_drop_rate=args.fault_drop_rate,
        fault_actions=[action.strip() for action in args.fault_actions.split(",")]
        if args.fault_actions
        else None,
        seed=args.seed,
        state_file=args.state_file,
        **overrides,
    )


async def serve(config: EmulatorConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    async with Emulator(config) as emulator:
        print(f"ECI_ENDPOINT={emulator.endpoint}", flush=True)
        print(f"ECI_EMULATOR_ADMIN_URL={emulator.admin_url}", flush=True)
        await stop.wait()
    return 0


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"eci-datacache-emulator: {error}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


def console(argv: list[str] | None = None) -> int:
    """The ``eci-datacache-emulator`` command."""
    parser = argparse.ArgumentParser(
        prog="eci-datacache-emulator", description="Serve a local ECI DataCache emulator until interrupted."
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(console())
