"""The operator's own Kubernetes calls besides kopf's: status patches from the scheduler's
passes and reading the Secrets that `dataSource.secretRef` names.

kopf applies a handler's `patch` only when the handler returns; a pass runs outside kopf's
handlers and writes its status through here instead. The official client is synchronous,
so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes

# The client imports each API module on first use (0.6 s of CPU for these): here, at
# import, not in 32 threads at once on the first objects of a burst.
from kubernetes.client import (
    AdmissionregistrationV1Api,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException

from datacache_operator import GROUP, VERSION

T = TypeVar("T")
_log = logging.getLogger(__name__)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class SecretNotFound(LookupError):
    """The Secret named by secretRef does not exist (message names it, never a value)."""


# How the controllers and the webhook read the cluster (`read_secret`, `get_object`; fakes in
# unit tests): a Secret's data by (namespace, name); an object by (plural, namespace, name),
# namespace None for a cluster-scoped kind, None when it does not exist.
SecretReader = Callable[[str, str], Awaitable[dict[str, str]]]
ObjectReader = Callable[[str, str | None, str], Awaitable[dict[str, Any] | None]]
NamespaceReader = Callable[[str], Awaitable[dict[str, Any] | None]]


_local = threading.local()
# The calls of passes and of the pod binder run in threads of their own, many at once: each
# waits on the apiserver, not on the CPU, and a queue of them never delays the Lease renewals,
# which run in the default executor. 64, half the default workers: enough that a new object's
# finalizer patch waits on the apiserver rather than on a thread, few enough that thread
# hand-offs cost less CPU than they save (benchmarks/README.md has the figures).
_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="kube")
# The webhook's reads have threads of their own: a pod's admission never waits behind the
# leader's passes, and a flood of AdmissionReviews (anyone who may create a pod can send them)
# holds at most these, never the passes' threads.
_ADMISSION_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="admission")


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_THREADS, functools.partial(function, *args))


async def _in_admission_thread(function: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_ADMISSION_THREADS, functools.partial(function, *args))


_guards: list[Callable[[], None]] = []


def set_action_guard(guard: Callable[[], None]) -> None:
    """What must hold before the operator acts (leader election: a fresh Lease)."""
    _guards[:] = [guard]


def check_may_act() -> None:
    """Called before every write that acts for an object (status, pods) and every cloud call."""
    for guard in _guards:
        guard()


_configuration_lock = threading.Lock()
_configuration: list[kubernetes.client.Configuration] = []  # loaded once, shared by the threads


def _shared_configuration() -> kubernetes.client.Configuration:
    """The in-cluster or kubeconfig settings, read once per process (each thread's first
    call read and parsed the kubeconfig again, 32 times in the first second of a burst)."""
    with _configuration_lock:
        if not _configuration:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            _configuration.append(configuration)
        return _configuration[0]


def _api_client() -> kubernetes.client.ApiClient:
    # One client per worker thread: the generated client is not thread-safe to share.
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = kubernetes.client.ApiClient(_shared_configuration())
    return client


def coordination_api() -> CoordinationV1Api:
    """The Lease API, for leader election (call from a worker thread)."""
    return CoordinationV1Api(_api_client())


# Our objects' calls take `namespace` None for a cluster-scoped kind.


def _patch_status_sync(plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> None:
    api = CustomObjectsApi(_api_client())
    body = {"status": dict(status)}
    try:
        if namespace is None:
            api.patch_cluster_custom_object_status(GROUP, VERSION, plural, name, body)
        else:
            api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, body)
    except ApiException as error:
        if error.status != 404:  # the object is gone: nothing left to report on
            raise


async def patch_status(plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (a key set to None removes that field)."""
    check_may_act()
    await _in_thread(_patch_status_sync, plural, namespace, name, status)


def _read_secret_sync(namespace: str, name: str) -> dict[str, str]:
    api = CoreV1Api(_api_client())
    try:
        secret = api.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            raise SecretNotFound(f"Secret {namespace}/{name} not found") from None
        raise
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


async def read_secret(namespace: str, name: str) -> dict[str, str]:
    """The decoded data of a Secret. Values must go nowhere but the ECI request."""
    return await _in_thread(_read_secret_sync, namespace, name)


