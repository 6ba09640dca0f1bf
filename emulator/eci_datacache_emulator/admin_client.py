"""A small synchronous client of the emulator's admin API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode


class EmulatorAdminError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class EmulatorAdmin:
    """``EmulatorAdmin(emu.admin_url).caches("cn-hangzhou")`` and friends."""

    def __init__(self, admin_url: str, timeout: float = 10.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.timeout = timeout
        # The admin API is on loopback: never send it through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(
        self, method: str, path: str, body: Any = None, query: dict[str, str | None] | None = None
    ) -> Any:
        url = self.admin_url + path
        present = {key: value for key, value in (query or {}).items() if value is not None}
        if present:
            url += "?" + urlencode(present)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = error.read().decode("utf-8", "replace")
            raise EmulatorAdminError(error.code, payload) from None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def state(self, region: str | None = None, account: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/state", query={"region": region, "account": account})

    def caches(self, region: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        regions = self.state(region, account)["regions"]
        return [cache for caches in regions.values() for cache in caches["caches"]]

    def cache(self, data_cache_id: str) -> dict[str, Any] | None:
        return next((cache for cache in self.caches() if cache["DataCacheId"] == data_cache_id), None)

    def container_groups(self, region: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/containergroups", query={"region": region, "account": account})

    def calls(
        self, action: str | None = None, region: str | None = None, account: str | None = None
    ) -> list[dict[str, Any]]:
        return self._call("GET", "/calls", query={"action": action, "region": region, "account": account})

    def calls_per_second(
        self, action: str | None = None, region: str | None = None, account: str | None = None
    ) -> dict[str, dict[str, int]]:
        """``{account: {second: calls}}`` from the call log: how many calls each account made
        in each whole second (UTC, as the log's ``time``: when the emulator answered, which is
        between the call's arrival and its answer reaching the client). Calls refused before
        their signature was checked have no account: they count under ``""``."""
        counts: dict[str, dict[str, int]] = {}
        for entry in self.calls(action, region, account):
            seconds = counts.setdefault(entry.get("account") or "", {})
            seconds[entry["time"]] = seconds.get(entry["time"], 0) + 1
        return counts

    def counters(self) -> dict[str, dict[str, int]]:
        return self._call("GET", "/counters")

    def reset(self) -> None:
        self._call("POST", "/reset", body={})

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/faults")

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Replace the faults, e.g. ``set_faults(fault_500_rate=0.5, actions=["CreateDataCache"])``."""
        return self._call("POST", "/faults", body=settings)

    def clear_faults(self) -> dict[str, Any]:
        return self.set_faults()

    def add_rule(
        self,
        outcome: str = "fail",
        message: str | None = None,
        *,
        match: dict[str, str] | None = None,
        operations: list[str] | None = None,
        times: int | None = None,
        **match_fields: str,
    ) -> dict[str, Any]:
        """``add_rule("fail", "disk full", path="/models/bad")``; match fields: dataCacheId,
        name, path, bucket, regionId."""
        body: dict[str, Any] = {"outcome": outcome, "match": {**(match or {}), **match_fields}}
        if message is not None:
            body["message"] = message
        if operations is not None:
            body["operations"] = operations
        if times is not None:
            body["times"] = times
        return self._call("POST", "/rules", body=body)

    def rules(self) -> list[dict[str, Any]]:
        return self._call("GET", "/rules")

    def remove_rule(self, rule_id: str) -> None:
        self._call("DELETE", f"/rules/{quote(rule_id, safe='')}")

    def clear_rules(self) -> None:
        self._call("DELETE", "/rules")

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")

    def advance(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock/advance", body={"seconds": seconds})

    def durations(self) -> dict[str, Any]:
        """Each phase's seconds (before the time scale) and the time scale."""
        return self._call("GET", "/durations")

    def set_durations(self, **phases: float) -> dict[str, Any]:
        """``set_durations(creating=500, loading=1000)``: phases begun from now on (seconds before
        the time scale, which the answer also gives)."""
        return self._call("POST", "/durations", body=phases)

    def accounts(self) -> list[dict[str, Any]]:
        """Every account with its key ids, statuses, STS keys and roles (never a secret)."""
        return self._call("GET", "/accounts")

    def add_key(self, account_id: str, access_key_id: str, access_key_secret: str) -> dict[str, Any]:
        body = {"access_key_id": access_key_id, "access_key_secret": access_key_secret}
        return self._call("POST", f"/accounts/{quote(account_id, safe='')}/keys", body=body)

    def disable_key(self, access_key_id: str) -> dict[str, Any]:
        """Calls with the key answer InvalidAccessKeyId.Inactive until `enable_key`."""
        return self._call("POST", f"/keys/{quote(access_key_id, safe='')}/disable", body={})

    def enable_key(self, access_key_id: str) -> dict[str, Any]:
        return self._call("POST", f"/keys/{quote(access_key_id, safe='')}/enable", body={})

    def revoke_key(self, access_key_id: str) -> dict[str, Any]:
        """The key is gone: InvalidAccessKeyId.NotFound from then on."""
        return self._call("DELETE", f"/keys/{quote(access_key_id, safe='')}")

    def delete_out_of_band(self, data_cache_id: str) -> dict[str, Any]:
        return self._call("POST", f"/caches/{quote(data_cache_id, safe='')}/delete-out-of-band", body={})

    # ---- hubs (``hubs.py``): Hugging Face's and ModelScope's revision endpoints ----------

    def hub_endpoint(self, hub: str) -> str:
        """The emulator's ``hub`` (``huggingface`` or ``modelscope``) API: what
        ``DATACACHE_HUGGINGFACE_ENDPOINT`` / ``DATACACHE_MODELSCOPE_ENDPOINT`` should be."""
        name = hub.strip().lower().split("/")[0]
        if name not in ("huggingface", "modelscope"):
            raise ValueError(f"unknown hub {hub!r}; use huggingface or modelscope")
        return self.admin_url.removesuffix("/_emulator") + f"/hub/{name}"

    def hubs(self) -> dict[str, Any]:
        """Default commits on or off, outages and every repository set (refs, access; no token)."""
        return self._call("GET", "/hubs")

    def set_hub_commit(
        self,
        hub: str,
        repo_id: str,
        revision: str | None = None,
        commit: str | None = None,
        *,
        kind: str | None = None,
    ) -> str:
        """Move a branch or tag (default: the hub's default branch) of ``repo_id`` to ``commit``
        (40 hex digits; a new one when None) and answer the commit. ``hub``: ``huggingface``,
        ``modelscope`` or a repoSource value such as ``HuggingFace/DataSet``; ``kind``: model
        (default) or dataset."""
        body: dict[str, Any] = {"hub": hub, "repoId": repo_id, "revision": revision, "commit": commit}
        if kind is not None:
            body["kind"] = kind
        return str(self._call("POST", "/hubs/commits", body=body)["commit"])

    def hub_commit(
        self, hub: str, repo_id: str, revision: str | None = None, *, kind: str | None = None
    ) -> str | None:
        """The commit a ref of a repository set through the admin API is at (None: not set)."""
        wanted_hub = hub.strip().lower().split("/")[0]
        wanted_kind = (kind or (hub.split("/")[1] if "/" in hub else "model")).lower()
        for repo in self.hubs()["repos"]:
            if (repo["hub"], repo["kind"], repo["repoId"]) == (wanted_hub, wanted_kind, repo_id):
                refs = repo["refs"]
                default = "main" if wanted_hub == "huggingface" else "master"
                return refs.get(revision or default)
        return None

    def set_hub_repo(
        self,
        hub: str,
        repo_id: str,
        *,
        kind: str | None = None,
        exists: bool = True,
        access: str = "public",
        token: str | None = None,
    ) -> dict[str, Any]:
        """``exists=False``: the hub does not know the repository; ``access`` public, private or
        gated (then only ``token`` reads it)."""
        body: dict[str, Any] = {"hub": hub, "repoId": repo_id, "exists": exists, "access": access}
        if kind is not None:
            body["kind"] = kind
        if token is not None:
            body["token"] = token
        return self._call("POST", "/hubs/repos", body=body)

    def set_hub_default_commits(self, enabled: bool) -> dict[str, Any]:
        """On (a fresh emulator): any repository's default branch is at a commit derived from its
        name. Off: only repositories set through the admin API exist."""
        return self._call("POST", "/hubs/settings", body={"defaultCommits": enabled})

    def set_hub_outage(
        self, hub: str | None = None, status: int = 503, delay_seconds: float = 0.0
    ) -> dict[str, Any]:
        """Every request to ``hub`` (both when None) answers ``status`` after ``delay_seconds``."""
        return self._call(
            "POST", "/hubs/outage", body={"hub": hub, "status": status, "delaySeconds": delay_seconds}
        )

    def clear_hub_outage(self, hub: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", "/hubs/outage", query={"hub": hub})

    def hub_calls(self, hub: str | None = None, repo_id: str | None = None) -> list[dict[str, Any]]:
        """Every request to the hubs: time, hub, kind, repoId, revision, status, outcome, token
        (whether one came; never its value)."""
        return self._call("GET", "/hubs/calls", query={"hub": hub, "repoId": repo_id})
