#!/usr/bin/env bash
# `make image`: the operator image from the repository's Dockerfile, built with buildah (no
# Docker engine needed) and saved as a docker archive in the cache folder (common.sh), ready for
# `ctr images import` or `docker load`. The last line printed is the archive.
#
# BASE_IMAGE: the Dockerfile's base. Unset: a Debian bookworm base made here from Debian
# packages (base.sh), for machines that reach no container registry; set it to python:3.12-slim
# (the Dockerfile's own default) where a registry is reachable.
# IMAGE: the name it gets (localhost/eci-datacache-operator:dev).
# Build-time trust for PyPI is the machine's CA bundle, mounted read-only into each RUN step and
# never copied into a layer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
source "$here/common.sh"
need buildah

image="${IMAGE:-localhost/eci-datacache-operator:dev}"
pull=(--pull)
if [[ -z "${BASE_IMAGE:-}" ]]; then
  BASE_IMAGE="$(bash "$here/base.sh" | tail -n 1)"
  pull=(--pull-never)
fi
trust=()
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [[ -f "$bundle" ]]; then trust=(-v "$bundle:/etc/ssl/certs/ca-certificates.crt:ro"); break; fi
done
archive="$images_dir/operator.tar"
start=$SECONDS
log "building $image from the Dockerfile on $BASE_IMAGE..."
bah bud --quiet --isolation chroot "${pull[@]}" "${trust[@]}" --layers=false \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$repo/Dockerfile" -t "$image" "$repo" >&2
rm -f "$archive.tmp"
bah push --quiet "$image" "docker-archive:$archive.tmp:$image" >/dev/null
mv "$archive.tmp" "$archive"
# Dangling layers of earlier builds of the same name would fill the cache folder.
bah rmi --prune >/dev/null 2>&1 || true
log "built $image in $((SECONDS - start)) s: $(du -m "$archive" | cut -f1) MiB archive"
echo "$archive"
