"""`datacache-operator` command line: one subcommand per entry point.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; only the chosen one is imported, so `--help` stays fast. The ECI emulator
is a distribution of its own (`eci-datacache-emulator`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from datacache_operator import __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("datacache_operator.main", "run the operator (kopf underneath)"),
    "crds": ("datacache_operator.api.crds", "print or write the generated CustomResourceDefinitions"),
    "policies": (
        "datacache_operator.api.policies",
        "print or write the ValidatingAdmissionPolicies that keep each namespace to its buckets",
    ),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datacache-operator",
        description="Kubernetes operator for Alibaba Cloud ECI data caches.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    chosen = chosen if chosen in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
