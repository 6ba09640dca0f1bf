"""`python -m eci_datacache_emulator`: the same as the `eci-datacache-emulator` command."""

from eci_datacache_emulator.cli import console

raise SystemExit(console())
