"""Fixtures shared by every test folder.

`controlplane` starts a real etcd + kube-apiserver once per test session. Without the
binaries the tests that need it are skipped on a developer machine, and fail in CI
(`CI=true`), where a skipped integration test would hide a broken set-up.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The SDK's credential chain reads these at import time: never probe IMDS or $HOME in tests.
os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
# The SDK sends loopback traffic through HTTP_PROXY and ignores NO_PROXY.
for _proxy_variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_proxy_variable, None)

from tests.support.controlplane import ControlPlane, ControlPlaneUnavailable  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests last: their cluster with a node starts with the first of them and
    stops with the session, so it runs only while they do."""
    e2e = [item for item in items if "tests/e2e/" in item.nodeid or item.nodeid.startswith("e2e/")]
    if e2e:
        others = [item for item in items if item not in e2e]
        items[:] = others + e2e


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    try:
        plane = ControlPlane()
        plane.start()
    except ControlPlaneUnavailable as error:
        if IN_CI:
            pytest.fail(f"the control plane cannot start in CI: {error}", pytrace=False)
        pytest.skip(f"no local control plane: {error}")
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield plane
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        plane.stop()


@pytest.fixture
def namespace(controlplane: ControlPlane) -> str:
    """A fresh namespace per test (never deleted: no controller-manager would finish it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    controlplane.kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus' promtool: $PROMTOOL, the one `make test` puts into the venv, or PATH's.
    Missing: skipped on a developer machine, a failure in CI."""
    found = os.environ.get("PROMTOOL") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    found = found or shutil.which("promtool")
    if not found:
        message = "no promtool (`make test` installs it: tests/monitoring/install-promtool.sh)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found
