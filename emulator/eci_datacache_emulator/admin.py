"""The admin API under ``/_emulator/``: unsigned JSON, answered on loopback only.

* ``GET /_emulator/health``: ``{"ok": true, "endpoint": ...}``.
* ``GET /_emulator/state[?region=&account=]``: the virtual clock, every region with every
  cache of every account (all fields, ``AccountId``, tags, client tokens, data size, network,
  copy origin), recently removed caches, rules and faults.
* ``GET /_emulator/calls[?action=&region=&account=]``: the call log, a list of ``{time,
  action, region, params, outcome, status, latency_ms, request_id, signature, account}``;
  ``time`` is when the emulator answered (UTC, whole seconds: ``EmulatorAdmin.calls_per_second``
  counts each account's calls by it);
  ``params`` has secret option values masked and no signature or key fields; ``account`` is
  the caller's account (an STS key's: its role's), unknown before the signature was checked;
  ``outcome`` is ``Success``, the error code, or ``ConnectionDropped``.
* ``GET /_emulator/counters``: ``{action: {outcome: count}}``.
* ``POST /_emulator/reset``: forget caches, tokens, calls, rules and run-time faults.
* ``GET|POST /_emulator/faults``: read or replace the faults (fields in ``faults.py``);
  answers the active faults.
* ``GET|POST|DELETE /_emulator/rules``: list, add or clear the outcome rules (fields in
  ``outcomes.py``); adding answers the rule with its ``id``.
  ``DELETE /_emulator/rules/{id}`` removes one.
* ``GET /_emulator/clock``; ``POST /_emulator/clock/advance`` with ``{"seconds": N}`` moves
  the virtual clock forward, so loading and expiry happen at once.
* ``GET|POST /_emulator/durations``: each phase's seconds before the time scale (fields of
  ``CloudDurations``) and the time scale; posting some sets them for phases begun from then on.
* ``POST /_emulator/caches/{id}/delete-out-of-band``: the cache vanishes at once, as if a
  person deleted it in the console.
* ``GET /_emulator/containergroups[?region=&account=]``: every container group as
  DescribeContainerGroups shows it, plus ``AccountId``, its data cache bucket, hostPath
  volumes and the caches they got.
* ``GET /_emulator/accounts``: every account with its AccessKey ids (``Status`` Active or
  Inactive, ``Type`` AccessKey or STS; STS keys with role, session, caller and
  ``Expiration``) and roles (ARN, role id, max session, trusted accounts). Never a secret.
* ``POST /_emulator/accounts/{account}/keys`` with ``{"access_key_id", "access_key_secret"}``:
  a new key pair for the account (rotation); answers the id only.
* ``POST /_emulator/keys/{id}/disable`` | ``/enable``: calls with a disabled key answer 400
  ``InvalidAccessKeyId.Inactive``; ``DELETE /_emulator/keys/{id}`` revokes it (permanent or
  STS): 404 ``InvalidAccessKeyId.NotFound`` from then on.
* Hubs (the revision endpoints under ``/hub/huggingface`` and ``/hub/modelscope``, ``hubs.py``):
  ``GET /_emulator/hubs``: default commits on or off, outages, every repository set (refs, access,
  never a token). ``POST /_emulator/hubs/commits`` with ``{"hub", "kind"?, "repoId",
  "revision"?, "commit"?}`` moves a branch or tag (default: the default branch) to the commit (a
  new one when none is given) and answers it; ``hub`` is ``huggingface``, ``modelscope`` or a
  repoSource value (``HuggingFace/DataSet``), ``kind`` ``model`` (default) or ``dataset``.
  ``POST /_emulator/hubs/repos`` with ``{"hub", "kind"?, "repoId", "exists"?, "access"?
  (public, private, gated), "token"?}``. ``POST /_emulator/hubs/settings`` with
  ``{"defaultCommits": bool}``. ``POST /_emulator/hubs/outage`` with ``{"hub"? (both when
  absent), "status"? (503), "delaySeconds"?}``; ``DELETE /_emulator/hubs/outage[?hub=]`` ends it.
  ``GET /_emulator/hubs/calls[?hub=&repoId=]``: every hub request (time, hub, kind, repoId,
  revision, status, outcome, token: whether one came).

Bad input answers 400 ``{"error": "..."}``; an unknown rule or cache 404.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .faults import FaultSettings
from .hubs import parse_hub
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


def _from_this_machine(request: web.Request) -> bool:
    """A loopback peer, or one whose address is the one it called (a process of this machine
    calling an emulator bound to an address other machines reach, e.g. a local cluster's
    bridge: its pods call from addresses of their own)."""
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if peer.is_loopback:
        return True
    own = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return bool(own) and str(own[0]) == str(peer)


def _loopback_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _from_this_machine(request):
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
        self.emulator.settle()
        only_region = request.query.get("region")
        only_account = request.query.get("account")
        regions: dict[str, dict[str, Any]] = {}
        removed = []
        for account_id, state in self.emulator.states.items():
            if only_account not in (None, account_id):
                continue
            for region, caches in state.regions.items():
                if only_region not in (None, region):
                    continue
                entry = regions.setdefault(region, {"count": 0, "caches": []})
                entry["count"] += len(caches)
                entry["caches"].extend(
                    {"AccountId": account_id, **state.admin_view(cache)} for cache in caches.values()
                )
            removed.extend({"AccountId": account_id, **item} for item in state.removed)
        return _reply(
            {
                "now": format_second(self.state.clock.now()),
                "clockOffsetSeconds": self.state.clock.offset,
                "timeScale": self.state.time_scale,
                "quota": self.emulator.config.quota,
                "accounts": self.emulator.accounts.account_ids,
                "regions": dict(sorted(regions.items())),
                "removed": removed,
                "rules": [rule.to_json() for rule in self.state.rules.list()],
                "faults": self.emulator.faults.settings.to_json(),
            }
        )

    async def calls(self, request: web.Request) -> web.Response:
        query = request.query
        entries = self.emulator.calls.query(query.get("action"), query.get("region"), query.get("account"))
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

    async def get_durations(self, request: web.Request) -> web.Response:
        return _reply({**dataclasses.asdict(self.state.durations), "timeScale": self.state.time_scale})

    async def set_durations(self, request: web.Request) -> web.Response:
        """How long phases begun from now on take, in seconds before the time scale (the phases
        under way keep theirs): e.g. a build of 30 real seconds for a benchmark."""
        body = await _json_body(request)
        known = {f.name for f in dataclasses.fields(self.state.durations)}
        unknown = set(body) - known
        if unknown:
            raise ValueError(
                f"unknown phases {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        for name, seconds in body.items():
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise ValueError(f"'{name}' must be a non-negative number of seconds")
        self.state.durations = dataclasses.replace(
            self.state.durations, **{k: float(v) for k, v in body.items()}
        )
        return await self.get_durations(request)

    async def advance_clock(self, request: web.Request) -> web.Response:
        seconds = (await _json_body(request)).get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError("'seconds' must be a non-negative number")
        self.emulator.advance(float(seconds))
        return self._clock_reply()

    def _clock_reply(self) -> web.Response:
        return _reply(
            {"now": format_second(self.state.clock.now()), "offsetSeconds": self.state.clock.offset}
        )

    async def container_groups(self, request: web.Request) -> web.Response:
        self.emulator.settle()
        region = request.query.get("region")
        account = request.query.get("account")
        return _reply(
            [
                {"AccountId": account_id, **service.containers.admin_view(group)}
                for account_id, service in self.emulator.services.items()
                if account in (None, account_id)
                for region_id, groups in sorted(service.containers.groups.items())
                if region in (None, region_id)
                for group in groups.values()
            ]
        )

    async def delete_out_of_band(self, request: web.Request) -> web.Response:
        self.emulator.settle()
        data_cache_id = request.match_info["data_cache_id"]
        found = self.emulator.find_cache(data_cache_id)
        if found is None:
            return _problem(f"no data cache {data_cache_id}", 404)
        account_id, cache = found
        self.emulator.states[account_id].remove(cache, "deleted out of band")
        return _reply({"deleted": data_cache_id, "region": cache.region_id})

    async def list_accounts(self, request: web.Request) -> web.Response:
        return _reply(self.emulator.accounts.admin_view())

    async def add_key(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        key_id, secret = body.get("access_key_id"), body.get("access_key_secret")
        if not isinstance(key_id, str) or not isinstance(secret, str):
            raise ValueError("'access_key_id' and 'access_key_secret' must be strings")
        account_id = request.match_info["account_id"]
        try:
            self.emulator.accounts.add_key(account_id, key_id, secret)
        except KeyError:
            return _problem(f"no account {account_id}", 404)
        return _reply({"AccountId": account_id, "AccessKeyId": key_id}, 201)

    async def disable_key(self, request: web.Request) -> web.Response:
        return self._set_key_active(request, False)

    async def enable_key(self, request: web.Request) -> web.Response:
        return self._set_key_active(request, True)

    def _set_key_active(self, request: web.Request, active: bool) -> web.Response:
        key_id = request.match_info["access_key_id"]
        try:
            credential = self.emulator.accounts.set_active(key_id, active)
        except KeyError:
            return _problem(f"no AccessKey {key_id}", 404)
        status = "Active" if active else "Inactive"
        return _reply({"AccessKeyId": key_id, "AccountId": credential.account_id, "Status": status})

    async def revoke_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["access_key_id"]
        try:
            self.emulator.accounts.revoke(key_id)
        except KeyError:
            return _problem(f"no AccessKey {key_id}", 404)
        return _reply({"revoked": key_id})

    # ---- hubs ------------------------------------------------------------------------

    async def hubs(self, request: web.Request) -> web.Response:
        return _reply(self.emulator.hubs.admin_view())

    async def set_hub_commit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        hub, kind = _hub_and_kind(body)
        revision, commit = _optional_str(body, "revision"), _optional_str(body, "commit")
        repo, ref, sha = self.emulator.hubs.set_commit(hub, kind, body.get("repoId"), revision, commit)
        return _reply({"hub": hub, "kind": kind, "repoId": repo.repo_id, "revision": ref, "commit": sha})

    async def set_hub_repo(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        hub, kind = _hub_and_kind(body)
        exists = body.get("exists", True)
        if not isinstance(exists, bool):
            raise ValueError("'exists' must be true or false")
        repo = self.emulator.hubs.set_repo(
            hub,
            kind,
            body.get("repoId"),
            exists=exists,
            access=_optional_str(body, "access") or "public",
            token=_optional_str(body, "token"),
        )
        return _reply(repo.admin_view())

    async def set_hub_settings(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if "defaultCommits" in body:
            if not isinstance(body["defaultCommits"], bool):
                raise ValueError("'defaultCommits' must be true or false")
            self.emulator.hubs.default_commits = body["defaultCommits"]
        return _reply(self.emulator.hubs.admin_view())

    async def set_hub_outage(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        hub = parse_hub(body["hub"])[0] if body.get("hub") is not None else None
        status, delay = body.get("status", 503), body.get("delaySeconds", 0)
        if not isinstance(status, int) or isinstance(status, bool):
            raise ValueError("'status' must be an HTTP status")
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise ValueError("'delaySeconds' must be a number")
        self.emulator.hubs.set_outage(hub, status, float(delay))
        return _reply(self.emulator.hubs.admin_view())

    async def clear_hub_outage(self, request: web.Request) -> web.Response:
        hub = request.query.get("hub")
        self.emulator.hubs.clear_outage(parse_hub(hub)[0] if hub else None)
        return _reply(self.emulator.hubs.admin_view())

    async def hub_calls(self, request: web.Request) -> web.Response:
        hub = request.query.get("hub")
        return _reply(
            self.emulator.hubs.call_log(parse_hub(hub)[0] if hub else None, request.query.get("repoId"))
        )


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value


def _hub_and_kind(body: dict[str, Any]) -> tuple[str, str]:
    hub = body.get("hub")
    if not isinstance(hub, str):
        raise ValueError("'hub' must be huggingface, modelscope or a repoSource value")
    return parse_hub(hub, _optional_str(body, "kind"))


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
        ("GET", "/durations", api.get_durations),
        ("POST", "/durations", api.set_durations),
        ("POST", "/caches/{data_cache_id}/delete-out-of-band", api.delete_out_of_band),
        ("GET", "/containergroups", api.container_groups),
        ("GET", "/accounts", api.list_accounts),
        ("POST", "/accounts/{account_id}/keys", api.add_key),
        ("POST", "/keys/{access_key_id}/disable", api.disable_key),
        ("POST", "/keys/{access_key_id}/enable", api.enable_key),
        ("DELETE", "/keys/{access_key_id}", api.revoke_key),
        ("GET", "/hubs", api.hubs),
        ("POST", "/hubs/commits", api.set_hub_commit),
        ("POST", "/hubs/repos", api.set_hub_repo),
        ("POST", "/hubs/settings", api.set_hub_settings),
        ("POST", "/hubs/outage", api.set_hub_outage),
        ("DELETE", "/hubs/outage", api.clear_hub_outage),
        ("GET", "/hubs/calls", api.hub_calls),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _loopback_only(handler))
