"""The operator's own Kubernetes calls besides kopf's: status patches from daemons and
reading the Secrets that `dataSource.secretRef` names.

kopf applies a handler's `patch` only when the handler returns; a long-running daemon
writes its status through here instead. The official client is synchronous, so each call
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from datacache_operator import GROUP, VERSION


class SecretNotFound(LookupError):
    """The Secret named by secretRef does not exist (message names it, never a value)."""


_local = threading.local()


def _api_client() -> kubernetes.client.ApiClient:
    # One client per worker thread: the generated client is not thread-safe to share.
    client = getattr(_local, "client", None)
    if client is None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        client = _local.client = kubernetes.client.ApiClient()
    return client


def _patch_status_sync(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    api = kubernetes.client.CustomObjectsApi(_api_client())
    try:
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
        )
    except ApiException as error:
        if error.status != 404:  # the object is gone: nothing left to report on
            raise


async def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (a key set to None removes that field)."""
    await asyncio.to_thread(_patch_status_sync, plural, namespace, name, status)


def _read_secret_sync(namespace: str, name: str) -> dict[str, str]:
    api = kubernetes.client.CoreV1Api(_api_client())
    try:
        secret = api.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            raise SecretNotFound(f"Secret {namespace}/{name} not found") from None
        raise
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


async def read_secret(namespace: str, name: str) -> dict[str, str]:
    """The decoded data of a Secret. Values must go nowhere but the ECI request."""
    return await asyncio.to_thread(_read_secret_sync, namespace, name)


def _get_object_sync(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    api = kubernetes.client.CustomObjectsApi(_api_client())
    try:
        found = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(found)  # type: ignore[call-overload]


async def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One custom object of our group, or None when it does not exist."""
    return await asyncio.to_thread(_get_object_sync, plural, namespace, name)
