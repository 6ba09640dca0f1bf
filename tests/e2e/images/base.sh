#!/usr/bin/env bash
# A stand-in for python:3.12-slim where no container registry can be reached: Debian bookworm
# (minbase) with python3, venv and pip, made by debootstrap from the machine's own Debian mirror
# and committed with buildah as localhost/eci-datacache-base:bookworm. Kept in the cache folder
# (common.sh) and reused; the last line printed is the image name.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.sh"
need buildah debootstrap

name="localhost/eci-datacache-base:bookworm"
if bah inspect --type image "$name" >/dev/null 2>&1; then
  log "reusing $name"
  echo "$name"
  exit 0
fi
exec 9>"$images_dir/.base.lock"
flock 9
if bah inspect --type image "$name" >/dev/null 2>&1; then echo "$name"; exit 0; fi

work="$(mktemp -d "$images_dir/base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
log "debootstrap bookworm (python3, venv, pip) from $(debian_mirror)..."
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$work/rootfs" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
# The Dockerfile calls `python`; nothing of apt's caches goes into the image.
ln -sf python3 "$work/rootfs/usr/bin/python"
rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
ctr="$(bah from scratch)"
bah add "$ctr" "$work/rootfs.tar" / >/dev/null
bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd python3 "$ctr"
bah commit --quiet "$ctr" "$name" >/dev/null
bah rm "$ctr" >/dev/null
log "built $name in $((SECONDS - start)) s"
echo "$name"