def _get_object_sync(plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    api = CustomObjectsApi(_api_client())
    found: dict[str, Any]
    try:
        if namespace is None:
            found = api.get_cluster_custom_object(GROUP, VERSION, plural, name)  # type: ignore[assignment]
        else:
            found = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)  # type: ignore[assignment]
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(found)


async def get_object(plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """One custom object of our group, or None when it does not exist."""
    return await _in_thread(_get_object_sync, plural, namespace, name)


async def get_object_to_admit(plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """`get_object` for the webhook, in the webhook's own threads."""
    return await _in_admission_thread(_get_object_sync, plural, namespace, name)


def _read_namespace_sync(name: str) -> dict[str, Any] | None:
    try:
        client = _api_client()
        found = CoreV1Api(client).read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    namespace: dict[str, Any] = client.sanitize_for_serialization(found)  # type: ignore[no-untyped-call]
    return namespace


async def read_namespace(name: str) -> dict[str, Any] | None:
    """A Namespace (its uid, its annotations set by administrators), None when there is none."""
    return await _in_thread(_read_namespace_sync, name)


# ---- pods, listed by label only (never a watch of every pod) ------------------------------


# Pods a page: json.loads holds the GIL for a whole page (about 10 ms a hundred pods here), and
# the webhook's event loop waits that long; between pages it runs.
POD_PAGE = 100


def _list_pods_sync(
    namespace: str | None, label_selector: str, field_selector: str | None
) -> list[dict[str, Any]]:
    api = CoreV1Api(_api_client())
    pods: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "label_selector": label_selector,
            "limit": POD_PAGE,
            "_preload_content": False,
        }
        if field_selector:
            kwargs["field_selector"] = field_selector
        if token:
            kwargs["_continue"] = token
        response: Any  # an HTTP response (_preload_content=False), not the client's model
        if namespace:
            response = api.list_namespaced_pod(namespace, **kwargs)
        else:
            response = api.list_pod_for_all_namespaces(**kwargs)
        page = json.loads(response.data)  # plain dicts: the client's models cost 10x the memory
        pods.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return pods


async def list_pods(
    namespace: str | None, label_selector: str, field_selector: str | None = None
) -> list[dict[str, Any]]:
    """Pods matching a label selector (server-side), in one namespace or all, every page."""
    return await _in_thread(_list_pods_sync, namespace, label_selector, field_selector)


def _json_patched(send: Callable[[str], Any]) -> bool:
    """Send one JSON patch (`send` gets its content type); False when the object is gone or
    has changed since it was read (a failed `test` operation)."""
    try:
        send("application/json-patch+json")
    except ApiException as error:
        if error.status in (404, 409, 422):
            return False
        raise
    return True


def _patch_pod_sync(namespace: str, name: str, operations: list[dict[str, Any]]) -> bool:
    api = CoreV1Api(_api_client())
    return _json_patched(
        lambda content_type: api.patch_namespaced_pod(name, namespace, operations, _content_type=content_type)
    )


async def patch_pod(namespace: str, name: str, operations: list[dict[str, Any]]) -> bool:
    """Apply a JSON patch to a pod; False when the pod is gone or a `test` operation failed."""
    check_may_act()
    return await _in_thread(_patch_pod_sync, namespace, name, operations)


def _patch_object_sync(
    plural: str, namespace: str | None, name: str, operations: list[dict[str, Any]]
) -> bool:
    api = CustomObjectsApi(_api_client())

    def send(content_type: str) -> Any:
        if namespace is None:
            return api.patch_cluster_custom_object(
                GROUP, VERSION, plural, name, operations, _content_type=content_type
            )
        return api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, operations, _content_type=content_type
        )

    return _json_patched(send)


async def patch_object(
    plural: str, namespace: str | None, name: str, operations: list[dict[str, Any]]
) -> bool:
    """Apply a JSON patch to one of our objects (its metadata: the finalizer); False when the
    object is gone or a `test` operation failed."""
    check_may_act()
    return await _in_thread(_patch_object_sync, plural, namespace, name, operations)


def _list_objects_sync(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    api = CustomObjectsApi(_api_client())
    found: dict[str, Any]
    if namespace is None:
        found = api.list_cluster_custom_object(GROUP, VERSION, plural)  # type: ignore[assignment]
    else:
        found = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)  # type: ignore[assignment]
    return list(found.get("items") or [])


