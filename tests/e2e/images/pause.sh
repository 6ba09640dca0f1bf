#!/usr/bin/env bash
# The pod sandbox image without a registry: Kubernetes' own pause.c (from the pinned
# k8s.io/kubernetes module in the Go module cache) built statically, in a scratch image,
# saved as a docker archive in the cache folder (common.sh). The last line printed is the archive.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.sh"
need buildah gcc go

name="${PAUSE_IMAGE:-localhost/eci-datacache-pause:local}"
archive="$images_dir/pause.tar"
if [[ -s "$archive" ]]; then log "reusing $archive"; echo "$archive"; exit 0; fi
exec 9>"$images_dir/.pause.lock"
flock 9
if [[ -s "$archive" ]]; then echo "$archive"; exit 0; fi

module="$(ls -d "$here"/../../controlplane/k8s-1.* | sort -V | tail -n 1)"
kube_dir="$(cd "$module" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json k8s.io/kubernetes |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
source_file="$kube_dir/build/pause/linux/pause.c"
[[ -f "$source_file" ]] || { log "no $source_file"; exit 1; }
work="$(mktemp -d "$images_dir/pause.XXXXXX")"
trap 'rm -rf "$work"' EXIT
gcc -Os -static -DVERSION=local -o "$work/pause" "$source_file"
strip "$work/pause"
ctr="$(bah from scratch)"
bah copy "$ctr" "$work/pause" /pause >/dev/null
bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
bah commit --quiet "$ctr" "$name" >/dev/null
bah rm "$ctr" >/dev/null
bah push --quiet "$name" "docker-archive:$work/pause.tar:$name" >/dev/null
mv "$work/pause.tar" "$archive"
log "built $name into $archive"
echo "$archive"
