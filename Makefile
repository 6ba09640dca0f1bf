# The two commands a fresh clone needs: `make test` and `make run`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONTROLPLANE_BUILD := tests/controlplane/build.sh
PROMTOOL := $(VENV)/bin/promtool
# The benchmarks and the local stacks import tests/support (the control plane) from the checkout.
export PYTHONPATH := $(CURDIR)

.PHONY: test compat controlplane venv lint crds run cluster image bench bench-pods bench-binding bench-failover bench-fairness bench-emulator bench-sdk clean

# The operator with its test extras, and the ECI emulator (a distribution of its own, emulator/)
# that the tests, the benchmarks and the local stacks run against.
$(STAMP): pyproject.toml emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./emulator -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Prometheus' promtool checks and unit-tests the alert rules (tests/unit/test_monitoring.py):
# PATH's, or the one in Debian's `prometheus` package, unpacked into the venv.
$(PROMTOOL): | $(STAMP)
	@bash tests/monitoring/install-promtool.sh $@

# Builds kube-apiserver, kube-controller-manager, etcd, kubectl and helm once into a cache folder
# outside the repository (or uses KUBEBUILDER_ASSETS); the last line printed is that folder.
# The newest Kubernetes release pinned in tests/controlplane/k8s-1.*, or KUBE_VERSION=v1.36[.3].
controlplane:
	@bash $(CONTROLPLANE_BUILD)

lint: $(STAMP)
	$(VENV)/bin/ruff check operator emulator tests benchmarks
	$(VENV)/bin/ruff format --check operator emulator tests benchmarks
	$(VENV)/bin/mypy --strict operator/datacache_operator

# The whole suite on the newest pinned Kubernetes release, the end-to-end tests included (a local
# cluster with a node, the image, the chart: tests/e2e/prepare.sh builds what they need), then the
# CRD, CEL and lifecycle tests on the oldest (tests/controlplane/compat.sh --ci).
test: $(STAMP) $(PROMTOOL)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	e2e="$$(bash tests/e2e/prepare.sh)" && \
	bash tests/controlplane/compat.sh --build --ci && \
	$(MAKE) --no-print-directory lint && \
	env DATACACHE_CONTROLPLANE_ASSETS="$$assets" $$e2e $(VENV)/bin/pytest -ra $(PYTEST_ARGS) && \
	bash tests/controlplane/compat.sh --ci

# The tests that depend on the apiserver on every pinned Kubernetes release, oldest first, or on
# KUBE_VERSIONS="v1.36 v1.34.2" (a release not pinned here is pinned in the cache on the fly).
compat: $(STAMP)
	@bash tests/controlplane/compat.sh $(KUBE_VERSIONS)

crds: $(STAMP)
	$(VENV)/bin/datacache-operator crds --output-dir deploy/crds
	$(VENV)/bin/datacache-operator policies --output charts/eci-datacache-operator/files/admission-policies.yaml

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache

# The whole local stack in the foreground: control plane (and kube-scheduler), ECI emulator, a
# virtual ECI node backed by it, operator.
run: $(STAMP)
	@assets="$$(CONTROLPLANE_BINARIES="kube-apiserver kube-controller-manager etcd kubectl helm kube-scheduler" \
		bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) -m tests.support.localstack

# The operator image from the Dockerfile, built with buildah (no Docker engine): on a Debian base
# made here, or on BASE_IMAGE=python:3.12-slim where a registry is reachable. Saved as a docker
# archive in the cache folder and loaded into the local cluster of `make cluster` if it runs.
image: $(STAMP)
	@archive="$$(bash tests/e2e/images/operator.sh | tail -n 1)" && \
	if [ -S .local/cluster/node/containerd.sock ]; then \
		ctr -a .local/cluster/node/containerd.sock -n k8s.io images import "$$archive" >/dev/null && \
		echo "loaded into the local cluster: $$archive"; \
	else echo "built: $$archive (no local cluster running to load it into)"; fi

