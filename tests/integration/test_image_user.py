"""The operator starts as the image runs it: a numeric user with no passwd entry and no
USER or LOGNAME in its environment (kopf's default identity asks the passwd database)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.integration.support import Kube, OperatorProcess

from datacache_operator.testing.controlplane import ControlPlane

IMAGE_USER = 65532  # the Dockerfile's USER and the chart's runAsUser


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@pytest.fixture
def readable_kubeconfig(controlplane: ControlPlane) -> Iterator[Path]:
    """The admin kubeconfig and the apiserver's CA where the image's user can read them."""
    folder = Path(tempfile.mkdtemp(prefix="datacache-image-user-"))
    try:
        folder.chmod(0o755)
        ca = folder / "ca.crt"
        shutil.copyfile(controlplane.ca_file, ca)
        config = yaml.safe_load(controlplane.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["certificate-authority"] = str(ca)
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        for path in (ca, kubeconfig):
            os.chown(path, IMAGE_USER, IMAGE_USER)
            path.chmod(0o600)
        yield kubeconfig
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="running the operator as another user needs root")
def test_operator_runs_as_a_numeric_user_without_a_passwd_entry(
    operator_env: dict[str, str],
    datacache_crds: list[str],
    readable_kubeconfig: Path,
    kube: Kube,
    tmp_path: Path,
) -> None:
    if _has_passwd_entry(IMAGE_USER):
        pytest.skip(f"this machine has a passwd entry for {IMAGE_USER}")
    env = {
        key: value
        for key, value in operator_env.items()
        if key not in ("USER", "LOGNAME", "LNAME", "USERNAME", "POD_NAME", "HOME")
    }
    env.update(KUBECONFIG=str(readable_kubeconfig), HOME="/")
    operator = OperatorProcess(env, tmp_path / "operator.log", user=IMAGE_USER)
    operator.start()  # waits for /healthz; fails at once if the process exits
    try:
        kube.apply(
            {
                "apiVersion": "eci.datacache.dev/v1alpha1",
                "kind": "DataCache",
                "metadata": {"name": "as-image-user"},
                "spec": {
                    "path": "/models/as-image-user",
                    "dataSource": {"type": "URL", "options": {"url": "https://example.com/m"}},
                },
            }
        )
        kube.wait_condition("datacache", "as-image-user", "Ready", "True")
    finally:
        operator.stop()
