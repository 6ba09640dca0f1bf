"""The admin API under ``/_emulator/``: unsigned JSON, answered on loopback only.

* ``GET /_emulator/health``: ``{"ok": true, "endpoint": ...}``.
* ``GET /_emulator/state[?region=]``: the virtual clock, every region with every cache (all
  fields, tags, client tokens, data size, network, copy origin), recently removed caches,
  rules and faults.
* ``GET /_emulator/calls[?action=&region=]``: the call log, a list of ``{time, action,
  region, params, outcome, status, latency_ms, request_id, signature}``; ``params`` has
  secret option values masked and no signature or key fields; ``outcome`` is ``Success``,
  the error code, or ``ConnectionDropped``.
* ``GET /_emulator/counters``: ``{action: {outcome: count}}``.
* ``POST /_emulator/reset``: forget caches, tokens, calls, rules and run-time faults.
* ``GET|POST /_emulator/faults``: read or replace the faults (fields in ``faults.py``);
  answers the active faults.
* ``GET|POST|DELETE /_emulator/rules``: list, add or clear the outcome rules (fields in
  ``outcomes.py``); adding answers the rule with its ``id``.
  ``DELETE /_emulator/rules/{id}`` removes one.
* ``GET /_emulator/clock``; ``POST /_emulator/clock/advance`` with ``{"seconds": N}`` moves
  the virtual clock forward, so loading and expiry happen at once.
* ``POST /_emulator/caches/{id}/delete-out-of-band``: the cache vanishes at once, as if a
  person deleted it in the console.
* ``GET /_emulator/containergroups[?region=]``: every container group as DescribeContainerGroups
  shows it, plus its data cache bucket, hostPath volumes and the caches they got.

Bad input answers 400 ``{"error": "..."}``; an unknown rule or cache 404.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .faults import FaultSettings
from .state import format_second

if TYPE_CHECKING:
    from .server import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/_emulator"


def _reply(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


def _problem(message: str, status: int = 400) -> web.Response:
    return _reply({"error": message}, status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _loopback_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            is_loopback = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            return _problem("the admin API answers on loopback only", 403)
        try:
            return await handler(request)
        except ValueError as error:
            return _problem(str(error))

    return guarded


class AdminApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.state = emulator.state

    async def health(self, request: web.Request) -> web.Response:
        return _reply({"ok": True, "endpoint": self.emulator.endpoint})

    async def dump_state(self, request: web.Request) -> web.Response:
        self.state.settle()
        only_region = request.query.get("region")
        regions = {
            region: {
                "count": len(caches),
                "caches": [self.state.admin_view(cache) for cache in caches.values()],
            }
            for region, caches in sorted(self.state.regions.items())
            if only_region is None or region == only_region
        }
        return _reply(
            {
                "now": format_second(self.state.clock.now()),
                "clockOffsetSeconds": self.state.clock.offset,
                "timeScale": self.state.time_scale,
                "quota": self.emulator.config.quota,
                "regions": regions,
                "removed": list(self.state.removed),
                "rules": [rule.to_json() for rule in self.state.rules.list()],
                "faults": self.emulator.faults.settings.to_json(),
            }
        )

    async def calls(self, request: web.Request) -> web.Response:
        entries = self.emulator.calls.query(request.query.get("action"), request.query.get("region"))
        return _reply(entries)

    async def counters(self, request: web.Request) -> web.Response:
        return _reply(self.emulator.calls.counts())

    async def reset(self, request: web.Request) -> web.Response:
        self.emulator.reset()
        return _reply({"ok": True})

    async def get_faults(self, request: web.Request) -> web.Response:
        return _reply(self.emulator.faults.settings.to_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        self.emulator.faults.settings = FaultSettings.from_json(await _json_body(request))
        return _reply(self.emulator.faults.settings.to_json())

    async def list_rules(self, request: web.Request) -> web.Response:
        return _reply([rule.to_json() for rule in self.state.rules.list()])

    async def add_rule(self, request: web.Request) -> web.Response:
        rule = self.state.rules.add(await _json_body(request))
        return _reply(rule.to_json(), 201)

    async def clear_rules(self, request: web.Request) -> web.Response:
        self.state.rules.clear()
        return _reply([])

    async def remove_rule(self, request: web.Request) -> web.Response:
        if not self.state.rules.remove(request.match_info["rule_id"]):
            return _problem(f"no rule {request.match_info['rule_id']}", 404)
        return _reply([rule.to_json() for rule in self.state.rules.list()])

    async def clock(self, request: web.Request) -> web.Response:
        return self._clock_reply()

    async def advance_clock(self, request: web.Request) -> web.Response:
        seconds = (await _json_body(request)).get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError("'seconds' must be a non-negative number")
        self.state.advance(float(seconds))
        return self._clock_reply()

    def _clock_reply(self) -> web.Response:
        return _reply(
            {"now": format_second(self.state.clock.now()), "offsetSeconds": self.state.clock.offset}
        )

    async def container_groups(self, request: web.Request) -> web.Response:
        self.state.settle()
        region = request.query.get("region")
        service = self.emulator.service.containers
        return _reply(
            [
                service.admin_view(group)
                for region_id, groups in sorted(service.groups.items())
                if region in (None, region_id)
                for group in groups.values()
            ]
        )

    async def delete_out_of_band(self, request: web.Request) -> web.Response:
        self.state.settle()
        data_cache_id = request.match_info["data_cache_id"]
        cache = self.state.find_anywhere(data_cache_id)
        if cache is None:
            return _problem(f"no data cache {data_cache_id}", 404)
        self.state.remove(cache, "deleted out of band")
        return _reply({"deleted": data_cache_id, "region": cache.region_id})


def add_admin_routes(app: web.Application, emulator: Emulator) -> None:
    api = AdminApi(emulator)
    routes = [
        ("GET", "/health", api.health),
        ("GET", "/state", api.dump_state),
        ("GET", "/calls", api.calls),
        ("GET", "/counters", api.counters),
        ("POST", "/reset", api.reset),
        ("GET", "/faults", api.get_faults),
        ("POST", "/faults", api.set_faults),
        ("GET", "/rules", api.list_rules),
        ("POST", "/rules", api.add_rule),
        ("DELETE", "/rules", api.clear_rules),
        ("DELETE", "/rules/{rule_id}", api.remove_rule),
        ("GET", "/clock", api.clock),
        ("POST", "/clock/advance", api.advance_clock),
        ("POST", "/caches/{data_cache_id}/delete-out-of-band", api.delete_out_of_band),
        ("GET", "/containergroups", api.container_groups),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _loopback_only(handler))
