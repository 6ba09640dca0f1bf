"""Helpers for testing against real parts: a local control plane (and, in
`datacache_operator.emulator`, a local ECI service)."""
