# The two commands a fresh clone needs: `make test` and `make run`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONTROLPLANE_BUILD := tests/controlplane/build.sh

.PHONY: test controlplane venv lint crds run bench-emulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Builds kube-apiserver, etcd, kubectl and helm once into a cache folder outside the
# repository (or uses KUBEBUILDER_ASSETS); the last line printed is that folder.
controlplane:
	@bash $(CONTROLPLANE_BUILD)

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests benchmarks
	$(VENV)/bin/ruff format --check operator tests benchmarks

test: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	$(MAKE) --no-print-directory lint && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(VENV)/bin/pytest -ra $(PYTEST_ARGS)

crds: $(STAMP)
	$(VENV)/bin/datacache-operator crds --output-dir deploy/crds

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache

# The whole local stack in the foreground: control plane, ECI emulator, operator.
run: $(STAMP)
	@assets="$$(bash $(CONTROLPLANE_BUILD) | tail -n 1)" && \
	DATACACHE_CONTROLPLANE_ASSETS="$$assets" $(PY) -m datacache_operator.testing.stack

# The chart ships the same CRDs as deploy/crds (tests/integration/test_chart.py checks).
.PHONY: chart-sync
chart-sync:
	rm -f charts/eci-datacache-operator/crds/*.yaml
	cp deploy/crds/*.yaml charts/eci-datacache-operator/crds/

# The emulator's sustained DescribeDataCaches rate (signatures checked); writes
# benchmarks/results/emulator.json.
bench-emulator: $(STAMP)
	$(PY) benchmarks/emulator_bench.py
