"""``eci-datacache-emulator``: serve the ECI DataCache emulator until interrupted.

The first line on stdout is ``ECI_ENDPOINT=<host>:<port>`` (flushed at once), so a parent
process can start it with ``--port 0`` and read where it listens. Then come
``ECI_EMULATOR_ADMIN_URL=...`` and, unless ``--no-tls``, ``ECI_STS_ENDPOINT=<host>:<port>``
(HTTPS: ECI, STS and admin) and ``ECI_EMULATOR_CA_FILE=<path>`` (the CA to trust for it).
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
    DEFAULT_ACCOUNT_ID,
    DEFAULT_QUOTA,
    DEFAULT_TIME_SCALE,
    STS_MIN_DURATION_SECONDS,
    AccountConfig,
    CloudDurations,
    EmulatorConfig,
    RoleConfig,
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
        "--account-id",
        default=DEFAULT_ACCOUNT_ID,
        help=f"the key pair's account (default {DEFAULT_ACCOUNT_ID})",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID:KEY_ID:KEY_SECRET",
        help="another account's key pair (repeatable; repeat an ID for more of its keys); each account "
        "has caches and container groups of its own",
    )
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ACCOUNT_ID:NAME[:max=SECONDS][:trust=ID,ID...]",
        help="a RAM role acs:ram::ACCOUNT_ID:role/NAME that STS AssumeRole grants (repeatable); its own "
        "account may assume it, trust= adds others; max= is its longest session (default 3600)",
    )
    parser.add_argument(
        "--sts-min-duration",
        type=int,
        default=STS_MIN_DURATION_SECONDS,
        help=f"shortest DurationSeconds AssumeRole grants (default {STS_MIN_DURATION_SECONDS}, as STS)",
    )
    parser.add_argument("--no-tls", action="store_true", help="serve plain HTTP only (no STS for the SDK)")
    parser.add_argument("--tls-port", type=int, default=0, help="HTTPS port; 0 picks a free one (default)")
    parser.add_argument(
        "--tls-dir", help="directory for the CA (reused when there) and its file ca.pem (default: temporary)"
    )
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
        help="ECI requests per second per account (all its keys and STS keys), 0 = unlimited (default)",
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


def accounts_from(account_settings: list[str], role_settings: list[str]) -> list[AccountConfig]:
    """`ID:KEY_ID:KEY_SECRET` and `ACCOUNT_ID:NAME[:max=S][:trust=A,B]` settings as accounts."""
    accounts: dict[str, AccountConfig] = {}

    def account(account_id: str) -> AccountConfig:
        if account_id not in accounts:
            accounts[account_id] = AccountConfig(account_id)
        return accounts[account_id]

    for setting in account_settings:
        parts = setting.split(":", 2)
        if len(parts) != 3 or not all(parts):
            # Never echo the setting: it holds a secret.
            raise SystemExit("--account wants ID:KEY_ID:KEY_SECRET")
        account(parts[0]).access_keys[parts[1]] = parts[2]
    for setting in role_settings:
        account_id, _, rest = setting.partition(":")
        name, *options = rest.split(":")
        if not account_id or not name:
            raise SystemExit(f"--role {setting}: want ACCOUNT_ID:NAME[:max=SECONDS][:trust=ID,ID]")
        fields: dict = {}
        for option in options:
            key, _, value = option.partition("=")
            if key == "max" and value.isdigit():
                fields["max_session_duration"] = int(value)
            elif key == "trust" and value:
                fields["trusted_accounts"] = tuple(value.split(","))
            else:
                raise SystemExit(f"--role {setting}: unknown option {option!r} (max=SECONDS, trust=ID,ID)")
        account(account_id).roles.append(RoleConfig(name, **fields))
    for entry in accounts.values():
        entry.__post_init__()  # validate what was added after construction
    return list(accounts.values())


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
        account_id=args.account_id,
        accounts=accounts_from(args.account, args.role),
        tls=not args.no_tls,
        tls_port=args.tls_port,
        tls_dir=args.tls_dir,
        sts_min_duration_seconds=args.sts_min_duration,
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
        if config.tls:
            print(f"ECI_STS_ENDPOINT={emulator.sts_endpoint}", flush=True)
            print(f"ECI_EMULATOR_CA_FILE={emulator.ca_file}", flush=True)
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
