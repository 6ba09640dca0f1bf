"""The hubs' revision endpoints: which commit a branch or tag of a Hugging Face or ModelScope
repository is at, in each hub's own shapes, with commits set through the admin API.

Served on the emulator's HTTP port under ``/hub/huggingface`` and ``/hub/modelscope``, so that
``DATACACHE_HUGGINGFACE_ENDPOINT=http://HOST:PORT/hub/huggingface`` and
``DATACACHE_MODELSCOPE_ENDPOINT=http://HOST:PORT/hub/modelscope`` point the operator here:

* Hugging Face: ``GET /hub/huggingface/api/{models|datasets}/{repo_id}/revision/{revision}``
  (``repo_id`` ``owner/name`` or ``name``; a revision with ``/`` URL-encoded, ``refs%2Fpr%2F1``)
  answers the repository's info with ``sha``; ``?expand=sha`` (as ``huggingface_hub`` asks)
  keeps ``_id``, ``id`` and ``sha`` only. Errors as the hub sends them: headers ``X-Error-Code``
  and ``X-Error-Message``, body ``{"error": ...}``: an unknown (or private, without its token)
  repository is ``RepoNotFound`` "Repository not found", 401 to a caller without a token and 404
  to one with; an unknown revision 404 ``RevisionNotFound`` "Invalid rev id: REV"; a gated
  repository without its token ``GatedRepo`` (401 anonymous, 403 with another token).
* ModelScope: ``GET /hub/modelscope/api/v1/{models|datasets}/{owner}/{name}/commits?Ref=REV
  &PageNumber=1&PageSize=N`` answers the ref's history newest first, ``{"Code": 200, "Data":
  {"Commit": [{"Id", "ShortId", "Title", "Message", "AuthorName", "AuthorEmail", "AuthoredDate",
  "CommitterName", "CommitterEmail", "CommittedDate", "CreatedAt"}]}, "Message": "success",
  "RequestId", "Success": true, "TotalCount"}`` (one commit per time the ref was set). An unknown
  ref answers 200 with no commit (as a git server's history of a missing ref: the emulator's
  choice); an unknown repository 404 ``{"Code": 10010205001, "Message": "获取模型版本失败，信息：
  record not found", "RequestId", "Success": false}`` (the hub's answer for a missing model's
  revisions); a private or gated one without its token 403 ``{"Code": 403, ...}`` (chosen).

A fresh emulator knows every repository (``default_commits``): its default branch (``main`` on
Hugging Face, ``master`` on ModelScope) is at a commit derived from hub, kind, repository and
branch (sha1, stable across restarts), so that any hub source resolves; other branches and tags
exist once set. ``set_commit`` moves a ref (to a given commit or a new one), ``set_repo`` makes a
repository absent, private or gated (``token``: the one token that reads it), and with
``default_commits`` off only repositories set through the admin API exist. A full 40-hex
revision answers itself when it is a commit any ref of the repository has been at. An outage
(``set_outage``) answers every request of a hub (or both) with a status (503 by default) after
an optional delay. Every request is logged (``calls``: time, hub, kind, repoId, revision,
status, outcome, whether a token came; never the token). Hub state is not kept in the state file
and ``POST /_emulator/reset`` forgets it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .state import format_second

HUB_PREFIX = "/hub"
HUGGING_FACE = "huggingface"
MODELSCOPE = "modelscope"
HUBS = (HUGGING_FACE, MODELSCOPE)
MODEL = "model"
DATASET = "dataset"
KINDS = (MODEL, DATASET)
DEFAULT_BRANCHES = {HUGGING_FACE: "main", MODELSCOPE: "master"}
ACCESS = ("public", "private", "gated")
CALL_LOG_LIMIT = 2000
MODELSCOPE_NOT_FOUND_CODE = 10010205001
MODELSCOPE_NOT_FOUND_MESSAGE = "获取模型版本失败，信息：record not found"

_HUB_ALIASES = {"huggingface": HUGGING_FACE, "hf": HUGGING_FACE, "modelscope": MODELSCOPE, "ms": MODELSCOPE}
_KIND_ALIASES = {"model": MODEL, "models": MODEL, "dataset": DATASET, "datasets": DATASET}


def parse_hub(hub: str, kind: str | None = None) -> tuple[str, str]:
    """``("HuggingFace/DataSet")`` -> ``("huggingface", "dataset")``; ``("modelscope", "model")``
    -> the same. A repoSource value names both; ``kind`` defaults to model. ValueError otherwise."""
    name, _, kind_in_hub = str(hub).strip().partition("/")
    parsed_hub = _HUB_ALIASES.get(name.strip().lower())
    if parsed_hub is None:
        raise ValueError(f"unknown hub {hub!r}; use huggingface or modelscope (or a repoSource value)")
    wanted_kind = (kind_in_hub or kind or MODEL).strip().lower()
    parsed_kind = _KIND_ALIASES.get(wanted_kind)
    if parsed_kind is None:
        raise ValueError(f"unknown kind {wanted_kind!r}; use model or dataset")
    return parsed_hub, parsed_kind


def default_commit(hub: str, kind: str, repo_id: str, revision: str) -> str:
    """The commit a fresh emulator says a default branch is at: stable for hub, kind, repo and ref."""
    return hashlib.sha1(f"{hub}/{kind}/{repo_id}@{revision}".encode()).hexdigest()


def is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(ch in "0123456789abcdefABCDEF" for ch in revision)


@dataclass
class CommitRecord:
    sha: str
    ref: str
    at: float


@dataclass
class HubRepo:
    hub: str
    kind: str
    repo_id: str
    created: float
    exists: bool = True
    access: str = "public"
    token: str | None = None
    refs: dict[str, str] = field(default_factory=dict)
    history: list[CommitRecord] = field(default_factory=list)  # oldest first

    def commits(self) -> set[str]:
        return {record.sha for record in self.history} | set(self.refs.values())

    def history_of(self, ref: str) -> list[CommitRecord]:
        """The commits ``ref`` has been at, newest first (its current one first)."""
        return [record for record in reversed(self.history) if record.ref == ref]

    def admin_view(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "kind": self.kind,
            "repoId": self.repo_id,
            "exists": self.exists,
            "access": self.access,
            "tokenSet": self.token is not None,
            "refs": dict(sorted(self.refs.items())),
        }


@dataclass
class Outage:
    status: int = 503
    delay_seconds: float = 0.0


class HubState:
    """Every hub's repositories and refs, the outages and the call log; one event loop owns it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.default_commits = True
        self.repos: dict[tuple[str, str, str], HubRepo] = {}
        self.outages: dict[str, Outage] = {}
        self.calls: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_LIMIT)
        self._serial = 0

    def reset(self) -> None:
        self.default_commits = True
        self.repos.clear()
        self.outages.clear()
        self.calls.clear()
        self._serial = 0

    # ---- lookups -------------------------------------------------------------------------

    def find(self, hub: str, kind: str, repo_id: str) -> HubRepo | None:
        """The repository as the hub knows it (a default one when none was set), or None."""
        repo = self.repos.get((hub, kind, repo_id))
        if repo is not None:
            return repo if repo.exists else None
        if not self.default_commits:
            return None
        return self._fresh(hub, kind, repo_id)

    def _fresh(self, hub: str, kind: str, repo_id: str) -> HubRepo:
        now = self.clock()
        repo = HubRepo(hub, kind, repo_id, created=now)
        if self.default_commits:
            branch = DEFAULT_BRANCHES[hub]
            sha = default_commit(hub, kind, repo_id, branch)
            repo.refs[branch] = sha
            repo.history.append(CommitRecord(sha, branch, now))
        return repo

    def _materialise(self, hub: str, kind: str, repo_id: str) -> HubRepo:
        key = (hub, kind, repo_id)
        if key not in self.repos:
            self.repos[key] = self._fresh(hub, kind, repo_id)
        return self.repos[key]

    @staticmethod
    def resolve(repo: HubRepo, revision: str) -> str | None:
        if revision in repo.refs:
            return repo.refs[revision]
        if is_commit(revision) and revision.lower() in repo.commits():
            return revision.lower()
        return None

    # ---- admin ---------------------------------------------------------------------------

    def set_commit(
        self, hub: str, kind: str, repo_id: str, revision: str | None, commit: str | None
    ) -> tuple[HubRepo, str, str]:
        """Move ``revision`` (default branch when None) to ``commit`` (a new one when None);
        answers the repository, the ref and the commit."""
        repo_id = _check_repo_id(repo_id)
        revision = (revision or "").strip() or DEFAULT_BRANCHES[hub]
        if is_commit(revision):
            raise ValueError("'revision' must be a branch or tag, not a commit")
        if commit is None:
            self._serial += 1
            commit = hashlib.sha1(f"{hub}/{kind}/{repo_id}@{revision}#{self._serial}".encode()).hexdigest()
        elif not is_commit(commit):
            raise ValueError("'commit' must be 40 hex digits")
        commit = commit.lower()
        repo = self._materialise(hub, kind, repo_id)
        repo.exists = True
        repo.refs[revision] = commit
        repo.history.append(CommitRecord(commit, revision, self.clock()))
        return repo, revision, commit

    def set_repo(
        self,
        hub: str,
        kind: str,
        repo_id: str,
        *,
        exists: bool = True,
        access: str = "public",
        token: str | None = None,
    ) -> HubRepo:
        repo_id = _check_repo_id(repo_id)
        if access not in ACCESS:
            raise ValueError(f"'access' must be one of {', '.join(ACCESS)}")
        repo = self._materialise(hub, kind, repo_id)
        repo.exists = exists
        repo.access = access
        repo.token = token or None
        return repo

    def set_outage(self, hub: str | None, status: int = 503, delay_seconds: float = 0.0) -> None:
        if not 400 <= status <= 599:
            raise ValueError("'status' must be an HTTP error status (400-599)")
        if delay_seconds < 0:
            raise ValueError("'delaySeconds' must not be negative")
        for name in HUBS if hub is None else (hub,):
            self.outages[name] = Outage(status, delay_seconds)

    def clear_outage(self, hub: str | None = None) -> None:
        for name in HUBS if hub is None else (hub,):
            self.outages.pop(name, None)

    def admin_view(self) -> dict[str, Any]:
        return {
            "defaultCommits": self.default_commits,
            "defaultBranches": dict(DEFAULT_BRANCHES),
            "outages": {
                hub: {"status": outage.status, "delaySeconds": outage.delay_seconds}
                for hub, outage in sorted(self.outages.items())
            },
            "repos": [repo.admin_view() for _, repo in sorted(self.repos.items())],
        }

    def call_log(self, hub: str | None = None, repo_id: str | None = None) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.calls
            if hub in (None, entry["hub"]) and repo_id in (None, entry["repoId"])
        ]

    def record(
        self, hub: str, kind: str, repo_id: str, revision: str, status: int, outcome: str, token: bool
    ) -> None:
        self.calls.append(
            {
                "time": format_second(time.time()),
                "hub": hub,
                "kind": kind,
                "repoId": repo_id,
                "revision": revision,
                "status": status,
                "outcome": outcome,
                "token": token,
            }
        )


