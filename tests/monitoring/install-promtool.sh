#!/usr/bin/env bash
# Puts Prometheus' promtool at $1 (`make test` gives it the venv's bin folder), for the checks
# and unit tests of the alert rules and dashboard queries (tests/unit/test_monitoring.py):
# the promtool on PATH if there is one, else the one in Debian's (or Ubuntu's) `prometheus`
# package, downloaded and unpacked without installing the package (no service is started).
set -euo pipefail
dest="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if found="$(command -v promtool)"; then
    ln -sf "$found" "$dest"
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "promtool is not on PATH and this is no Debian/Ubuntu machine: install promtool" \
        "(https://prometheus.io/download/, it is in the prometheus tarball) and put it on PATH" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet.
    if [ "$(id -u)" != 0 ]; then
        echo "apt-get download prometheus failed: run 'sudo apt-get update' (or install the" \
            "prometheus package, which brings promtool onto PATH) and try again" >&2
        exit 1
    fi
    apt-get update -qq >/dev/null
    apt-get download prometheus >/dev/null 2>&1
fi
dpkg-deb -x prometheus_*.deb unpacked
install -m 0755 unpacked/usr/bin/promtool "$dest"
echo "promtool: $("$dest" --version 2>&1 | head -n 1) at $dest"
