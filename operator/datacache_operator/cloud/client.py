"""The operator's only way to ECI: the official SDK's calls behind one facade.

What this adds to the SDK:

- one SDK client per region (endpoint from the settings' template, or the one
  ``ECI_ENDPOINT`` for all regions), all sharing ONE credential client built from the
  SDK's default chain, which refreshes STS/RRSA/RAM-role credentials by itself;
- a token bucket in front of every call, one per region (or one for all regions,
  ``one_bucket_for_all_regions``: an EciAccount's client, as ECI counts an account's calls);
  the limiter runs on an event loop of its own (``callthread.py``), so a busy operator loop
  does not hold slots;
- the SDK's blocking calls, in a pool of threads: they share one HTTP session per endpoint
  (kept-alive connections, one TLS context). Its ``*_async`` calls open a new session, TCP
  connection and TLS handshake per call and load certifi's CA bundle into a new SSL context
  each time (46 ms of CPU per call, ``make bench-sdk``): over HTTPS that caps a core at
  about 20 ECI calls a second, a fifth of the default rate limit;
- reads coalesced into DescribeDataCaches calls of up to 20 ids (``describe``);
- every failure turned into an :class:`EciError` (retryable or terminal), free of
  secrets; no retries here: callers (kopf handlers) own the backoff, see
  :meth:`EciError.retry_delay`;
- hooks for metrics (no Prometheus dependency here).

Import-time gotcha: ``alibabacloud_credentials`` reads its environment variables when it
is first imported. This module therefore imports it (and the SDK client, which imports
it) only when an :class:`EciClient` is built, so importing ``datacache_operator.cloud``
early (CRD generation, reconcile code, tests) does not freeze the credential settings.

Proxy gotcha: the SDK sends every call through ``HTTP_PROXY``/``http_proxy`` (or the
HTTPS variants) and ignores ``NO_PROXY``, so with a proxy in the environment the calls to
a loopback emulator go to the proxy and fail. We refuse to start in that case
(:class:`CloudConfigurationError`) instead of clearing the variables for the process:
the Kubernetes client in the same process honours ``NO_PROXY`` and may need the proxy,
and silently changing its network path would be worse than one clear error at startup.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from datacache_operator import __version__
from datacache_operator.cloud.batcher import MAX_IDS_PER_DESCRIBE, DescribeBatcher
from datacache_operator.cloud.callthread import CallThread
from datacache_operator.cloud.errors import (
    CODE_INVALID_RESPONSE,
    CODE_REGION_NOT_ALLOWED,
    EciError,
    ErrorCategory,
    classify,
)
from datacache_operator.cloud.models import (
    CopyRequest,
    CreateRequest,
    DataSource,
    NetConfig,
    ObservedCache,
    UpdateRequest,
    sensitive_values,
)
from datacache_operator.cloud.ratelimit import CURRENT_FLOW, CallPriority, Clock, RegionRateLimiter, Sleep
from datacache_operator.settings import OperatorSettings, is_loopback_endpoint

if TYPE_CHECKING:
    from alibabacloud_credentials.client import Client as CredentialClient

log = logging.getLogger(__name__)
# The SDK's blocking calls go through urllib3, whose DEBUG line for each request is the full
# URL: for ECI's RPC style that is every parameter, data source keys and signature included.
# Nothing below INFO from it, whatever the operator's log level.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

R = TypeVar("R")

OUTCOME_OK = "OK"
MAX_CLIENT_TOKEN_LENGTH = 64
# A runaway NextToken loop must end: 500 pages of 20 are 10,000 caches in one region.
MAX_PAGES = 500
# Threads for the SDK's blocking calls. The rate limiter bounds the calls in flight (about
# rate x latency: 5 at 100 a second and 50 ms); 32 stays under the 40 connections the SDK's
# session keeps alive per endpoint, so none is dropped and opened again.
SDK_THREADS = 32

ACTION_CREATE = "CreateDataCache"
ACTION_DESCRIBE = "DescribeDataCaches"
ACTION_UPDATE = "UpdateDataCache"
ACTION_DELETE = "DeleteDataCache"
ACTION_COPY = "CopyDataCache"


class CloudClient(Protocol):
    """What the controllers call: :class:`EciClient`, or an in-memory cloud in unit tests."""

    async def describe(self, region: str, data_cache_id: str) -> ObservedCache | None: ...
    async def find_by_tags(self, region: str, tags: Mapping[str, str]) -> list[ObservedCache]: ...
    async def find_at(self, region: str, bucket: str, path: str) -> list[ObservedCache]: ...
    async def create(self, region: str, request: CreateRequest, client_token: str) -> str: ...
    async def copy(
        self, source_region: str, source_id: str, request: CopyRequest, client_token: str
    ) -> str: ...
    async def update(self, region: str, data_cache_id: str, request: UpdateRequest) -> None: ...
    async def delete(self, region: str, data_cache_id: str) -> bool: ...
    def server_now(self, region: str) -> datetime | None: ...


class CloudHooks(Protocol):
    """Metrics callbacks. They run inline on the event loop: keep them cheap. A hook that
    raises is logged and otherwise ignored."""

    def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
        """Every ECI call: ``outcome_code`` is ``"OK"`` or the EciError code; ``seconds``
        excludes the rate-limit wait."""

    def on_rate_limit_wait(self, region: str, seconds: float) -> None:
        """A call to ``region`` waited ``seconds`` (> 0) for its token bucket (the region's,
        or the client's one for all regions)."""


class NoHooks:
    def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
        pass

    def on_rate_limit_wait(self, region: str, seconds: float) -> None:
        pass


class CloudConfigurationError(ValueError):
    """The client cannot work with this configuration (raised at construction)."""


SdkClientFactory = Callable[[str, str, str], Any]
"""``(region, endpoint, protocol) -> SDK client``; the default builds the real one."""


def proxy_variables_for(protocol: str) -> tuple[str, ...]:
    """The environment variables the SDK reads for a proxy (darabonba/core.py)."""
    return ("HTTP_PROXY", "http_proxy") if protocol == "http" else ("HTTPS_PROXY", "https_proxy")


def check_no_proxy_for_loopback(
    endpoint: str, protocol: str, environ: Mapping[str, str] = os.environ
) -> None:
    if not is_loopback_endpoint(endpoint):
        return
    set_vars = [name for name in proxy_variables_for(protocol) if environ.get(name)]
    if set_vars:
        raise CloudConfigurationError(
            f"ECI endpoint {endpoint} is a loopback address but {' and '.join(set_vars)} "
            f"{'is' if len(set_vars) == 1 else 'are'} set: the Alibaba Cloud SDK ignores NO_PROXY and would "
            f"send these calls to the proxy. Unset {'/'.join(proxy_variables_for(protocol))} "
            "for the operator process."
        )


def quiet_credentials_log() -> None:
    """The credentials library logs a failed refresh with the full STS request (the AccessKeyId,
    the signature) through a stderr handler of its own, set up on import. Its failures reach
    us as exceptions, which become conditions without those: its own log stays silent."""
    library_log = logging.getLogger("credentials")
    library_log.handlers.clear()
    library_log.propagate = False
    library_log.setLevel(logging.CRITICAL + 1)


def _default_credential_client() -> CredentialClient:
    # The default chain: env AK (+STS token), RRSA OIDC, CLI profile, credentials file,
    # ECS RAM role, credentials URI. Built once and shared by every region's client.
    from alibabacloud_credentials.client import Client as CredentialClient

    quiet_credentials_log()
    return CredentialClient()


class EciClient:
    """Async ECI DataCache client for one asyncio loop (the operator's)."""

    def __init__(
        self,
        settings: OperatorSettings | None = None,
        *,
        credential: CredentialClient | None = None,
        hooks: CloudHooks | None = None,
        sdk_client_factory: SdkClientFactory | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
        guard: Callable[[], None] = lambda: None,
        one_bucket_for_all_regions: bool = False,
        credential_errors_retryable: bool = False,
    ) -> None:
        """``credential``: an ``alibabacloud_credentials.client.Client`` (tests inject a
        static one); default: the SDK's default chain. ``sdk_client_factory`` replaces the
        real SDK client (unit tests). ``guard`` runs right before each call is sent (leader
        election: it exits unless this process holds a fresh Lease).
        ``one_bucket_for_all_regions``: the settings' rate limit holds for all regions
        together (an account's limit) instead of for each region.
        ``credential_errors_retryable``: a refused key, token or signature is retried with
        backoff instead of stalling the object (an EciAccount's credentials, which an
        administrator fixes outside the objects that use them)."""
        self.settings = settings or OperatorSettings()
        self._credential_errors_retryable = credential_errors_retryable
        self._guard = guard
        self._hooks: CloudHooks = hooks or NoHooks()
        self._environ = os.environ if environ is None else environ
        self._protocol = self.settings.effective_protocol
        if self.settings.endpoint:
            # Fail at startup, not on the first reconcile.
            check_no_proxy_for_loopback(self.settings.endpoint_for(""), self._protocol, self._environ)
        self._sdk_client_factory = sdk_client_factory
        self._credential = credential
        if sdk_client_factory is None and credential is None:
            self._credential = _default_credential_client()
        if sdk_client_factory is None:
            # Its modules take 0.4 s of CPU to import: here, not on the operator's loop in
            # the first pass of a burst (py-spy saw the import hold the loop there).
            importlib.import_module("alibabacloud_eci20180808.client")
        self._sdk_clients: dict[str, Any] = {}
        self._regions: set[str] = set()  # every region admitted so far (see `_admit`)
        self._server_times: dict[str, tuple[datetime, float]] = {}
        self._calls = CallThread()  # the limiter and the calls' waits: see callthread.py
        self._sessions_opened: dict[str, asyncio.Event] = {}  # region -> its first call is over
        self._sdk_threads = ThreadPoolExecutor(max_workers=SDK_THREADS, thread_name_prefix="eci-sdk")
        self._limiter = RegionRateLimiter(
            self.settings.rate_limit,
            self.settings.effective_rate_burst,
            clock=clock,
            sleep=sleep,
            on_wait=self._report_wait,
            one_bucket_for_all_regions=one_bucket_for_all_regions,
        )
        self._batcher: DescribeBatcher[tuple[str, str | None], ObservedCache] = DescribeBatcher(
            self._describe_chunk, window=self.settings.describe_batch_window
        )

    async def __aenter__(self) -> EciClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._batcher.aclose()
        self._calls.close()
        self._sdk_threads.shutdown(wait=False, cancel_futures=True)

    # ---- reads -------------------------------------------------------------------------

    async def describe(
        self, region: str, data_cache_id: str, *, bucket: str | None = None
    ) -> ObservedCache | None:
        """The cache, or None when ECI does not list it (deleted, expired, never existed).

        Concurrent calls for one region (and bucket) are sent together, 20 ids a call,
        unless batching is off. ``bucket`` narrows the call to that bucket (whether ECI
        lists other buckets without one is undocumented); None sends no Bucket.
        """
        if not data_cache_id:
            raise ValueError("data_cache_id is required")
        self._admit(region)
        if self.settings.batching:
            return await self._batcher.get((region, bucket), data_cache_id)
        found = await self._describe_chunk((region, bucket), [data_cache_id])
        return found.get(data_cache_id)

    async def find_by_tags(
        self,
        region: str,
        tags: Mapping[str, str],
        *,
        bucket: str | None = None,
        path: str | None = None,
    ) -> list[ObservedCache]:
        """Every cache carrying all ``tags`` (all pages). Used to recover a lost id before
        any create, so the result is also checked here: a cache whose tags do not match
        is never returned, even if the server ignored the filter."""
        if not tags:
            raise ValueError("find_by_tags needs at least one tag (it would list every cache)")
        caches = await self._find(region, tags, bucket, path)
        return [c for c in caches if all(c.tags.get(k) == v for k, v in tags.items())]

    async def find_at(self, region: str, bucket: str, path: str) -> list[ObservedCache]:
        """Every cache at a bucket and path (all pages), checked here as `find_by_tags` is."""
        caches = await self._find(region, {}, bucket, path)
        return [c for c in caches if (c.bucket, c.path) == (bucket, path)]

    async def _find(
        self, region: str, tags: Mapping[str, str], bucket: str | None, path: str | None
    ) -> list[ObservedCache]:
        self._admit(region)
        from alibabacloud_eci20180808 import models as eci

        def request(next_token: str | None) -> Any:
            return eci.DescribeDataCachesRequest(
                region_id=region,
                bucket=bucket,
                path=path,
                tag=[eci.DescribeDataCachesRequestTag(key=k, value=v) for k, v in tags.items()] or None,
                limit=MAX_IDS_PER_DESCRIBE,
                next_token=next_token,
            )

        return await self._describe_pages(region, request)

    async def _describe_chunk(self, key: tuple[str, str | None], ids: list[str]) -> dict[str, ObservedCache]:
        """One DescribeDataCaches round (following NextToken) for at most 20 ids."""
        region, bucket = key
        from alibabacloud_eci20180808 import models as eci

        def request(next_token: str | None) -> Any:
            return eci.DescribeDataCachesRequest(
                region_id=region,
                bucket=bucket,
                data_cache_id=list(ids),
                limit=MAX_IDS_PER_DESCRIBE,
                next_token=next_token,
            )

        wanted = set(ids)
        return {
            c.data_cache_id: c
            for c in await self._describe_pages(region, request)
            if c.data_cache_id in wanted
        }

    async def _describe_pages(self, region: str, request: Callable[[str | None], Any]) -> list[ObservedCache]:
        caches: list[ObservedCache] = []
        seen_tokens: set[str] = set()
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            sdk_request = request(next_token)

            def describe_page(sdk: Any, page_request: Any = sdk_request) -> Any:
                return sdk.describe_data_caches(page_request)

            response = await self._call(ACTION_DESCRIBE, region, describe_page)
            body = response.body
            for item in body.data_caches or []:
                observed = ObservedCache.from_api(item.to_map() if hasattr(item, "to_map") else item, region)
                if observed.data_cache_id:
                    caches.append(observed)
            next_token = body.next_token or None
            if next_token is None or next_token in seen_tokens:
                break
            seen_tokens.add(next_token)
        else:
            log.warning("DescribeDataCaches in %s: stopped after %d pages", region, MAX_PAGES)
        return caches

    # ---- writes ------------------------------------------------------------------------

    async def create(self, region: str, request: CreateRequest, client_token: str) -> str:
        """Start building a cache; returns its id. The same ``client_token`` with the same
        request returns the same id (ECI idempotency), so a retried create never makes a
        second cache."""
        _check_client_token(client_token)
        self._admit(region)
        from alibabacloud_eci20180808 import models as eci

        sdk_request = eci.CreateDataCacheRequest(
            region_id=region,
            client_token=client_token,
            path=request.path,
            **_cache_fields(eci, "CreateDataCacheRequest", request),
        )
        response = await self._call(
            ACTION_CREATE,
            region,
            lambda sdk: sdk.create_data_cache(sdk_request),
            secrets=_secrets_of(request.data_source),
        )
        return _returned_id(response, ACTION_CREATE, region)

    async def update(
        self, region: str, data_cache_id: str, request: UpdateRequest, *, client_token: str | None = None
    ) -> None:
        """Send the fields of ``request`` that are set (nothing at all if none is). ECI
        refuses updates while the cache is busy: ``EciError`` ``IncorrectStatus``, retryable."""
        if request.is_empty:
            return
        self._admit(region)
        if client_token is not None:
            _check_client_token(client_token)
        from alibabacloud_eci20180808 import models as eci

        sdk_request = eci.UpdateDataCacheRequest(
            region_id=region,
            data_cache_id=data_cache_id,
            client_token=client_token,
            **_cache_fields(eci, "UpdateDataCacheRequest", request),
        )
        await self._call(
            ACTION_UPDATE,
            region,
            lambda sdk: sdk.update_data_cache(sdk_request),
            secrets=_secrets_of(request.data_source),
        )

    async def delete(self, region: str, data_cache_id: str, *, client_token: str | None = None) -> bool:
        """Delete a cache. True: ECI accepted the delete (the cache may stay listed as
        ``Deleting`` for a while: poll :meth:`describe` until None). False: it was already
        gone, which is success too."""
        self._admit(region)
        if client_token is not None:
            _check_client_token(client_token)
        from alibabacloud_eci20180808 import models as eci

        sdk_request = eci.DeleteDataCacheRequest(
            region_id=region, data_cache_id=data_cache_id, client_token=client_token
        )
        try:
            await self._call(ACTION_DELETE, region, lambda sdk: sdk.delete_data_cache(sdk_request))
        except EciError as error:
            if error.is_not_found:
                return False
            if error.http_status == 404 and error.category not in (
                ErrorCategory.CREDENTIALS,
                ErrorCategory.PERMISSION,
                ErrorCategory.THROTTLING,
            ):
                # An unknown 404 code: believe it only if a read agrees the cache is gone.
                found = await self._describe_chunk((region, None), [data_cache_id])
                if data_cache_id not in found:
                    return False
            raise
        return True

    async def copy(self, source_region: str, source_id: str, request: CopyRequest, client_token: str) -> str:
        """Start copying a cache to ``request.destination_region``; returns the new cache's
        id there (poll it with ``describe(request.destination_region, id)``)."""
        _check_client_token(client_token)
        self._admit(source_region, request.destination_region)
        from alibabacloud_eci20180808 import models as eci

        sdk_request = eci.CopyDataCacheRequest(
            region_id=source_region,
            data_cache_id=source_id,
            destination_region_id=request.destination_region,
            client_token=client_token,
            bucket=request.bucket,
            path=request.path,
            name=request.name,
            retention_days=request.retention_days,
            resource_group_id=request.resource_group_id,
            tag=_sdk_tags(eci.CopyDataCacheRequestTag, request.tags),
        )
        response = await self._call(ACTION_COPY, source_region, lambda sdk: sdk.copy_data_cache(sdk_request))
        return _returned_id(response, ACTION_COPY, source_region)

    # ---- plumbing ----------------------------------------------------------------------

    def _admit(self, *regions: str) -> None:
        """Refuse a region that is not allowed, or one more than `max_regions`: each region
        keeps a client, a rate limiter and metric series for the process's life."""
        for region in regions:
            if region in self._regions:
                continue
            allowed = self.settings.regions
            if (allowed and region not in allowed) or len(self._regions) >= self.settings.max_regions:
                why = (
                    f"not one of DATACACHE_REGIONS ({', '.join(allowed)})"
                    if allowed and region not in allowed
                    else f"one more than the {self.settings.max_regions} regions in use (DATACACHE_MAX_REGIONS)"
                )
                raise EciError(
                    CODE_REGION_NOT_ALLOWED,
                    f"region {region} is {why}",
                    retryable=False,
                    category=ErrorCategory.CONFIGURATION,
                    region=region,
                )
            self._regions.add(region)

    def sdk_client(self, region: str) -> Any:
        """The SDK client of ``region`` (built on first use, then reused)."""
        client = self._sdk_clients.get(region)
        if client is None:
            endpoint = self.settings.endpoint_for(region)
            check_no_proxy_for_loopback(endpoint, self._protocol, self._environ)
            factory = self._sdk_client_factory or self._build_sdk_client
            client = self._sdk_clients[region] = factory(region, endpoint, self._protocol)
        return client

    def _build_sdk_client(self, region: str, endpoint: str, protocol: str) -> Any:
        from alibabacloud_eci20180808.client import Client as SdkClient
        from alibabacloud_tea_openapi.models import Config

        return SdkClient(
            Config(
                credential=self._credential,
                endpoint=endpoint,  # host[:port]: used verbatim as Host header and URL authority
                protocol=protocol,  # every operation hard-codes HTTPS unless this is set
                region_id=region,
                connect_timeout=int(self.settings.connect_timeout * 1000),  # milliseconds
                read_timeout=int(self.settings.read_timeout * 1000),
                user_agent=f"eci-datacache-operator/{__version__}",
            )
        )

    async def _call(
        self,
        action: str,
        region: str,
        invoke: Callable[[Any], R],
        *,
        secrets: Iterable[str] = (),
    ) -> R:
        sdk = self.sdk_client(region)
        call = self._limited_call(action, region, sdk, invoke, secrets, CURRENT_FLOW.get())
        result = await self._calls.run(self._first_call_alone(region, call))
        self._note_server_time(region, result)
        return result

    async def _first_call_alone(self, region: str, call: Coroutine[Any, Any, R]) -> R:
        """In the call thread: the region's first call alone, then any number at once.

        The SDK opens an endpoint's HTTP session on its first call, unlocked: the first calls
        of a burst each built a session of their own, and with it an SSL context loading the
        system's CA store (20 ms of CPU apiece, under the interpreter's lock), to keep one.
        64 first creates at once against the emulator built 14-20 sessions in 460-600 ms of
        CPU; with the first call alone, one session in 80-90 ms."""
        opened = self._sessions_opened.get(region)
        if opened is None:
            opened = self._sessions_opened[region] = asyncio.Event()
            try:
                return await call
            finally:
                opened.set()  # failed or not, the session exists once the SDK has tried
        try:
            await opened.wait()
        except BaseException:
            call.close()  # cancelled before it started: nothing was sent
            raise
        return await call

    async def _limited_call(
        self,
        action: str,
        region: str,
        sdk: Any,
        invoke: Callable[[Any], R],
        secrets: Iterable[str],
        flow: str,
    ) -> R:
        """In the call thread: wait for a token (the region's, or the shared bucket's), then send."""
        priority = CallPriority.POLL if action == ACTION_DESCRIBE else CallPriority.CHANGE
        async with self._limiter.slot(region, priority, flow) as granted:
            self._guard()  # after the wait: a leadership lost meanwhile must not send
            log.debug(f"ECI call {action} in {region}")
            started = time.monotonic()

            def send() -> R:
                try:
                    return invoke(sdk)
                finally:
                    # Noted here, not when this loop next runs: the slot's second starts at
                    # the answer, and every millisecond of hold is throughput lost to a backlog.
                    granted.answered(self._limiter.now())

            sending = asyncio.get_running_loop().run_in_executor(self._sdk_threads, send)
            try:
                result = await asyncio.shield(sending)
            except asyncio.CancelledError:
                # A call sent cannot be recalled: its slot stays taken until it is answered
                # (the SDK's read timeout bounds that), so the bound holds as ECI receives.
                await asyncio.wait({sending})
                if not sending.cancelled():
                    failure = sending.exception()
                    outcome = (
                        OUTCOME_OK
                        if failure is None
                        else classify(failure, action=action, region=region, secrets=secrets).code
                    )
                    self._report_call(action, region, outcome, time.monotonic() - started)
                raise
            except Exception as exc:
                error = classify(exc, action=action, region=region, secrets=secrets)
                if self._credential_errors_retryable and error.category == ErrorCategory.CREDENTIALS:
                    error.retryable = True
                self._report_call(action, region, error.code, time.monotonic() - started)
                # `from None`: the SDK exception (string-to-sign, signed request) must not be
                # printed as the cause in a traceback.
                raise error from None
        self._report_call(action, region, OUTCOME_OK, time.monotonic() - started)
        return result

    def _note_server_time(self, region: str, result: Any) -> None:
        headers = getattr(result, "headers", None)
        date = headers.get("date") if isinstance(headers, dict) else None
        if date:
            try:
                self._server_times[region] = (parsedate_to_datetime(date), time.monotonic())
            except (TypeError, ValueError):
                pass

    def queued_seconds(self) -> float:
        """How long the calls already waiting for the rate limiter take to go (the busiest
        bucket). Read from the operator's loop while the limiter runs on the call thread: an
        estimate, which is all its one reader (deferring polls) needs."""
        return self._limiter.queued_seconds()

    def server_now(self, region: str) -> datetime | None:
        """The region's clock as its last answer's Date header told, moved on since.

        Expiry is the cloud's decision, so it is judged by the cloud's clock rather than
        this machine's (which may be skewed, and an emulator's clock can be advanced)."""
        noted = self._server_times.get(region)
        if noted is None:
            return None
        server_time, at = noted
        return server_time + timedelta(seconds=time.monotonic() - at)

    def _report_call(self, action: str, region: str, outcome: str, seconds: float) -> None:
        try:
            self._hooks.on_call(action, region, outcome, seconds)
        except Exception:
            log.exception("metrics hook on_call failed")

    def _report_wait(self, region: str, seconds: float) -> None:
        try:
            self._hooks.on_rate_limit_wait(region, seconds)
        except Exception:
            log.exception("metrics hook on_rate_limit_wait failed")


# ---- request building ------------------------------------------------------------------


def _check_client_token(token: str) -> None:
    if not token or len(token) > MAX_CLIENT_TOKEN_LENGTH or not token.isascii():
        raise ValueError(f"a ClientToken is 1..{MAX_CLIENT_TOKEN_LENGTH} ASCII characters")


def _secrets_of(data_source: DataSource | None) -> list[str]:
    return sensitive_values(data_source.options if data_source else None)


def _cache_fields(eci: Any, request_model: str, request: CreateRequest | UpdateRequest) -> dict[str, Any]:
    """The SDK arguments CreateDataCache and UpdateDataCache share (each request has its own
    nested models, named after it: `CreateDataCacheRequestTag`...)."""
    net = request.net_config or NetConfig()
    return dict(
        bucket=request.bucket,
        name=request.name,
        size=request.size,
        retention_days=request.retention_days,
        resource_group_id=request.resource_group_id,
        data_source=_sdk_data_source(getattr(eci, f"{request_model}DataSource"), request.data_source),
        security_group_id=net.security_group_id,
        v_switch_id=net.v_switch_id,
        eip_instance_id=net.eip_instance_id,
        eip_create_param=_sdk_eip(getattr(eci, f"{request_model}EipCreateParam"), net),
        tag=_sdk_tags(getattr(eci, f"{request_model}Tag"), request.tags),
    )


def _sdk_data_source(model: type, data_source: DataSource | None) -> Any:
    if data_source is None:
        return None
    # Options go out flattened (DataSource.Options.<key>=<value>) by the SDK.
    return model(type=data_source.type, options=dict(data_source.options) or None)


def _sdk_eip(model: type, net: NetConfig) -> Any:
    eip = net.eip_create_param
    if eip is None:
        return None
    return model(
        bandwidth=eip.bandwidth,
        common_bandwidth_package=eip.common_bandwidth_package,
        internet_charge_type=eip.internet_charge_type,
        public_ip_address_pool_id=eip.public_ip_address_pool_id,
        isp=eip.isp,
    )


def _sdk_tags(model: type, tags: Mapping[str, str] | None) -> list[Any] | None:
    if not tags:
        return None  # no Tag.N at all: "unchanged" for an update
    return [model(key=k, value=v) for k, v in tags.items()]


def _returned_id(response: Any, action: str, region: str) -> str:
    data_cache_id = getattr(getattr(response, "body", None), "data_cache_id", None)
    if not data_cache_id:
        raise EciError(
            CODE_INVALID_RESPONSE,
            f"{action} succeeded but returned no DataCacheId",
            request_id=getattr(getattr(response, "body", None), "request_id", None),
            retryable=True,
            category=ErrorCategory.SERVER,
            action=action,
            region=region,
        )
    return str(data_cache_id)