def _check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not repo_id.strip() or len(repo_id.split("/")) > 2:
        raise ValueError("'repoId' must be owner/name (or name)")
    return repo_id.strip()


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    if request.cookies.get("m_session_id"):
        return request.cookies["m_session_id"]
    return None


# ---- the endpoints ---------------------------------------------------------------------------


class HubEndpoints:
    def __init__(self, state: HubState) -> None:
        self.state = state

    async def _outage(self, hub: str) -> Outage | None:
        outage = self.state.outages.get(hub)
        if outage is not None and outage.delay_seconds:
            await asyncio.sleep(outage.delay_seconds)
        return outage

    # Hugging Face ---------------------------------------------------------------------------

    async def huggingface_revision(self, request: web.Request) -> web.Response:
        kind = _KIND_ALIASES[request.match_info["kind"]]
        repo_id = request.match_info["repo"]
        revision = request.match_info["revision"]
        token = _bearer(request)
        status, outcome, response = await self._huggingface(kind, repo_id, revision, token, request)
        self.state.record(HUGGING_FACE, kind, repo_id, revision, status, outcome, token is not None)
        return response

    async def _huggingface(
        self, kind: str, repo_id: str, revision: str, token: str | None, request: web.Request
    ) -> tuple[int, str, web.Response]:
        outage = await self._outage(HUGGING_FACE)
        if outage is not None:
            return outage.status, "Outage", _hf_error(outage.status, None, _reason(outage.status))
        repo = self.state.find(HUGGING_FACE, kind, repo_id)
        if repo is None or (repo.access == "private" and token != repo.token):
            status = 404 if token else 401
            return status, "RepoNotFound", _hf_error(status, "RepoNotFound", "Repository not found")
        if repo.access == "gated" and token != repo.token:
            status = 403 if token else 401
            noun = "dataset" if kind == DATASET else "model"
            message = (
                f"Access to {noun} {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            return status, "GatedRepo", _hf_error(status, "GatedRepo", message)
        sha = self.state.resolve(repo, revision)
        if sha is None:
            return 404, "RevisionNotFound", _hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        info = _hf_info(repo, sha, self.state.clock())
        expand = request.query.getall("expand", []) + request.query.getall("expand[]", [])
        if expand:
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        return 200, "Success", web.json_response(info)

    async def huggingface_unknown(self, request: web.Request) -> web.Response:
        return _hf_error(404, None, "Sorry, we can't find the page you are looking for.")

    # ModelScope -----------------------------------------------------------------------------

    async def modelscope_commits(self, request: web.Request) -> web.Response:
        kind = _KIND_ALIASES[request.match_info["kind"]]
        repo_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        revision = request.query.get("Ref") or DEFAULT_BRANCHES[MODELSCOPE]
        token = _bearer(request)
        status, outcome, response = await self._modelscope(kind, repo_id, revision, token, request)
        self.state.record(MODELSCOPE, kind, repo_id, revision, status, outcome, token is not None)
        return response

    async def _modelscope(
        self, kind: str, repo_id: str, revision: str, token: str | None, request: web.Request
    ) -> tuple[int, str, web.Response]:
        outage = await self._outage(MODELSCOPE)
        if outage is not None:
            return outage.status, "Outage", _ms_error(outage.status, outage.status, _reason(outage.status))
        repo = self.state.find(MODELSCOPE, kind, repo_id)
        if repo is None:
            return (
                404,
                "NotFound",
                _ms_error(404, MODELSCOPE_NOT_FOUND_CODE, MODELSCOPE_NOT_FOUND_MESSAGE),
            )
        if repo.access != "public" and token != repo.token:
            return 403, "Forbidden", _ms_error(403, 403, "no permission to access this repository")
        page_size = _positive_int(request.query.get("PageSize"), 50)
        page_number = _positive_int(request.query.get("PageNumber"), 1)
        if revision in repo.refs:
            history = repo.history_of(revision)
        elif is_commit(revision) and revision.lower() in repo.commits():
            sha = revision.lower()
            history = [next(r for r in repo.history if r.sha == sha)]
        else:
            history = []
        page = history[(page_number - 1) * page_size : page_number * page_size]
        payload = {
            "Code": 200,
            "Data": {"Commit": [_ms_commit(record) for record in page]},
            "Message": "success",
            "RequestId": str(uuid.uuid4()),
            "Success": True,
            "TotalCount": len(history),
        }
        return 200, "Success" if history else "NoCommit", web.json_response(payload)

    async def modelscope_unknown(self, request: web.Request) -> web.Response:
        return _ms_error(404, 404, f"{request.method} {request.path}: not found")


_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Error")


def _positive_int(text: str | None, default: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return value if value > 0 else default


def _hf_error(status: int, code: str | None, message: str) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    # Header values must be latin-1; the hub's messages are ASCII.
    return web.json_response({"error": message}, status=status, headers=headers)


def _hf_info(repo: HubRepo, sha: str, now: float) -> dict[str, Any]:
    owner = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.kind}/{repo.repo_id}".encode()).hexdigest()[:24],
        "id": repo.repo_id,
    }
    if repo.kind == MODEL:
        info["modelId"] = repo.repo_id
    info.update(
        {
            "author": owner,
            "sha": sha,
            "lastModified": _iso(now),
            "createdAt": _iso(repo.created),
            "private": repo.access == "private",
            "gated": "auto" if repo.access == "gated" else False,
            "disabled": False,
            "tags": [],
            "siblings": [],
        }
    )
    return info


