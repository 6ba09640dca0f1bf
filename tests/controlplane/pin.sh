#!/usr/bin/env bash
# Writes the Go module that builds one Kubernetes release: go.mod and go.sum for
# kube-apiserver, kube-controller-manager, kubectl and the node's kube-scheduler, kubelet and
# kube-proxy at KUBE_VERSION, and etcd at the version
# that release itself pins.
#
#   tests/controlplane/pin.sh v1.36.3            # writes tests/controlplane/k8s-1.36/
#   tests/controlplane/pin.sh v1.36.3 DIR        # writes DIR/ (build.sh does this, in its cache,
#                                                # for a release no folder here pins)
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) as v0.0.0 and replaces them
# with local folders, which a consumer cannot see; so the replaces are derived from that
# release's own go.mod: every k8s.io/NAME v0.0.0 it requires becomes k8s.io/NAME v0.MINOR.PATCH.
# Each minor needs its own module: k8s.io/kubernetes pins its dependencies per release.
set -euo pipefail

version="${1:?usage: pin.sh v1.MINOR.PATCH [dir]}"
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "pin.sh: want v1.MINOR.PATCH, got $version" >&2; exit 2; }
minor="${BASH_REMATCH[1]}" patch="${BASH_REMATCH[2]}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${2:-$here/k8s-1.$minor}"
module="github.com/eci-datacache-operator/eci-datacache-operator/tests/controlplane/k8s-1.$minor"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
log() { echo "pin: $*" >&2; }

kube_gomod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$kube_gomod" ]] || { log "cannot download k8s.io/kubernetes@$version"; exit 1; }
go_directive="$(awk '$1 == "go" {print $2; exit}' "$kube_gomod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$kube_gomod")"
mapfile -t staging < <(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kube_gomod" | sort -u)
[[ -n "$etcd_version" && ${#staging[@]} -gt 0 ]] || { log "unexpected go.mod of k8s.io/kubernetes@$version"; exit 1; }
log "k8s.io/kubernetes $version: go $go_directive, etcd $etcd_version, ${#staging[@]} staging modules at v0.$minor.$patch"

pin_log="$(mktemp)"
trap 'rm -f "$pin_log"' EXIT
mkdir -p "$dir"
rm -f "$dir/go.mod" "$dir/go.sum"
cd "$dir"
go mod init "$module" 2>/dev/null
go mod edit -go="$go_directive"
for name in "${staging[@]}"; do go mod edit -replace="$name=$name@v0.$minor.$patch"; done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$version" "k8s.io/kubernetes/cmd/kube-controller-manager@$version" \
  "k8s.io/kubernetes/cmd/kubectl@$version" "go.etcd.io/etcd/server/v3@$etcd_version" \
  "k8s.io/kubernetes/cmd/kube-scheduler@$version" "k8s.io/kubernetes/cmd/kubelet@$version" \
  "k8s.io/kubernetes/cmd/kube-proxy@$version" 2>"$pin_log" ||
  { cat "$pin_log" >&2; exit 1; }
go mod tidy 2>"$pin_log" || { cat "$pin_log" >&2; exit 1; }

# MVS must not have moved either pin (etcd's own requirements could, in principle).
for want in "k8s.io/kubernetes $version" "go.etcd.io/etcd/server/v3 $etcd_version"; do
  got="$(go list -m "${want%% *}")"
  [[ "$got" == "$want" ]] || { log "expected $want, the module resolved $got"; exit 1; }
done
log "wrote $dir/go.mod and go.sum"
