#!/usr/bin/env bash
# What the end-to-end tests (tests/e2e/) need on this machine, built or reused: the Debian
# packages, kubelet, kube-scheduler and kube-proxy beside the control plane, the pause image and
# the operator image from the Dockerfile. Prints `DATACACHE_CONTROLPLANE_ASSETS=...` and
# `DATACACHE_E2E_IMAGES=...` for the test run.
#
# Nothing is prepared when DATACACHE_E2E_KUBECONFIG names another cluster, or when this is not
# root (the tests then skip, saying why; under CI=true that is an error).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "e2e: $*" >&2; }

if [[ -n "${DATACACHE_E2E_KUBECONFIG:-}" ]]; then
  log "testing the cluster of $DATACACHE_E2E_KUBECONFIG: nothing to build here"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "not root: no local cluster with a node can run here"
  [[ "${CI:-}" != "true" ]] || exit 1
  exit 0
fi
bash "$here/install-packages.sh"
assets="$(CONTROLPLANE_BINARIES="kube-apiserver kube-controller-manager etcd kubectl helm kube-scheduler kubelet kube-proxy" \
  bash "$here/../controlplane/build.sh" | tail -n 1)"
pause="$(bash "$here/images/pause.sh" | tail -n 1)"
image="$(bash "$here/images/operator.sh" | tail -n 1)"
echo "DATACACHE_CONTROLPLANE_ASSETS=$assets"
echo "DATACACHE_E2E_IMAGES=$pause:$image"