def _iso(epoch_seconds: float) -> str:
    return format_second(epoch_seconds).replace("Z", ".000Z")


def _ms_error(status: int, code: int, message: str) -> web.Response:
    payload = {"Code": code, "Message": message, "RequestId": str(uuid.uuid4()), "Success": False}
    return web.json_response(payload, status=status)


def _ms_commit(record: CommitRecord) -> dict[str, Any]:
    when = int(record.at)
    return {
        "Id": record.sha,
        "ShortId": record.sha[:8],
        "Title": f"update {record.ref}",
        "Message": f"update {record.ref}",
        "AuthorName": "emulator",
        "AuthorEmail": "emulator@example.invalid",
        "AuthoredDate": when,
        "CommitterName": "emulator",
        "CommitterEmail": "emulator@example.invalid",
        "CommittedDate": when,
        "CreatedAt": when,
    }


def hub_endpoint_path(hub: str) -> str:
    """The path under which ``hub``'s API is served (the operator's endpoint is host + this)."""
    return f"{HUB_PREFIX}/{parse_hub(hub)[0]}"


def add_hub_routes(app: web.Application, state: HubState) -> None:
    endpoints = HubEndpoints(state)
    hf = f"{HUB_PREFIX}/{HUGGING_FACE}"
    ms = f"{HUB_PREFIX}/{MODELSCOPE}"
    app.router.add_get(
        hf + r"/api/{kind:models|datasets}/{repo:[^/]+(?:/[^/]+)?}/revision/{revision:[^/]+}",
        endpoints.huggingface_revision,
    )
    app.router.add_route("*", hf + r"/{tail:.*}", endpoints.huggingface_unknown)
    app.router.add_get(
        ms + r"/api/v1/{kind:models|datasets}/{owner:[^/]+}/{name:[^/]+}/commits",
        endpoints.modelscope_commits,
    )
    app.router.add_route("*", ms + r"/{tail:.*}", endpoints.modelscope_unknown)
