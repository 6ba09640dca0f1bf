"""The pod admission webhook over TLS (aiohttp, already under kopf): AdmissionReview in,
JSON patch or denial out. Served by every replica, leader or not, outside kopf's run.

The decisions are in `admission.mutate`; this module reads what they need (the DataCaches a
pod names, and the namespace's replications when one is in another region, both kept by a
watch) and keeps the serving certificate (`admission.certs`) loaded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from datacache_operator import kube
from datacache_operator.admission import certs
from datacache_operator.admission.mutate import mutation, requested_caches
from datacache_operator.api.binding import BindingError, CacheRequest
from datacache_operator.api.common import DATACACHE_REPLICATIONS, DATACACHES
from datacache_operator.metrics import Metrics
from datacache_operator.reconcile.binding import Binding, binding_of, region_of
from datacache_operator.settings import OperatorSettings

PATH = "/mutate-v1-pod"
CERTIFICATE_CHECK_S = 60.0  # re-read the Secret (cert-manager renews) and re-put the CA this often

logger = logging.getLogger("datacache_operator.admission")

ObjectLister = Callable[[str, str], Awaitable[list[dict[str, Any]]]]  # (plural, namespace)


class CacheResolver:
    """Resolves the cache names of one pod: from the watched objects when given (the
    replications only when a cache is in another region), from the apiserver otherwise.
    A name the watch has not brought yet is read from the apiserver: a DataCache applied a
    moment before its pods must not refuse them."""

    def __init__(
        self,
        settings: OperatorSettings,
        read_object: kube.ObjectReader = kube.get_object_to_admit,
        list_objects: ObjectLister = kube.list_objects_to_admit,
        watched: Mapping[str, kube.WatchedObjects] | None = None,
    ) -> None:
        """`watched`: plural -> its objects kept by a watch (DataCaches, replications)."""
        self.settings = settings
        self.read_object = read_object
        self.list_objects = list_objects
        self.watched = dict(watched or {})
        self.placement = settings.placement

    async def _read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        view = self.watched.get(plural)
        if view is not None and (found := view.get(namespace, name)) is not None:
            return found
        return await self.read_object(plural, namespace, name)

    async def bindings(
        self, namespace: str, requests: list[CacheRequest]
    ) -> list[tuple[CacheRequest, Binding]]:
        found = await asyncio.gather(*(self._read(DATACACHES, namespace, r.name) for r in requests))
        cluster_region = self.settings.effective_cluster_region
        default_region = self.settings.default_region
        elsewhere = any(obj is not None and region_of(obj, default_region) != cluster_region for obj in found)
        if not elsewhere:
            return self._bind(namespace, requests, found, [])
        view = self.watched.get(DATACACHE_REPLICATIONS)
        if view is not None and view.covers(namespace):
            try:
                return self._bind(namespace, requests, found, view.in_namespace(namespace))
            except BindingError:
                pass  # a replication applied a moment before its pods may not be in the watch yet
        replications = await self.list_objects(DATACACHE_REPLICATIONS, namespace)
        return self._bind(namespace, requests, found, replications)

    def _bind(
        self,
        namespace: str,
        requests: list[CacheRequest],
        found: list[dict[str, Any] | None],
        replications: list[dict[str, Any]],
    ) -> list[tuple[CacheRequest, Binding]]:
        return [
            (
                request,
                binding_of(
                    request.name,
                    namespace,
                    obj,
                    replications,
                    self.settings.effective_cluster_region,
                    self.settings.default_region,
                    self.settings.tenancy,
                ),
            )
            for request, obj in zip(requests, found, strict=True)
        ]


def _response(uid: str, allowed: bool, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": allowed, **extra},
    }


async def review(body: Mapping[str, Any], resolver: CacheResolver) -> tuple[dict[str, Any], str]:
    """The AdmissionReview answer to `body` and the result for the metrics."""
    request = body.get("request") or {}
    uid = str(request.get("uid", ""))
    pod = request.get("object") or {}
    if request.get("operation") != "CREATE" or (request.get("kind") or {}).get("kind") != "Pod":
        return _response(uid, True), "skipped"  # volumes are immutable after CREATE
    # A controller's pod arrives without metadata.namespace: the request has it.
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default"
    try:
        bindings = await resolver.bindings(namespace, requested_caches(pod))
        patch = mutation(pod, bindings, resolver.placement)
    except BindingError as error:
        return _response(
            uid, False, status={"code": 403, "reason": "Forbidden", "message": str(error)}
        ), "denied"
    result = "bound" if all(b.ready for _, b in bindings) else "gated"
    encoded = base64.b64encode(json.dumps(patch).encode()).decode()
    return _response(uid, True, patchType="JSONPatch", patch=encoded), result


class WebhookServer:
    """The TLS server, with its certificate kept current from the Secret."""

    def __init__(self, settings: OperatorSettings, metrics: Metrics, resolver: CacheResolver | None = None):
        self.settings = settings
        self.metrics = metrics
        self._watched = (
            []
            if resolver is not None
            else [
                kube.WatchedObjects(plural, settings.namespaces)
                for plural in (DATACACHES, DATACACHE_REPLICATIONS)
            ]
        )
        self.resolver = resolver or CacheResolver(settings, watched={w.plural: w for w in self._watched})
        self._runner: web.AppRunner | None = None
        self._context: ssl.SSLContext | None = None
        self._loaded: certs.ServingCertificate | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="datacache-webhook-")
        self._refresher: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer, result = await review(await request.json(), self.resolver)
        except Exception:  # an apiserver error while reading the caches: the pod is refused (failurePolicy)
            logger.exception("admission failed")
            self.metrics.admissions.labels("error").inc()
            raise web.HTTPInternalServerError(
                text="the webhook could not read the caches; try again"
            ) from None
        self.metrics.admissions.labels(result).inc()
        self.metrics.admission_seconds.observe(time.perf_counter() - started)
        return web.json_response(answer)

    async def _certificate(self) -> certs.ServingCertificate:
        """The serving certificate from the Secret, made first when the operator is its maker."""
        namespace, name = self.settings.operator_namespace, self.settings.webhook_secret
        hosts = self.settings.effective_webhook_hosts
        while True:
            data = await kube.read_secret_data(namespace, name)
            found = certs.ServingCertificate.from_secret_data(data) if data else None
            if found is not None:
                if self.settings.webhook_certificate == "operator" and not found.covers(hosts):
                    logger.warning(
                        f"Secret {namespace}/{name} does not name every webhook host ({', '.join(hosts)}); "
                        "delete it to have a new certificate made"
                    )
                return found
            if self.settings.webhook_certificate == "cert-manager":
                logger.info(f"waiting for cert-manager to fill Secret {namespace}/{name}")
                await asyncio.sleep(2)
                continue
            made = certs.generate(hosts)
            labels = {"app.kubernetes.io/part-of": "eci-datacache-operator"}
            if await kube.create_tls_secret(namespace, name, made.as_secret_data(), labels):
                logger.info(f"made the webhook's CA and certificate in Secret {namespace}/{name}")
                return made
            # Another replica made it first: read theirs on the next round.

    def _load(self, certificate: certs.ServingCertificate) -> None:
        folder = Path(self._folder.name)
        (folder / "tls.crt").write_bytes(certificate.cert)
        key_file = folder / "tls.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(certificate.key)
        if self._context is None:
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # New connections use the new pair; open ones keep theirs.
        self._context.load_cert_chain(folder / "tls.crt", key_file)
        self._loaded = certificate

    async def _refresh(self) -> None:
        certificate = await self._certificate()
        if certificate != self._loaded:
            self._load(certificate)
        if self.settings.webhook_certificate == "operator" and self.settings.webhook_configuration:
            changed = await kube.inject_ca(self.settings.webhook_configuration, certificate.ca)
            if changed > 0:
                logger.info(f"put the CA into {changed} webhook(s) of {self.settings.webhook_configuration}")
            elif changed < 0:
                logger.warning(
                    f"MutatingWebhookConfiguration {self.settings.webhook_configuration} not found"
                )

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(CERTIFICATE_CHECK_S)
            try:
                await self._refresh()
            except Exception:  # the apiserver may be away for a moment; the old pair keeps serving
                logger.exception("could not refresh the webhook certificate")

    async def start(self) -> None:
        for watched in self._watched:
            watched.start()
        await self._refresh()
        app = web.Application()
        app.router.add_post(PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self.settings.webhook_port, ssl_context=self._context)  # noqa: S104
        await site.start()
        self._refresher = asyncio.create_task(self._keep_fresh())
        logger.info(f"serving the pod webhook on port {self.settings.webhook_port} ({PATH})")

    async def stop(self) -> None:
        for watched in self._watched:
            watched.stop()
        if self._refresher is not None:
            self._refresher.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self._folder.cleanup()
