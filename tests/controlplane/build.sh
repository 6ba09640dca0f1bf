#!/usr/bin/env bash
# Builds (or reuses) kube-apiserver, kube-controller-manager, etcd, kubectl and helm from published Go modules
# and prints, as its last line, the absolute path of the folder holding them.
#
# - KUBEBUILDER_ASSETS set: that folder is used as it is and nothing is built.
# - Otherwise the binaries go to a cache folder outside the repository, keyed by the
#   versions pinned here: ${DATACACHE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/eci-datacache-operator/controlplane}/<key>.
#   A folder holding a `.complete` stamp and every binary is reused as it is (a binary added
#   here later is built into it).
set -euo pipefail

KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
HELM_VERSION=v3.20.2
BINARIES=(kube-apiserver kube-controller-manager etcd kubectl helm)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "controlplane: $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  assets="$(cd "$KUBEBUILDER_ASSETS" && pwd)"
  for b in kube-apiserver etcd; do
    [[ -x "$assets/$b" ]] || { log "KUBEBUILDER_ASSETS=$assets has no executable $b"; exit 1; }
  done
  log "using KUBEBUILDER_ASSETS, nothing built"
  echo "$assets"
  exit 0
fi

cache_root="${DATACACHE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eci-datacache-operator/controlplane}"
key="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_$(go env GOOS)-$(go env GOARCH)"
out="$cache_root/$key"

all_built() { for b in "${BINARIES[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
if [[ -f "$out/.complete" ]] && all_built; then
  log "reusing $out"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { log "Go is needed to build the control plane (or set KUBEBUILDER_ASSETS)"; exit 1; }
mkdir -p "$out"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
done

build() { # name module-dir package ldflags
  local name=$1 dir=$2 pkg=$3 flags=$4 start=$SECONDS
  if [[ -x "$out/$name" ]]; then log "$name already built"; return; fi
  log "building $name from $pkg (this can take several minutes on 2 cores)..."
  (cd "$dir" && go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  log "built $name in $((SECONDS - start)) s"
}

# Cheapest first, so progress is visible early.
(cd "$here" && go mod download) >&2
build etcd "$here" go.etcd.io/etcd/server/v3 "-s -w"
build kubectl "$here" k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build kube-apiserver "$here" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager "$here" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build helm "$here/helm" helm.sh/helm/v3/cmd/helm "$helm_ldflags"

for b in "${BINARIES[@]}"; do [[ -x "$out/$b" ]] || { log "missing $b"; exit 1; }; done
touch "$out/.complete"
log "control plane ready in $out"
echo "$out"
