#!/usr/bin/env bash
# The Debian packages a local cluster with a node needs (tests/e2e/localcluster.py), installed
# when missing and when this is root on Debian; otherwise says what is missing and exits 1.
set -euo pipefail
packages=(buildah containerd runc containernetworking-plugins debootstrap iptables conntrack iproute2 util-linux gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "local cluster: missing Debian packages: ${missing[*]} (needs root and apt-get to install)" >&2
  exit 1
fi
echo "local cluster: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
