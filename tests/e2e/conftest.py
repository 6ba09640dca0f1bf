"""End-to-end tests: the operator as users run it — the image the Dockerfile builds, installed
with the chart (or `deploy/`) on a cluster with a node.

The cluster is, by default, the local one of tests/e2e/localcluster.py (root and a few Debian
packages; `tests/e2e/prepare.sh` builds what it needs). Any other cluster works unchanged, e.g.
kind on a laptop or a test cluster on ACK:

    DATACACHE_E2E_KUBECONFIG=~/.kube/kind    # the cluster (its current context)
    DATACACHE_E2E_IMAGE=registry.example.com/eci-datacache-operator:dev   # pullable there
    DATACACHE_E2E_EMULATOR_HOST=172.18.0.1   # an address of this machine its pods reach

Without root or the packages the tests skip, saying what is missing; under CI=true they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import IN_CI
from tests.e2e.localcluster import ClusterUnavailable, LocalCluster, missing_requirements
from tests.e2e.stack import (
    IMAGE_REPOSITORY,
    IMAGE_TAG,
    RELEASE_NAMESPACE,
    chart_values,
    credentials_secret,
    emulator_for_pods,
    virtual_node,
)
from tests.e2e.support import Cluster
from tests.support.controlplane import ControlPlaneUnavailable, find_assets


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _tool(name: str, assets: Path | None) -> str:
    if assets is not None and os.access(assets / name, os.X_OK):
        return str(assets / name)
    found = shutil.which(name)
    if found is None:
        _unavailable(f"no {name}: build it with tests/controlplane/build.sh or put it on PATH")
    assert found is not None
    return found


def _local_images() -> list[Path]:
    if listed := os.environ.get("DATACACHE_E2E_IMAGES"):
        return [Path(p) for p in listed.split(":") if p]
    cache = Path(os.environ.get("DATACACHE_CACHE", Path.home() / ".cache" / "eci-datacache-operator"))
    images = [cache / "images" / "pause.tar", cache / "images" / "operator.tar"]
    if not all(p.exists() for p in images):
        _unavailable("no images built: run tests/e2e/prepare.sh (as `make test` does)")
    return images


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="eci-datacache-e2e-"))
    try:
        if external := os.environ.get("DATACACHE_E2E_KUBECONFIG"):
            yield from _external_cluster(Path(external), workdir)
        else:
            yield from _local_cluster(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _external_cluster(kubeconfig: Path, workdir: Path) -> Iterator[Cluster]:
    image = os.environ.get("DATACACHE_E2E_IMAGE")
    host = os.environ.get("DATACACHE_E2E_EMULATOR_HOST")
    if not image or not host:
        pytest.fail("DATACACHE_E2E_KUBECONFIG needs DATACACHE_E2E_IMAGE and DATACACHE_E2E_EMULATOR_HOST")
    assets = None
    try:
        assets = find_assets()
    except ControlPlaneUnavailable:
        pass
    with emulator_for_pods(host).in_thread() as emulator:
        yield Cluster(
            kubeconfig=kubeconfig,
            kubectl_path=_tool("kubectl", assets),
            helm_path=_tool("helm", assets),
            values=chart_values(emulator.endpoint, image=image, pull_policy="IfNotPresent"),
            workdir=workdir,
            emulator_admin=emulator.admin_url,
        )


def _local_cluster(workdir: Path) -> Iterator[Cluster]:
    if missing := missing_requirements():
        _unavailable("no local cluster with a node: needs " + "; ".join(missing))
    try:
        assets = find_assets()
    except ControlPlaneUnavailable as error:
        _unavailable(str(error))
    images = _local_images()
    cluster = LocalCluster(assets=assets, images=images)
    try:
        cluster.start()
    except (ClusterUnavailable, ControlPlaneUnavailable) as error:
        _unavailable(f"the local cluster did not start: {error}")
    try:
        assert cluster.plane is not None and cluster.slot is not None
        with (
            emulator_for_pods(cluster.slot.host_ip).in_thread() as emulator,
            virtual_node(cluster.plane.kubeconfig, emulator.endpoint),
        ):
            yield Cluster(
                kubeconfig=cluster.plane.kubeconfig,
                kubectl_path=cluster.plane.kubectl_path,
                helm_path=_tool("helm", assets),
                values=chart_values(emulator.endpoint, image=f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"),
                workdir=workdir,
                emulator_admin=emulator.admin_url,
            )
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def release_namespace(cluster: Cluster) -> str:
    """The release namespace with the emulator's credentials Secret, as `make cluster` makes it."""
    cluster.apply(credentials_secret(RELEASE_NAMESPACE))
    return RELEASE_NAMESPACE
