"""`make run` as the README's quick start uses it: the stack comes up, the example cache is
built by the emulator, and the example Deployment's pods are bound, released, placed on the
virtual ECI node and Running there with their cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.integration.support import REPO, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.virtualnode import NODE_NAME as VIRTUAL_NODE


def test_make_run_serves_the_webhook_for_the_quick_start(controlplane: ControlPlane, tmp_path: Path):
    # `controlplane` only for its CI rule (fail, never skip, without binaries): the stack starts its own.
    local = tmp_path / "local"
    stack = subprocess.Popen(
        [sys.executable, "-m", "tests.support.localstack", "--local-dir", str(local)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(stack.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: "Local stack is up." in "".join(output), timeout=120, what="the stack")
        env = {**os.environ, "KUBECONFIG": str(local / "kubeconfig")}

        def kubectl(*args: str) -> str:
            return subprocess.run(
                [controlplane.kubectl_path, *args], env=env, capture_output=True, text=True, check=True
            ).stdout

        # Two cloud accounts besides the operator's own, one EciAccount each, printed in the banner.
        banner = "".join(output)
        assert "EciAccount team-a: account 1000000000000002, key pair in Secret" in banner, banner
        assert (
            "EciAccount team-b: account 1000000000000003, role acs:ram::1000000000000003:role/eci-datacache"
            in banner
        )
        accounts = {
            a["metadata"]["name"]: a["spec"]
            for a in json.loads(kubectl("get", "eciaccounts", "-o", "json"))["items"]
        }
        assert set(accounts) == {"team-a", "team-b"}
        for name, spec in accounts.items():
            assert spec["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": name}}
            kubectl("get", "namespace", name)
        assert accounts["team-a"]["credentials"]["secretRef"]["name"] == "team-a-eci-keys"
        kubectl("-n", "eci-datacache-system", "get", "secret", "team-a-eci-keys")
        assert accounts["team-b"]["credentials"] == {
            "ramRoleArn": "acs:ram::1000000000000003:role/eci-datacache"
        }

        kubectl("apply", "-f", str(REPO / "examples" / "datacache-huggingface.yaml"))
        kubectl("apply", "-f", str(REPO / "examples" / "deployment-using-cache.yaml"))

        def pods() -> list[dict]:
            return json.loads(kubectl("get", "pods", "-l", "app=qwen-inference", "-o", "json"))["items"]

        found = wait_for(lambda: len(pods()) == 2 and pods(), timeout=60, what="the example's two pods")
        for pod in found:
            annotations = pod["metadata"]["annotations"]
            # The namespace default's own bucket (ECI's `default` is every unannotated pod's).
            assert annotations["k8s.aliyun.com/eci-data-cache-bucket"] == "ns.default"
            assert (
                json.loads(annotations["eci.datacache.dev/bound"])[0]["path"] == "/models/qwen2.5-7b-instruct"
            )
        wait_for(
            lambda: all(not p["spec"].get("schedulingGates") for p in pods()),
            timeout=90,
            what="the pods released once the cache is Ready",
        )

        def all_running() -> list[dict]:
            now = pods()
            return now if now and all(p.get("status", {}).get("phase") == "Running" for p in now) else []

        running = wait_for(
            all_running,
            timeout=90,
            what="the example's pods Running on ECI",
        )
        assert {p["spec"]["nodeName"] for p in running} == {VIRTUAL_NODE}
        for pod in running:
            events = kubectl(
                "get", "events", "--field-selector", f"involvedObject.name={pod['metadata']['name']}"
            )
            assert "DataCacheMatched" in events, events  # the container group got the cache
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        code = stack.wait(60)
        reader.join(5)
    assert code == 0, "".join(output)[-3000:]
