"""Helpers of the integration tests (imported by conftest and by the tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.support.controlplane import ControlPlane
from tests.support.webhook import webhook_configuration

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY_ID = "LTAI-integration-test"
ACCESS_KEY_SECRET = "integration-secret-never-logged"  # noqa: S105 - a test credential

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class OperatorProcess:
    """`datacache-operator run` in a child process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, wrapper: Sequence[str] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.wrapper = list(wrapper)  # a command the operator's is appended to (e.g. unshare)
        self.process: subprocess.Popen[bytes] | None = None
        self.health_port = int(env["DATACACHE_HEALTH_PORT"])

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "datacache_operator", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for(self._healthy, timeout=60, what="the operator's health endpoint")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log()[-3000:]}") from None

    def _healthy(self) -> bool:
        import urllib.request

        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.log()[-3000:]}")
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final status write (a crash)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        """What Prometheus scrapes from the process's /metrics."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        port = self.env["DATACACHE_METRICS_PORT"]
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())


class Kube:
    """Small kubectl helpers bound to one namespace."""

    def __init__(self, controlplane: ControlPlane, namespace: str) -> None:
        self.controlplane = controlplane
        self.namespace = namespace

    def apply(self, manifest: dict[str, Any] | str) -> None:
        self.controlplane.apply(manifest, "-n", self.namespace)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.controlplane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.controlplane.kubectl(*args, "-n", self.namespace, check=check)

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)

    def wait_condition(
        self, kind: str, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            obj = self.get(kind, name)
            if not obj:
                return None
            condition = next(
                (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None
            )
            ok = (
                condition
                and condition["status"] == status
                and (reason is None or condition["reason"] == reason)
            )
            return obj if ok else None

        return wait_for(matches, timeout=timeout, what=f"{kind}/{name} {type_}={status} {reason or ''}")


def create_cache_as_lost_reply(
    env: dict[str, str], cluster: str, uid: str, namespace: str, name: str, path: str
) -> str:
    """Create the cache exactly as the operator would, then 'lose' the reply: the id is
    not written anywhere but the cloud."""
    from alibabacloud_eci20180808 import models as eci_models
    from alibabacloud_eci20180808.client import Client
    from alibabacloud_tea_openapi.models import Config

    from datacache_operator.api.buckets import namespace_bucket
    from datacache_operator.reconcile.common import client_token, owner_tags

    client = Client(
        Config(
            access_key_id=env["ALIBABA_CLOUD_ACCESS_KEY_ID"],
            access_key_secret=env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
            endpoint=env["ECI_ENDPOINT"],
            protocol="http",
        )
    )
    request = eci_models.CreateDataCacheRequest(
        region_id=env["DATACACHE_DEFAULT_REGION"],
        bucket=namespace_bucket(namespace),
        path=path,
        name=name,
        data_source=eci_models.CreateDataCacheRequestDataSource(
            type="URL", options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"}
        ),
        tag=[
            eci_models.CreateDataCacheRequestTag(key=k, value=v)
            for k, v in owner_tags(cluster, uid, namespace, name).items()
        ],
        client_token=client_token(uid, 0),
    )
    return str(client.create_data_cache(request).body.data_cache_id)


WEBHOOK_PATH = "/mutate-v1-pod"
INJECT_LABEL = "eci.datacache.dev/inject"


def webhook_configuration_manifest(name: str, url_port: int, namespace: str) -> dict[str, Any]:
    """The chart's webhook rules, called on 127.0.0.1, for the test's namespace only."""
    return webhook_configuration(name, url_port, {"matchLabels": {"kubernetes.io/metadata.name": namespace}})


def opted_in_pod(name: str, caches: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {INJECT_LABEL: "true"},
            "annotations": {"eci.datacache.dev/caches": caches},
        },
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def wait_until_the_webhook_answers(kube: Kube, timeout: float = 60) -> None:
    """Until the apiserver trusts the operator's CA: a server-side dry run of an opted-in pod
    naming no existing cache is refused by the webhook itself (not by a TLS error)."""
    probe = json.dumps(opted_in_pod("webhook-probe", "no-such-cache:/probe"))

    def answered() -> str | None:
        result = kube.controlplane.kubectl(
            "create", "--dry-run=server", "-n", kube.namespace, "-f", "-", input=probe, check=False
        )
        return result.stderr if "DataCache no-such-cache not found" in result.stderr else None

    wait_for(answered, timeout=timeout, what="the pod webhook to answer the apiserver")
