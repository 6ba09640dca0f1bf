#!/usr/bin/env bash
# Builds (or reuses) kube-apiserver, kube-controller-manager, etcd, kubectl and helm from published Go modules
# and prints, as its last line, the absolute path of the folder holding them.
#
# - KUBEBUILDER_ASSETS set: that folder is used as it is and nothing is built.
# - KUBE_VERSION picks the Kubernetes release: unset, the newest minor pinned here; `v1.36`, that
#   minor's pinned release (k8s-1.36/go.mod); `v1.36.3`, that release (pinned here, or else pinned
#   by pin.sh into the cache folder, which needs the Go module proxy and checksum database).
#   etcd is the version that release pins itself. `build.sh --versions` lists the pinned releases,
#   oldest first; `build.sh --resolve` prints the release, etcd version, module folder and cache
#   key KUBE_VERSION resolves to, and builds nothing.
# - The binaries go to a cache folder outside the repository, keyed by the versions:
#   ${DATACACHE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/eci-datacache-operator/controlplane}/<key>.
#   A folder holding a `.complete` stamp and every binary is reused as it is (a binary added
#   here later is built into it).
# - CONTROLPLANE_BINARIES="etcd kubectl kube-apiserver" builds only those (CI's run on the oldest
#   release needs no controller-manager); the folder is stamped complete once all are there.
#   kube-scheduler, kubelet and kube-proxy (a cluster with a node) are built only when named there.
set -euo pipefail

HELM_VERSION=v3.20.2
BINARIES=(kube-apiserver kube-controller-manager etcd kubectl helm)
# A cluster with a node (tests/e2e/cluster) also needs these; built only when asked for.
NODE_BINARIES=(kube-scheduler kubelet kube-proxy)
read -r -a wanted <<<"${CONTROLPLANE_BINARIES:-${BINARIES[*]}}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${DATACACHE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eci-datacache-operator/controlplane}"

log() { echo "controlplane: $*" >&2; }
for b in "${wanted[@]}"; do
  [[ " ${BINARIES[*]} ${NODE_BINARIES[*]} " == *" $b "* ]] ||
    { log "CONTROLPLANE_BINARIES: no binary $b (${BINARIES[*]} ${NODE_BINARIES[*]})"; exit 2; }
done
# The version a module's go.mod requires of one module path.
required() { awk -v path="$2" '$1 == path && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"; }
pinned_modules() { for mod in "$here"/k8s-1.*/go.mod; do if [[ -f "$mod" ]]; then dirname "$mod"; fi; done | sort -V; }

if [[ "${1:-}" == "--versions" ]]; then
  for dir in $(pinned_modules); do required "$dir" k8s.io/kubernetes; done
  exit 0
fi

if [[ -n "${KUBEBUILDER_ASSETS:-}" && "${1:-}" != "--resolve" ]]; then
  assets="$(cd "$KUBEBUILDER_ASSETS" && pwd)"
  for b in kube-apiserver etcd; do
    [[ -x "$assets/$b" ]] || { log "KUBEBUILDER_ASSETS=$assets has no executable $b"; exit 1; }
  done
  log "using KUBEBUILDER_ASSETS, nothing built"
  echo "$assets"
  exit 0
fi

command -v go >/dev/null || { log "Go is needed to build the control plane (or set KUBEBUILDER_ASSETS)"; exit 1; }

# Which release, and the Go module that builds it.
requested="${KUBE_VERSION:-}"
requested="${requested#v}"
if [[ -z "$requested" ]]; then
  module="$(pinned_modules | tail -n 1)"
elif [[ "$requested" =~ ^1\.([0-9]+)(\.[0-9]+)?$ ]]; then
  module="$here/k8s-1.${BASH_REMATCH[1]}"
else
  log "KUBE_VERSION=$KUBE_VERSION: want v1.MINOR or v1.MINOR.PATCH"; exit 2
fi
if [[ -f "$module/go.mod" ]]; then
  KUBE_VERSION="$(required "$module" k8s.io/kubernetes)"
  if [[ "$requested" == *.*.* && "v$requested" != "$KUBE_VERSION" ]]; then
    KUBE_VERSION="v$requested" module=""  # another patch of a pinned minor
  fi
else
  [[ "$requested" == *.*.* ]] || { log "no minor $requested is pinned here; give a full version (v$requested.PATCH)"; exit 2; }
  KUBE_VERSION="v$requested" module=""
fi
if [[ -z "$module" ]]; then
  module="$cache_root/modules/k8s-$KUBE_VERSION"
  if [[ ! -f "$module/go.sum" ]]; then
    log "$KUBE_VERSION is not pinned in the repository: pinning it in $module"
    rm -rf "$module" "$module.tmp"
    bash "$here/pin.sh" "$KUBE_VERSION" "$module.tmp" && mv "$module.tmp" "$module"
  fi
fi
ETCD_VERSION="$(required "$module" go.etcd.io/etcd/server/v3)"

key="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_$(go env GOOS)-$(go env GOARCH)"
out="$cache_root/$key"
if [[ "${1:-}" == "--resolve" ]]; then
  echo "$KUBE_VERSION $ETCD_VERSION $module $key"
  exit 0
fi

built() { for b in "$@"; do [[ -x "$out/$b" ]] || return 1; done; }
reuse() {
  if built "${wanted[@]}" && { [[ -f "$out/.complete" ]] || [[ -n "${CONTROLPLANE_BINARIES:-}" ]]; }; then
    log "reusing $out"
    echo "$out"
    exit 0
  fi
}
reuse
mkdir -p "$out"
# One build per folder at a time (several checkouts or test runs may share the cache).
if command -v flock >/dev/null; then
  exec 9>"$out/.lock"
  flock -n 9 || { log "another build of $key is running; waiting for it"; flock 9; reuse; }
fi
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
  [[ " ${wanted[*]} " == *" $name "* ]] || return 0
  log "building $name from $pkg (this can take several minutes on 2 cores)..."
  (cd "$dir" && go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  log "built $name in $((SECONDS - start)) s"
}

# Cheapest first, so progress is visible early.
log "Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION (module ${module#"$here/"})"
(cd "$module" && go mod download) >&2
build etcd "$module" go.etcd.io/etcd/server/v3 "-s -w"
build kubectl "$module" k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build kube-apiserver "$module" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager "$module" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build helm "$here/helm" helm.sh/helm/v3/cmd/helm "$helm_ldflags"
build kube-scheduler "$module" k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build kube-proxy "$module" k8s.io/kubernetes/cmd/kube-proxy "$k8s_ldflags"
build kubelet "$module" k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"

for b in "${wanted[@]}"; do [[ -x "$out/$b" ]] || { log "missing $b"; exit 1; }; done
if built "${BINARIES[@]}"; then touch "$out/.complete"; fi
log "control plane ready in $out"
echo "$out"
