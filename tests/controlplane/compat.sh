#!/usr/bin/env bash
# Runs the tests that depend on the apiserver against several Kubernetes releases, each with
# the control plane build.sh builds (or reuses) for it, and prints one line per release.
#
#   compat.sh                  every release pinned here (build.sh --versions), COMPAT_TESTS
#   compat.sh v1.36 v1.34.2    those releases (a release not pinned here is pinned on the fly)
#   compat.sh --ci             the oldest pinned release, CI_TESTS (what `make test` adds to
#                              the whole suite on the newest), with only CI_BINARIES built
#   compat.sh --build ...      build (or reuse) the control planes only, run nothing
#
# Extra pytest arguments come from PYTEST_ARGS. With KUBEBUILDER_ASSETS set nothing is built:
# the tests run once against that folder (--ci then does nothing: the whole suite already did).
set -euo pipefail

# Whatever reads the CRDs or talks to the apiserver the way users' clusters are talked to: CRD
# install, CEL rules and their messages, both kinds' lifecycles, the pod webhook and its
# scheduling gate, the chart's rendering and `helm install`. Whole files, so that tests added
# to them are included.
COMPAT_TESTS=(
  tests/integration/test_controlplane.py
  tests/integration/test_datacache_crd.py
  tests/integration/test_datacache_lifecycle.py
  tests/integration/test_replication.py
  tests/integration/test_pod_binding.py
  tests/integration/test_chart.py
)
# The part CI runs on the oldest release: the CRDs, their CEL rules and both lifecycles.
CI_TESTS=(
  tests/integration/test_datacache_crd.py
  tests/integration/test_datacache_lifecycle.py
  tests/integration/test_replication.py
)
CI_BINARIES="etcd kubectl kube-apiserver"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pytest="${PYTEST:-$root/.venv/bin/pytest}"
build="$here/build.sh"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"

build_only=""
if [[ "${1:-}" == "--build" ]]; then build_only=1; shift; fi
tests=("${COMPAT_TESTS[@]}")
versions=("$@")
if [[ "${1:-}" == "--ci" ]]; then
  [[ -z "${KUBEBUILDER_ASSETS:-}" ]] || { echo "compat: KUBEBUILDER_ASSETS is set, no second release" >&2; exit 0; }
  tests=("${CI_TESTS[@]}")
  export CONTROLPLANE_BINARIES="$CI_BINARIES"
  mapfile -t versions < <(bash "$build" --versions)
  versions=("${versions[0]}")
elif [[ $# -eq 0 ]]; then
  mapfile -t versions < <(bash "$build" --versions)
fi
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  echo "compat: KUBEBUILDER_ASSETS is set: one run against it, whatever release it holds" >&2
  versions=("(KUBEBUILDER_ASSETS)")
fi

cd "$root"
summary=() failed=0
for version in "${versions[@]}"; do
  began=$SECONDS
  assets="$(KUBE_VERSION="$version" bash "$build" | tail -n 1)" || {
    summary+=("$version: the control plane did not build"); failed=1; continue
  }
  built=$((SECONDS - began))
  [[ -z "$build_only" ]] || continue
  server="$("$assets/kube-apiserver" --version)"
  echo "== compat: $server ($assets), ${#tests[@]} test files" >&2
  began=$SECONDS
  if DATACACHE_CONTROLPLANE_ASSETS="$assets" "$pytest" -ra "${tests[@]}" "${pytest_args[@]}"; then
    result=passed
  else
    result=FAILED failed=1
  fi
  summary+=("$server: $result in $((SECONDS - began)) s (build.sh took $built s)")
done
[[ ${#summary[@]} -eq 0 ]] || printf 'compat: %s\n' "${summary[@]}" >&2
exit "$failed"