async def list_objects(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    """Every custom object of our group of one kind in a namespace (None: of a cluster-scoped
    kind, or of every namespace)."""
    return await _in_thread(_list_objects_sync, plural, namespace)


async def list_objects_to_admit(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    """`list_objects` for the webhook, in the webhook's own threads."""
    return await _in_admission_thread(_list_objects_sync, plural, namespace)


# ---- workloads rolled onto a cache's new revision (rollouts, off unless enabled) ----------

# Each kind's list, read and patch calls of AppsV1Api, by the kind's name.
_WORKLOAD_CALLS = {
    "Deployment": ("list_namespaced_deployment", "read_namespaced_deployment", "patch_namespaced_deployment"),
    "StatefulSet": (
        "list_namespaced_stateful_set",
        "read_namespaced_stateful_set",
        "patch_namespaced_stateful_set",
    ),
}
WORKLOAD_PAGE = 100


def _workload_call(kind: str, which: int) -> Callable[..., Any]:
    if kind not in _WORKLOAD_CALLS:
        raise ValueError(f"{kind} is not a workload the operator rolls ({', '.join(_WORKLOAD_CALLS)})")
    return getattr(AppsV1Api(_api_client()), _WORKLOAD_CALLS[kind][which])  # type: ignore[no-any-return]


def _list_workloads_sync(namespace: str) -> list[dict[str, Any]]:
    workloads: list[dict[str, Any]] = []
    for kind in _WORKLOAD_CALLS:
        lister = _workload_call(kind, 0)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": WORKLOAD_PAGE, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            page = json.loads(lister(namespace, **kwargs).data)
            # A list's items carry no kind: each is given its own, so callers can name it.
            workloads.extend(
                {**item, "apiVersion": "apps/v1", "kind": kind} for item in page.get("items") or []
            )
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
    return workloads


async def list_workloads(namespace: str) -> list[dict[str, Any]]:
    """Every Deployment and StatefulSet of a namespace (every page), each with its `kind`."""
    return await _in_thread(_list_workloads_sync, namespace)


def _read_workload_sync(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response = _workload_call(kind, 1)(name, namespace, _preload_content=False)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    found: dict[str, Any] = json.loads(response.data)
    return {**found, "apiVersion": "apps/v1", "kind": kind}


async def read_workload(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One Deployment or StatefulSet, None when it does not exist."""
    return await _in_thread(_read_workload_sync, kind, namespace, name)


def _patch_workload_sync(kind: str, namespace: str, name: str, operations: list[dict[str, Any]]) -> bool:
    patch = _workload_call(kind, 2)
    return _json_patched(lambda content_type: patch(name, namespace, operations, _content_type=content_type))


async def patch_workload(kind: str, namespace: str, name: str, operations: list[dict[str, Any]]) -> bool:
    """Apply a JSON patch to a Deployment or StatefulSet; False when it is gone or a `test`
    operation failed (it changed since it was read)."""
    check_may_act()
    return await _in_thread(_patch_workload_sync, kind, namespace, name, operations)


class WatchedObjects:
    """One kind of ours as the apiserver last told it: listed, then kept current by a watch
    (the informer pattern), in a thread of its own per namespace watched (or one for all).
    The webhook reads it on every pod create: memory, not a GET per pod, so admission costs
    the apiserver nothing more at a thousand pods a minute than at one.

    A scope is served only while its watch is healthy: from a successful list until the watch
    fails (an error, the apiserver gone, no answer within the read timeout). Meanwhile its
    readers get nothing from here and read the apiserver, so the view is never older than one
    read timeout."""

    WATCH_SECONDS = 60  # each watch ends after this (the server's timeout) and resumes from where it was
    READ_TIMEOUT_SECONDS = WATCH_SECONDS + 15  # a connection silent this long is dead
    RETRY_SECONDS = (1.0, 30.0)  # backoff between failed lists: first, longest

    def __init__(self, plural: str, namespaces: Sequence[str]) -> None:
        """`namespaces`: those to watch; empty: every namespace."""
        self.plural = plural
        self.scopes: list[str | None] = list(namespaces) or [None]
        # One store per scope, each written by its own thread only.
        self._stores: dict[str | None, dict[tuple[str, str], dict[str, Any]]] = {}
        self._healthy: set[str | None] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for scope in self.scopes:
            thread = threading.Thread(
                target=self._keep, args=(scope,), name=f"watch-{self.plural}-{scope or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """The threads end with their current watch (daemon threads: never a wait at exit)."""
        self._stopping.set()

    def _store_of(self, namespace: str) -> dict[tuple[str, str], dict[str, Any]] | None:
        """The store holding `namespace`'s objects while its watch is healthy; None otherwise."""
        for scope in (namespace, None):
            if scope in self._healthy:
                return self._stores.get(scope, {})
        return None

    def covers(self, namespace: str) -> bool:
        """Whether every object of `namespace` is here, as the apiserver has it now."""
        return self._store_of(namespace) is not None

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        store = self._store_of(namespace)
        return None if store is None else store.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        store = self._store_of(namespace)
        return [] if store is None else [obj for (ns, _), obj in list(store.items()) if ns == namespace]

    @staticmethod
    def _kept(obj: dict[str, Any]) -> dict[str, Any]:
        """The object without what no reader needs (managedFields are most of its bytes)."""
        metadata = dict(obj.get("metadata") or {})
        metadata.pop("managedFields", None)
        annotations = metadata.get("annotations")
        if annotations and LAST_APPLIED in annotations:
            metadata["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        return {**obj, "metadata": metadata}

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
        metadata = obj.get("metadata") or {}
        return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")

    def _lister(
        self, client: kubernetes.client.ApiClient, scope: str | None
    ) -> tuple[Callable[..., Any], list[Any]]:
        api = CustomObjectsApi(client)
        if scope is None:
            return api.list_cluster_custom_object, [GROUP, VERSION, self.plural]
        return api.list_namespaced_custom_object, [GROUP, VERSION, scope, self.plural]

    def _list(self, client: kubernetes.client.ApiClient, scope: str | None) -> str:
        lister, arguments = self._lister(client, scope)
        response = lister(
            *arguments, _request_timeout=(10, self.READ_TIMEOUT_SECONDS), _preload_content=False
        )
        listed: dict[str, Any] = json.loads(response.data)
        # A new store, not an update: objects deleted while nobody watched are gone from it.
        self._stores[scope] = {self._key(obj): self._kept(obj) for obj in listed.get("items") or []}
        self._healthy.add(scope)
        return str(listed["metadata"]["resourceVersion"])

    def _keep(self, scope: str | None) -> None:
        from kubernetes import watch

        client = _api_client()
        lister, arguments = self._lister(client, scope)
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        failures = 0
        while not self._stopping.is_set():
            try:
                version = self._list(client, scope)
                failures = 0
                while not self._stopping.is_set():
                    for event in stream.stream(  # type: ignore[no-untyped-call]
                        lister,
                        *arguments,
                        resource_version=version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=self.WATCH_SECONDS,
                        _request_timeout=(10, self.READ_TIMEOUT_SECONDS),
                    ):
                        store = self._stores[scope]
                        obj = event[
                            "raw_object"
                        ]  # a dict whatever the API (core kinds are models in "object")
                        if event["type"] == "DELETED":
                            store.pop(self._key(obj), None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            store[self._key(obj)] = self._kept(obj)
                        if self._stopping.is_set():
                            return
                    version = stream.resource_version or version
            except Exception as error:  # 410 Gone, the apiserver away, a silent connection
                self._healthy.discard(scope)  # readers go to the apiserver until the next list
                if not self._stopping.is_set():
                    first, longest = self.RETRY_SECONDS
                    delay = min(longest, first * 2**failures)
                    failures += 1
                    _log.warning(
                        f"watch of {self.plural} ({scope or 'all namespaces'}) ended: {error}; "
                        f"listing again in {delay:g} s"
                    )
                    self._stopping.wait(delay)


class WatchedNamespaces(WatchedObjects):
    """Every Namespace (their labels choose each one's cloud account), watched like our kinds;
    read with `get("", name)`."""

    def __init__(self) -> None:
        super().__init__("namespaces", [])

    def _lister(
        self, client: kubernetes.client.ApiClient, scope: str | None
    ) -> tuple[Callable[..., Any], list[Any]]:
        return CoreV1Api(client).list_namespace, []


# ---- the webhook's serving certificate and its CA ------------------------------------------


def _read_secret_data_sync(namespace: str, name: str) -> dict[str, bytes] | None:
    api = CoreV1Api(_api_client())
    try:
        secret = api.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


async def read_secret_data(namespace: str, name: str) -> dict[str, bytes] | None:
    """The raw data of a Secret, or None when it does not exist."""
    return await _in_thread(_read_secret_data_sync, namespace, name)


def _create_tls_secret_sync(
    namespace: str, name: str, data: Mapping[str, bytes], labels: Mapping[str, str]
) -> bool:
    api = CoreV1Api(_api_client())
    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels)),
        type="kubernetes.io/tls",
        data={key: base64.b64encode(value).decode() for key, value in data.items()},
    )
    try:
        api.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status == 409:  # another replica was first: use its certificate
            return False
        raise
    return True


async def create_tls_secret(
    namespace: str, name: str, data: Mapping[str, bytes], labels: Mapping[str, str]
) -> bool:
    """Create a kubernetes.io/tls Secret; False when it already exists."""
    return await _in_thread(_create_tls_secret_sync, namespace, name, data, labels)


INJECT_CA_ATTEMPTS = 5


def _inject_ca_sync(configuration: str, ca_bundle: bytes) -> int:
    api = AdmissionregistrationV1Api(_api_client())
    encoded = base64.b64encode(ca_bundle).decode()
    for _ in range(INJECT_CA_ATTEMPTS):
        try:
            found = api.read_mutating_webhook_configuration(configuration)
        except ApiException as error:
            if error.status == 404:
                return -1
            raise
        operations = [
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded}
            for index, webhook in enumerate(found.webhooks or [])
            if webhook.client_config.ca_bundle != encoded
        ]
        if not operations:
            return 0
        # The test guards against a concurrent change of the list (another writer, a re-apply).
        version = found.metadata.resource_version if found.metadata else None
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
        try:
            api.patch_mutating_webhook_configuration(
                configuration, [test, *operations], _content_type="application/json-patch+json"
            )
        except ApiException as error:
            # Changed since read (the test failed: 422), e.g. by the other replica putting the
            # same CA in at start: read it again.
            if error.status not in (409, 422):
                raise
            continue
        return len(operations)
    raise RuntimeError(f"MutatingWebhookConfiguration {configuration} kept changing while the CA was put in")


async def inject_ca(configuration: str, ca_bundle: bytes) -> int:
    """Put the CA into every webhook of a MutatingWebhookConfiguration; how many changed (-1: no such
    configuration)."""
    return await _in_thread(_inject_ca_sync, configuration, ca_bundle)


# ---- events ---------------------------------------------------------------------------------

EVENT_COMPONENT = "eci-datacache-operator"
MAX_EVENT_MESSAGE = 1024  # what kubectl shows in full; longer ones are cut in the middle
EVENT_QUEUE_SIZE = 10_000


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    """A core/v1 Event about `obj` (a cluster-scoped object's go to `default`, as kubectl's do)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    if len(message) > MAX_EVENT_MESSAGE:
        half = (MAX_EVENT_MESSAGE - len(" ... ")) // 2
        message = f"{message[:half]} ... {message[-half:]}"
    involved = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "namespace": meta.get("namespace"),
    }
    return {
        "metadata": {"generateName": f"{meta.get('name') or 'object'}.", "namespace": namespace},
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "type": type_,
        "reason": reason,
        "message": message,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
    }


def _create_event_sync(body: dict[str, Any]) -> None:
    CoreV1Api(_api_client()).create_namespaced_event(body["metadata"]["namespace"], body)  # type: ignore[arg-type]


class EventRecorder:
    """Events go from a queue, sent by one task: whoever posts one never waits for the
    apiserver. An event that cannot be sent is logged (never its object's data) and dropped:
    events are for people, and the status says the same."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self._send = send or (lambda body: _in_thread(_create_event_sync, body))
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time
        try:
            self._queue.put_nowait(event_body(obj, type_, reason, message, now))
        except asyncio.QueueFull:
            _log.warning("event queue full: event %s dropped", reason)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events")

    async def _run(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self._send(body)
            except Exception as error:  # noqa: BLE001 - one lost event must not stop the rest
                _log.warning("event %s not posted: %s", body["reason"], type(error).__name__)
            finally:
                self._queue.task_done()

    async def close(self, seconds: float) -> None:
        """Send what is queued (for at most `seconds`), then stop."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), seconds)
            except TimeoutError:
                _log.warning("%d events not posted at shutdown", self._queue.qsize())
            self._task.cancel()
            self._task = None
