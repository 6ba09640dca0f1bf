"""Real parts for tests, benchmarks and `make run`, kept out of the operator's package: a local
control plane (controlplane.py), the pod webhook's configuration for it (webhook.py) and the
whole local stack (localstack.py)."""
