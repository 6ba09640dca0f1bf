"""The operator starts where its user has no passwd entry and no USER or LOGNAME is set, as in
its image (user 65532, which neither the image nor python:3.12-slim lists): kopf's default
identity asks the passwd database, and the process exited before it started."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.integration.support import Kube, OperatorProcess

NAME = "as-image-user"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_operator_runs_without_a_passwd_entry_for_its_user(
    operator_env: dict[str, str], datacache_crds: list[str], kube: Kube, tmp_path: Path
) -> None:
    # In a mount namespace of its own the process sees an empty /etc/passwd and no other user
    # database (glibc's systemd module would make root up): its user is unknown.
    empty, files_only = tmp_path / "passwd", tmp_path / "nsswitch.conf"
    empty.write_text("")
    files_only.write_text("passwd: files\ngroup: files\n")
    wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount --bind "{empty}" /etc/passwd && mount --bind "{files_only}" /etc/nsswitch.conf && exec "$@"',
        "operator",
    ]
    env = {
        key: value
        for key, value in operator_env.items()
        if key not in ("USER", "LOGNAME", "LNAME", "USERNAME", "POD_NAME")
    }
    operator = OperatorProcess(env, tmp_path / "operator.log", wrapper=wrapper)
    operator.start()  # waits for /healthz; fails at once, with the log, if the process exits
    try:
        kube.apply(
            {
                "apiVersion": "eci.datacache.dev/v1alpha1",
                "kind": "DataCache",
                "metadata": {"name": NAME},
                "spec": {
                    "path": f"/models/{NAME}",
                    "dataSource": {"type": "URL", "options": {"url": "https://example.com/m"}},
                },
            }
        )
        kube.wait_condition("datacache", NAME, "Ready", "True")
    finally:
        operator.stop()
