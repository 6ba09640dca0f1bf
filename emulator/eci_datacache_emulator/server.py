"""The HTTP side: the signed RPC endpoint at ``/``, the admin API, the hubs' revision endpoints
under ``/hub/`` (``hubs.py``), start and stop.

One asyncio event loop owns all state, so there are no locks: in-process users either share
the loop (``async with Emulator(...)``) or run it on a thread of its own (``in_thread()``)
and talk to it over HTTP, like any other client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from . import tls
from .accounts import STS_ACTIONS, STS_VERSION, AccountRegistry
from .admin import add_admin_routes
from .admin_client import EmulatorAdmin
from .config import EmulatorConfig
from .errors import ApiError, internal_error, missing_parameter
from .faults import NO_FAULT, FaultInjector, FaultSettings, RateLimiter
from .hubs import HubState, add_hub_routes, hub_endpoint_path
from .operations import DataCacheService, Limits
from .outcomes import RuleBook
from .signature import V1_PROTOCOL_PARAMETERS, Authenticator
from .state import CloudState, DataCache, IdFactory, VirtualClock, format_second
from .wire import Parameters, redact_parameters

log = logging.getLogger(__name__)

API_VERSION = "2018-08-08"
STATE_FILE_VERSION = 2  # version 1 (one account's caches) is still read, into the default account
ADMIN_PREFIX = "/_emulator"
SAVE_INTERVAL_SECONDS = 0.25
SHUTDOWN_TIMEOUT_SECONDS = 2.0
SUCCESS = "Success"
RPC_METHODS = frozenset({"POST", "GET"})
_JSON = "application/json"


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=_JSON, charset="utf-8", headers=headers)


def error_response(
    error: ApiError, request_id: str, region: str | None, product: str = "eci"
) -> web.Response:
    host = (
        f"{product}.{region}.aliyuncs.com"
        if region and region.replace("-", "").isalnum()
        else f"{product}.aliyuncs.com"
    )
    payload = {
        "RequestId": request_id,
        "HostId": host,
        "Code": error.code,
        "Message": error.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={error.code}&product={product.capitalize()}"
        f"&requestId={request_id}",
    }
    headers = {"x-acs-request-id": request_id}
    if error.retry_after_ms is not None:
        headers["x-acs-retry-after"] = str(error.retry_after_ms)
    return json_response(payload, error.status, headers)


class CallLog:
    """What clients asked and how it ended, without secrets; bounded."""

    def __init__(self, limit: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self.counters: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self.counters[entry["action"] or "-"][entry["outcome"]] += 1

    def query(
        self, action: str | None = None, region: str | None = None, account: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.entries
            if (action is None or entry["action"] == action)
            and (region is None or entry["region"] == region)
            and (account is None or entry.get("account") == account)
        ]

    def counts(self) -> dict[str, dict[str, int]]:
        return {action: dict(outcomes) for action, outcomes in sorted(self.counters.items())}

    def clear(self) -> None:
        self.entries.clear()
        self.counters.clear()


class Emulator:
    """A local ECI DataCache service. ``async with Emulator(config) as emu`` serves it."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.rules = RuleBook()
        self.clock = VirtualClock()
        self.ids = IdFactory(self.config.seed)
        self.accounts = AccountRegistry(self.config, self.clock.now)
        # Each account has its own caches, tokens and container groups; clock and ids are shared.
        self.states: dict[str, CloudState] = {}
        self.services: dict[str, DataCacheService] = {}
        for account_id in self.accounts.account_ids:
            state = CloudState(
                time_scale=self.config.time_scale,
                durations=self.config.durations,
                rules=self.rules,
                seed=self.config.seed,
                clock=self.clock,
                ids=self.ids,
            )
            self.states[account_id] = state
            self.services[account_id] = DataCacheService(state, Limits(quota=self.config.quota))
        # The default account's, as before there were several.
        self.state = self.states[self.config.account_id]
        self.service = self.services[self.config.account_id]
        self.authenticator = Authenticator(self.accounts.find, expiry_clock=self.clock.now)
        self.faults = FaultInjector(FaultSettings.from_config(self.config), self.config.seed)
        self.rate_limiter = RateLimiter(self.config.rate_limit)  # per account: ECI's flow control
        self.calls = CallLog(self.config.call_log_limit)
        # Hugging Face's and ModelScope's revision endpoints (their own call log: not ECI calls).
        self.hubs = HubState(self.clock.now)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._tls: tls.TlsFiles | None = None
        self._tls_temporary_dir: str | None = None
        self._saver: asyncio.Task[None] | None = None
        self._saved_revision = -1

    # ---- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not serving")
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port`` as the SDK's ``Config.endpoint`` wants it (no scheme)."""
        return f"{self._client_host()}:{self.port}"

    @property
    def tls_port(self) -> int:
        if self._tls_port is None:
            raise RuntimeError("the emulator is not serving HTTPS (EmulatorConfig.tls)")
        return self._tls_port

    @property
    def tls_endpoint(self) -> str:
        """``host:port`` of the HTTPS side: the same API (ECI, STS, admin) over TLS."""
        return f"{self._client_host()}:{self.tls_port}"

    @property
    def sts_endpoint(self) -> str:
        """What the credentials library's ``sts_endpoint`` wants: it always calls https."""
        return self.tls_endpoint

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the HTTPS side's certificate: trust this file."""
        if self._tls is None:
            raise RuntimeError("the emulator is not serving HTTPS (EmulatorConfig.tls)")
        return self._tls.ca_file

    @property
    def admin_url(self) -> str:
        return f"http://{self.endpoint}{ADMIN_PREFIX}"

    @property
    def admin(self) -> EmulatorAdmin:
        """A synchronous admin client; only for code not running on the emulator's own loop."""
        return EmulatorAdmin(self.admin_url)

    def hub_endpoint(self, hub: str) -> str:
        """What ``DATACACHE_HUGGINGFACE_ENDPOINT`` (hub ``huggingface``) or
        ``DATACACHE_MODELSCOPE_ENDPOINT`` (``modelscope``) should be to resolve revisions here."""
        return f"http://{self.endpoint}{hub_endpoint_path(hub)}"

    def _client_host(self) -> str:
        # A wildcard bind is reached through loopback; the admin API answers only there anyway.
        return "127.0.0.1" if self.config.host in ("", "0.0.0.0", "::") else self.config.host

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> Emulator:
        self._load_state_file()
        app = web.Application(middlewares=[_json_everywhere])
        add_admin_routes(app, self)
        add_hub_routes(app, self.hubs)
        app.router.add_route("*", "/", self._handle_api)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, handle_signals=False
        )
        await self._runner.setup()
        sock = self._bind(self.config.port)
        self._port = sock.getsockname()[1]
        # Keep-alive clients (the sync SDK pools connections) need room in the accept queue.
        await web.SockSite(self._runner, sock, backlog=1024).start()
        if self.config.tls:
            # A second port rather than TLS sniffing on the first: aiohttp serves one protocol
            # a socket, and plain-HTTP clients of the first port stay exactly as they were.
            context = self._prepare_tls()
            tls_sock = self._bind(self.config.tls_port)
            self._tls_port = tls_sock.getsockname()[1]
            await web.SockSite(self._runner, tls_sock, backlog=1024, ssl_context=context).start()
        if self.config.state_file:
            self._saver = asyncio.create_task(self._save_periodically())
        log.info("ECI DataCache emulator serving at %s (admin API at %s)", self.endpoint, self.admin_url)
        if self._tls is not None:
            log.info("HTTPS (ECI and STS) at %s, CA file %s", self.tls_endpoint, self._tls.ca_file)
        return self

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, port))
        return sock

    def _prepare_tls(self) -> ssl.SSLContext:
        if self.config.tls_dir:
            directory = Path(self.config.tls_dir)
        else:
            self._tls_temporary_dir = tempfile.mkdtemp(prefix="eci-emulator-tls-")
            directory = Path(self._tls_temporary_dir)
        self._tls = tls.prepare(directory, self.config.host)
        return self._tls.context

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        self.save_state_file()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = self._tls_port = None
        if self._tls_temporary_dir is not None:
            shutil.rmtree(self._tls_temporary_dir, ignore_errors=True)
            self._tls_temporary_dir = None
            self._tls = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self, start_timeout: float = 10.0) -> Iterator[Emulator]:
        """Serve on a background thread with its own event loop, for synchronous code."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failures: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # reported to the caller's thread below
                failures.append(error)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        thread = threading.Thread(target=serve, name="eci-datacache-emulator", daemon=True)
        thread.start()
        if not started.wait(start_timeout):
            raise RuntimeError(f"the emulator did not start within {start_timeout} s")
        if failures:
            raise failures[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(start_timeout + SHUTDOWN_TIMEOUT_SECONDS)

    def reset(self) -> None:
        """Forget caches, tokens, calls, rules, run-time faults, STS keys and key changes; back
        to the start-up settings."""
        for state in self.states.values():
            state.reset()
        for service in self.services.values():
            service.containers.reset()
        self.accounts.reset()
        self.rules.clear()
        self.calls.clear()
        self.rate_limiter.clear()
        self.authenticator.nonces.clear()
        self.faults.settings = FaultSettings.from_config(self.config)
        self.hubs.reset()

    # ---- every account -------------------------------------------------------------------

    def settle(self) -> None:
        for state in self.states.values():
            state.settle()

    def advance(self, seconds: float) -> None:
        """Move the shared virtual clock: every account's phases and expiries, and STS keys."""
        self.clock.advance(seconds)
        for state in self.states.values():
            state.touch()
            state.settle()

    def all_caches(self) -> Iterator[tuple[str, DataCache]]:
        for account_id, state in self.states.items():
            for cache in state.all_caches():
                yield account_id, cache

    def find_cache(self, data_cache_id: str) -> tuple[str, DataCache] | None:
        for account_id, state in self.states.items():
            cache = state.find_anywhere(data_cache_id)
            if cache is not None:
                return account_id, cache
        return None

    @property
    def revision(self) -> int:
        return sum(state.revision for state in self.states.values())

    # ---- state file ----------------------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        """Every account's caches and tokens, with the shared clock and id counter."""
        return {
            "version": STATE_FILE_VERSION,
            "clockOffset": self.clock.offset,
            "idsIssued": self.ids.issued,
            "accounts": {account_id: state.to_json() for account_id, state in self.states.items()},
        }

    def load_state_json(self, data: dict[str, Any]) -> None:
        if data.get("version") == 1:  # written before there were accounts: the default one's
            data = {**data, "version": STATE_FILE_VERSION, "accounts": {self.config.account_id: data}}
        if data.get("version") != STATE_FILE_VERSION:
            raise ValueError(f"unsupported state file version {data.get('version')!r}")
        for account_id, part in data["accounts"].items():
            state = self.states.get(account_id)
            if state is None:
                log.warning(
                    "the state file has caches of account %s, which is not configured: dropped", account_id
                )
                continue
            state.load_json(part)
        self.clock.offset = float(data["clockOffset"])
        self.ids.issued = max(self.ids.issued, int(data["idsIssued"]))
        self.settle()

    def _load_state_file(self) -> None:
        path = self.config.state_file
        if not path or not Path(path).exists():
            return
        self.load_state_json(json.loads(Path(path).read_text()))
        self._saved_revision = self.revision
        log.info("loaded %d data caches from %s", sum(1 for _ in self.all_caches()), path)

    def save_state_file(self) -> None:
        path = self.config.state_file
        if not path or self.revision == self._saved_revision:
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves half a file behind.
        with tempfile.NamedTemporaryFile(
            "w", dir=target.parent, prefix=f".{target.name}.", delete=False
        ) as file:
            json.dump(self.state_json(), file, indent=1)
        os.replace(file.name, target)
        self._saved_revision = self.revision

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL_SECONDS)
            try:
                self.save_state_file()
            except OSError:
                log.exception("could not save the state file %s", self.config.state_file)

    # ---- the API -------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = new_request_id()
        params = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        body = await request.read()
        if body and request.content_type == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        action = request.headers.get("x-acs-action") or params.get("Action")
        version = request.headers.get("x-acs-version") or params.get("Version")
        region = params.get("RegionId")
        business = {key: value for key, value in params.items() if key not in V1_PROTOCOL_PARAMETERS}
        # STS shares the endpoints: its version says a request is for it (the cloud's STS has
        # a host of its own; the credentials library lets you name it, sts_endpoint).
        product = "sts" if version == STS_VERSION else "eci"
        plan = NO_FAULT
        scheme = account = None
        try:
            if request.method not in RPC_METHODS:
                raise ApiError(403, "UnsupportedHTTPMethod", "This http method is not supported.")
            if product == "sts":
                if not action:
                    raise missing_parameter("Action")
                if action not in STS_ACTIONS:
                    raise ApiError(
                        404,
                        "InvalidAction.NotFound",
                        "Specified api is not found, please check your url and method.",
                    )
            else:
                self._check_action(action, version)
                # Faults are ECI's; STS answers without them.
                plan = self.faults.plan(action)
            assert action is not None
            if plan.latency_seconds:
                await asyncio.sleep(plan.latency_seconds)
            if plan.drop_before:
                return self._drop(request, action, region, business, started, request_id)
            headers: dict[str, list[str]] = {}
            for name, value in request.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            caller = self.authenticator.verify(
                method=request.method,
                path=request.rel_url.raw_path,
                params=params,
                headers=headers,
                body=body,
            )
            scheme, account = caller.scheme, caller.account_id
            if product == "sts":
                result = self.accounts.call(action, Parameters(business), caller)
            else:
                # ECI's flow control counts an account's calls, whichever of its keys signed them.
                self.rate_limiter.check(caller.account_id)
                if plan.error is not None:
                    raise plan.error
                result = self.services[caller.account_id].call(action, Parameters(business))
            # Date from the virtual clock, as a real server's clock: clients judge expiry by it.
            response = json_response(
                {"RequestId": request_id, **result},
                headers={
                    "x-acs-request-id": request_id,
                    "Date": formatdate(self.state.clock.now(), usegmt=True),
                },
            )
            outcome, status = SUCCESS, 200
        except ApiError as error:
            response = error_response(error, request_id, region, product)
            outcome, status = error.code, error.status
        except Exception:
            # Parameters can hold secrets: log the action only.
            log.exception("unexpected failure in %s (request %s)", action, request_id)
            error = internal_error()
            response = error_response(error, request_id, region, product)
            outcome, status = error.code, error.status
        if plan.drop_after:
            return self._drop(
                request,
                action,
                region,
                business,
                started,
                request_id,
                applied_outcome=outcome,
                account=account,
            )
        self._record(action, region, business, outcome, status, started, request_id, scheme, account)
        return response

    def _check_action(self, action: str | None, version: str | None) -> None:
        if not action:
            raise missing_parameter("Action")
        if not self.service.handles(action):
            raise ApiError(
                404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
            )
        if version != API_VERSION:
            raise ApiError(
                400, "InvalidVersion", f"Specified parameter Version is not valid; use {API_VERSION}."
            )

    def _drop(
        self,
        request: web.Request,
        action: str | None,
        region: str | None,
        business: dict[str, str],
        started: float,
        request_id: str,
        applied_outcome: str | None = None,
        account: str | None = None,
    ) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        outcome = "ConnectionDropped" if applied_outcome is None else f"ConnectionDropped({applied_outcome})"
        self._record(action, region, business, outcome, 0, started, request_id, None, account)
        return web.Response()  # never written: the connection is gone

    def _record(
        self,
        action: str | None,
        region: str | None,
        business: dict[str, str],
        outcome: str,
        status: int,
        started: float,
        request_id: str,
        scheme: str | None,
        account: str | None = None,
    ) -> None:
        self.calls.record(
            {
                "time": format_second(time.time()),
                "action": action,
                "region": region,
                "params": redact_parameters(business),
                "outcome": outcome,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "request_id": request_id,
                "signature": scheme,
                "account": account,
            }
        )


@web.middleware
async def _json_everywhere(request: web.Request, handler) -> web.StreamResponse:
    """Unknown paths, wrong methods and crashes still answer in the JSON error shape."""
    try:
        return await handler(request)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        code = "NotFound" if http_error.status == 404 else http_error.reason.replace(" ", "")
        message = f"{request.method} {request.path}: {http_error.reason}."
        return error_response(ApiError(http_error.status, code, message), new_request_id(), None)
    except Exception:
        log.exception("unexpected failure serving %s %s", request.method, request.path)
        return error_response(internal_error(), new_request_id(), None)
