"""Events are posted from a queue by the operator itself (no kopf context needed): a pass never
waits for the apiserver, one failed post loses only that event, and shutdown sends what is left."""

from __future__ import annotations

import asyncio
from typing import Any

from datacache_operator import kube


def obj(namespace: str | None = "ml") -> dict[str, Any]:
    meta = {"name": "qwen", "uid": "u1", **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "eci.datacache.dev/v1alpha1", "kind": "DataCache", "metadata": meta}


def test_an_event_names_its_object_and_lands_in_its_namespace_or_default() -> None:
    body = kube.event_body(obj(), "Normal", "Creating", "Created data cache edc-1.", "2026-12-06T10:00:00Z")
    assert body["metadata"] == {"generateName": "qwen.", "namespace": "ml"}
    assert body["involvedObject"] == {
        "apiVersion": "eci.datacache.dev/v1alpha1",
        "kind": "DataCache",
        "name": "qwen",
        "uid": "u1",
        "namespace": "ml",
    }
    assert (body["type"], body["reason"], body["source"]) == (
        "Normal",
        "Creating",
        {"component": kube.EVENT_COMPONENT},
    )
    cluster_scoped = kube.event_body(obj(None), "Normal", "Ready", "x", "2026-12-06T10:00:00Z")
    assert (
        cluster_scoped["metadata"]["namespace"] == "default"
        and "namespace" not in cluster_scoped["involvedObject"]
    )


def test_a_long_message_is_cut_in_the_middle_to_what_kubectl_shows() -> None:
    message = "a" * 800 + "b" * 800
    cut = kube.event_body(obj(), "Warning", "Failed", message, "2026-12-06T10:00:00Z")["message"]
    assert len(cut) <= kube.MAX_EVENT_MESSAGE and cut.startswith("a") and cut.endswith("b")


async def test_posting_never_waits_one_failure_loses_one_event_and_close_sends_the_rest() -> None:
    sent: list[str] = []
    release = asyncio.Event()

    async def send(body: dict[str, Any]) -> None:
        await release.wait()
        if body["reason"] == "Broken":
            raise RuntimeError("apiserver said no")
        sent.append(body["reason"])

    recorder = kube.EventRecorder(send)
    for reason in ("Creating", "Broken", "Available"):
        recorder.post(obj(), "Normal", reason, "m")  # returns while the apiserver has not answered
    assert sent == []
    release.set()
    await recorder.close(5.0)
    assert sent == ["Creating", "Available"]