# A local cluster with a real node, in the foreground until Ctrl-C, without the operator: the
# control plane, kube-scheduler, a node (containerd, kubelet, kube-proxy), the ECI emulator and
# the image loaded. Writes .local/kubeconfig, .local/emulator.env and .local/values.yaml for
# `helm install ... -f .local/values.yaml` (README: "Try the chart on a local cluster"). As root.
cluster: $(STAMP)
	@eval "$$(bash tests/e2e/prepare.sh | sed 's/^/export /')" && \
	$(PY) -m tests.e2e.stack --local-dir .local

# The operator at scale: N = 100, 1,000 and 10,000 DataCaches, batching on and off, against
# the real control plane and the emulator, each followed by a cold start; about 90 minutes.
# Writes benchmarks/results/latest.json, a picture per run and benchmarks/README.md.
# Then the pod binding, leader failover, fairness and pod-side scale benchmarks (bench-binding,
# bench-failover, bench-fairness, bench-pods).
bench: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/operator_bench.py $(BENCH_ARGS) && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/binding_bench.py && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/failover_bench.py && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/fairness_bench.py && \
	$(MAKE) bench-pods

# One namespace creating 1,000 DataCaches and another 10 at once: the small one's reaction
# against its own when alone (fair queuing between namespaces); about 3 minutes. Writes
# benchmarks/results/fairness.json and its table in benchmarks/README.md.
bench-fairness: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/fairness_bench.py

# Pod-side scale on a local cluster with the virtual ECI node: a Deployment 0 -> 1,000 bound by
# the webhook against the same written by hand, 1,000 pods released when their cache turns Ready,
# admission at 100 pod creates a second. Writes benchmarks/results/pods.json, pods.png and its
# table in benchmarks/README.md.
bench-pods: $(STAMP)
	@assets="$$(CONTROLPLANE_BINARIES="kube-apiserver kube-controller-manager etcd kubectl helm kube-scheduler" \
		bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/pods_bench.py

# Admission latency at 20 pod creates/s and cache Ready -> pods ungated; about 3 minutes.
# Writes benchmarks/results/binding.json and its table in benchmarks/README.md.
bench-binding: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/binding_bench.py

# Two leader-elected replicas, the leader stopped by SIGKILL and by SIGTERM (3 times each): the
# seconds to the new leader's first ECI call; about 2 minutes. Writes
# benchmarks/results/failover.json and its table in benchmarks/README.md.
bench-failover: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) benchmarks/failover_bench.py

# The emulator's sustained DescribeDataCaches rate (signatures checked); writes
# benchmarks/results/emulator.json.
bench-emulator: $(STAMP)
	$(PY) benchmarks/emulator_bench.py

# CPU per ECI call through the SDK, its blocking call against its async one; writes
# benchmarks/results/sdk_calls.json.
bench-sdk: $(STAMP)
	$(PY) benchmarks/sdk_call_bench.py

# The chart ships the same CRDs as deploy/crds (and dashboard and alert rules as deploy/grafana
# and deploy/prometheus), and deploy/operator.yaml is the chart rendered
# with default values (tests/integration/test_chart.py fails when either is stale).
.PHONY: chart-sync
chart-sync:
	rm -f charts/eci-datacache-operator/crds/*.yaml
	cp deploy/crds/*.yaml charts/eci-datacache-operator/crds/
	cp deploy/grafana/eci-datacache-operator.json deploy/prometheus/eci-datacache-operator.rules.yaml \
		charts/eci-datacache-operator/files/
	@helm="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)/helm" && \
	{ printf '%s\n' '# Generated by `make chart-sync` from charts/eci-datacache-operator with default values.' \
		'# Do not edit: change the chart (tests/integration/test_chart.py fails when this is stale).' \
		'apiVersion: v1' 'kind: Namespace' 'metadata:' '  name: eci-datacache-system'; \
	  "$$helm" template eci-datacache-operator charts/eci-datacache-operator --namespace eci-datacache-system; \
	} > deploy/operator.yaml
