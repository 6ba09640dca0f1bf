"""Hugging Face and ModelScope sources pinned to a commit, through each hub's own API.

A URL data source with options ``repoSource`` (``HuggingFace/Model``, ``HuggingFace/DataSet``,
``ModelScope/Model``, ``ModelScope/DataSet``), ``repoId`` and ``revision`` names a model or a data
set on a hub. ``revision`` may be a branch, a tag or a commit (unset: ``main`` on Hugging Face,
``master`` on ModelScope). :func:`resolve_commit` asks the hub which commit a branch or tag is at,
so that a cache is built from that commit and a moved branch can be noticed later; a full
40-hex commit is its own answer, without a call.

The hubs' endpoints (``endpoint`` is ``OperatorSettings.huggingface_endpoint`` or
``modelscope_endpoint``; a mirror answering the same API, such as hf-mirror.com, works):

- Hugging Face: ``GET {endpoint}/api/models/{repo_id}/revision/{revision}?expand=sha`` (data sets:
  ``/api/datasets/...``), the revision URL-encoded whole (``refs/pr/1`` -> ``refs%2Fpr%2F1``) as
  ``huggingface_hub`` does; the answer's ``sha`` is the commit. Errors carry ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``GatedRepo``) and ``X-Error-Message``; an anonymous
  request for a repository that does not exist, or is private, is 401 ``RepoNotFound``.
- ModelScope: ``GET {endpoint}/api/v1/models/{owner}/{name}/commits?Ref={revision}&PageNumber=1
  &PageSize=1`` (data sets: ``/api/v1/datasets/...``), the commit history of a branch or tag,
  newest first, which the ModelScope SDK's ``HubApi.list_repo_commits`` reads and whose first
  ``Data.Commit[].Id`` its ``model_info`` reports as the repository's ``sha``. Answers are
  ``{"Code", "Message", "Data", "RequestId", "Success"}``; a repository that does not exist is
  404; a ref that does not exist has no commit (an empty list).

Errors are :class:`HubError` with one of :class:`HubErrorCode`: ``HubUnreachable`` (connection
refused or reset, DNS, timeout, 5xx, 429: retryable), ``RepositoryNotFound`` /
``RevisionNotFound`` (the hub's own words in the message), ``HubRefused`` (401/403: a private or
gated repository, a token that may not read it), ``HubInvalidResponse`` (an answer without a
commit, e.g. an HTML page from a proxy: retryable) and ``InvalidHubSource`` (options that name no
repository: fix the spec). Hugging Face's ``RepoNotFound`` is ``RepositoryNotFound`` even when it
comes as a 401, as ``huggingface_hub`` reads it: the hub says the same of a private repository
to a caller without a token that may read it, and the message says so.

A token (``accessToken`` of the source, from its Secret) is sent as ``Authorization: Bearer``
(ModelScope also as its ``m_session_id`` cookie, as its SDK does) and never logged, raised or
returned. Calls to a loopback endpoint (the emulator) never go through a proxy; calls to any
other host honour ``HTTPS_PROXY``/``NO_PROXY`` (aiohttp's ``trust_env``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from datacache_operator import __version__
from datacache_operator.api.datacache import REPO_SOURCES
from datacache_operator.cloud.errors import scrub
from datacache_operator.settings import OperatorSettings, is_loopback_endpoint

log = logging.getLogger(__name__)

HUGGING_FACE = "HuggingFace"
MODELSCOPE = "ModelScope"
HUBS = (HUGGING_FACE, MODELSCOPE)
MODEL = "Model"
DATASET = "DataSet"
# The branch a hub serves when no revision is named (ModelScope's SDK: DEFAULT_MODEL_REVISION
# and DEFAULT_DATASET_REVISION are both "master").
DEFAULT_REVISIONS = {HUGGING_FACE: "main", MODELSCOPE: "master"}
HUB_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024
MAX_REVISION_LENGTH = 255

REPO_SOURCE_OPTION = "repoSource"
REPO_ID_OPTION = "repoId"
REVISION_OPTION = "revision"
URL_SOURCE_TYPE = "URL"

_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_REPO_PART = re.compile(r"[^\s/\\?#%]+")
_USER_AGENT = f"eci-datacache-operator/{__version__}"


class HubErrorCode(StrEnum):
    HUB_UNREACHABLE = "HubUnreachable"
    REPOSITORY_NOT_FOUND = "RepositoryNotFound"
    REVISION_NOT_FOUND = "RevisionNotFound"
    HUB_REFUSED = "HubRefused"
    INVALID_RESPONSE = "HubInvalidResponse"
    INVALID_SOURCE = "InvalidHubSource"


RETRYABLE_CODES = frozenset({HubErrorCode.HUB_UNREACHABLE, HubErrorCode.INVALID_RESPONSE})


class HubError(Exception):
    """A revision the hub could not resolve. ``str()`` is ``"<code>: <message>"``; the message
    names the hub, repository and revision and quotes the hub, never a token."""

    def __init__(self, code: HubErrorCode | str, message: str, *, http_status: int | None = None) -> None:
        self.code = HubErrorCode(code)
        self.message = message
        self.http_status = http_status
        super().__init__(f"{self.code.value}: {message}")

    @property
    def retryable(self) -> bool:
        """Worth asking again later (the hub or the network was down); the others need a
        change of the source, of its token, or of the repository on the hub."""
        return self.code in RETRYABLE_CODES


# ---- pure: what a data source asks ---------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """A data source that names a repository on a hub, and the revision it asks."""

    hub: str  # HuggingFace | ModelScope
    kind: str  # Model | DataSet
    repo_id: str
    revision: str | None  # as written in the options; None: the hub's default branch

    @property
    def repo_source(self) -> str:
        return f"{self.hub}/{self.kind}"

    @property
    def requested(self) -> str:
        """The branch, tag or commit to resolve (the default branch when none is named)."""
        return self.revision or default_revision(self.hub)

    @property
    def is_pinned(self) -> bool:
        """Already a full commit: nothing to ask the hub, nothing that can move."""
        return is_commit(self.requested)


@dataclass(frozen=True)
class PinnedSource:
    """A hub source resolved to the commit its branch or tag was at."""

    hub: str  # HuggingFace | ModelScope
    repo_id: str
    requested: str  # the branch, tag or commit asked (the default branch when none was)
    commit: str  # 40 hex digits, lower case
    kind: str = MODEL  # Model | DataSet

    @property
    def repo_source(self) -> str:
        return f"{self.hub}/{self.kind}"

    @property
    def moved(self) -> bool:
        """False when ``requested`` was the commit itself."""
        return self.requested.lower() != self.commit

    def options(self) -> dict[str, str]:
        """The hub options of a build from this commit."""
        return {
            REPO_SOURCE_OPTION: self.repo_source,
            REPO_ID_OPTION: self.repo_id,
            REVISION_OPTION: self.commit,
        }

    def describe(self) -> str:
        """``HuggingFace/Model org/name@main (0123abc…)``, for status and events."""
        if not self.moved:
            return f"{self.repo_source} {self.repo_id}@{self.commit}"
        return f"{self.repo_source} {self.repo_id}@{self.requested} ({self.commit})"


def is_commit(revision: str | None) -> bool:
    """A full commit id (40 hex digits): the revision pins itself."""
    return bool(revision) and _COMMIT.fullmatch(revision or "") is not None


def default_revision(hub: str) -> str:
    return DEFAULT_REVISIONS[hub]


def parse_repo_source(repo_source: str | None) -> tuple[str, str] | None:
    """``"HuggingFace/DataSet"`` -> ``("HuggingFace", "DataSet")``; spelled in any case (the API's
    values are ``REPO_SOURCES``); None for anything else."""
    wanted = (repo_source or "").strip().lower()
    for value in REPO_SOURCES:
        if value.lower() == wanted:
            hub, kind = value.split("/")
            return hub, kind
    return None


def hub_source(source_type: str | None, options: Mapping[str, str] | None) -> HubSource | None:
    """The hub repository a data source names, or None when it is not a hub source (not URL, or
    no ``repoSource`` of the four, or no ``repoId``). ``options`` may be the spec's options or the
    resolved ones (a Secret's keys included): only repoSource, repoId and revision are read."""
    if (source_type or "").strip().upper() != URL_SOURCE_TYPE or not options:
        return None
    parsed = parse_repo_source(options.get(REPO_SOURCE_OPTION))
    repo_id = (options.get(REPO_ID_OPTION) or "").strip()
    if parsed is None or not repo_id:
        return None
    revision = (options.get(REVISION_OPTION) or "").strip() or None
    return HubSource(hub=parsed[0], kind=parsed[1], repo_id=repo_id, revision=revision)


def pinned_options(options: Mapping[str, str], pinned: PinnedSource) -> dict[str, str]:
    """``options`` with ``revision`` set to the pinned commit (everything else kept)."""
    return {**options, REVISION_OPTION: pinned.commit}


def check_repo_id(hub: str, repo_id: str) -> str:
    """The repository id, stripped; ``owner/name`` (Hugging Face also takes a bare ``name``).
    Raises HubError(InvalidHubSource)."""
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    allowed = (1, 2) if hub == HUGGING_FACE else (2,)
    if (
        len(parts) not in allowed
        or not all(_REPO_PART.fullmatch(part) for part in parts)
        or any(part in (".", "..") for part in parts)
    ):
        shape = "owner/name or name" if hub == HUGGING_FACE else "owner/name"
        raise HubError(
            HubErrorCode.INVALID_SOURCE, f"{hub} repoId {scrub(repo_id)!r} is not a repository id ({shape})"
        )
    return repo_id


def check_revision(hub: str, revision: str | None) -> str:
    """The revision to resolve (the default branch when empty). Raises HubError(InvalidHubSource)."""
    revision = (revision or "").strip() or default_revision(hub)
    if len(revision) > MAX_REVISION_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in revision):
        raise HubError(
            HubErrorCode.INVALID_SOURCE, f"{hub} revision {scrub(revision)!r} is not a branch, tag or commit"
        )
    return revision


def revision_url(hub: str, kind: str, endpoint: str, repo_id: str, revision: str) -> str:
    """The already-encoded URL that answers which commit ``revision`` is at."""
    base = endpoint.rstrip("/")
    repo_path = "/".join(quote(part, safe="") for part in repo_id.split("/"))
    if hub == HUGGING_FACE:
        collection = "datasets" if kind == DATASET else "models"
        return f"{base}/api/{collection}/{repo_path}/revision/{quote(revision, safe='')}?expand=sha"
    collection = "datasets" if kind == DATASET else "models"
    query = urlencode({"Ref": revision, "PageNumber": "1", "PageSize": "1"})
    return f"{base}/api/v1/{collection}/{repo_path}/commits?{query}"


def request_headers(hub: str, token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
        if hub == MODELSCOPE:
            headers["Cookie"] = f"m_session_id={token}"
    return headers


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _hub_words(hub: str, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    """What the hub said about a failure, as it said it."""
    if hub == HUGGING_FACE:
        words = headers.get("X-Error-Message") or ""
        if not words and isinstance(payload, dict):
            words = str(payload.get("error") or "")
    else:
        words = str(payload.get("Message") or "") if isinstance(payload, dict) else ""
    if not words and payload is None:
        words = body[:200].decode("utf-8", "replace")
    return words


def commit_from_answer(
    source: HubSource,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: tuple[str, ...] = (),
) -> str:
    """The commit in a hub's answer (lower-case 40 hex), or the HubError it means."""
    hub, requested = source.hub, source.requested
    what = f"{source.repo_source} {source.repo_id}@{requested}"
    payload = _json(body)
    words = scrub(_hub_words(hub, headers, payload, body), secrets) or "no message"

    def fail(code: HubErrorCode, text: str) -> HubError:
        return HubError(code, f"{what}: {text} (HTTP {status})", http_status=status)

    if status >= 500 or status == 429:
        raise fail(HubErrorCode.HUB_UNREACHABLE, f"the hub answered an error: {words}")
    if hub == HUGGING_FACE:
        error_code = headers.get("X-Error-Code", "")
        if status >= 400:
            if error_code == "RevisionNotFound":
                raise fail(HubErrorCode.REVISION_NOT_FOUND, f"the hub says: {words}")
            if error_code == "RepoNotFound" or (status == 404 and error_code != "GatedRepo"):
                raise fail(
                    HubErrorCode.REPOSITORY_NOT_FOUND,
                    f"the hub says: {words} (as it does of a private repository to a caller without "
                    "a token that may read it)",
                )
            raise fail(HubErrorCode.HUB_REFUSED, f"the hub refused: {words}")
        sha = payload.get("sha") if isinstance(payload, dict) else None
    else:
        envelope_code = payload.get("Code") if isinstance(payload, dict) else None
        failed_envelope = isinstance(payload, dict) and (
            payload.get("Success") is False or envelope_code not in (None, 200, "200")
        )
        if status == 404 or (status < 400 and failed_envelope and envelope_code in (404, "404")):
            raise fail(HubErrorCode.REPOSITORY_NOT_FOUND, f"the hub says: {words}")
        if status in (401, 403) or (
            status < 400 and failed_envelope and envelope_code in (401, 403, "401", "403")
        ):
            raise fail(HubErrorCode.HUB_REFUSED, f"the hub refused: {words}")
        if status >= 400:
            raise fail(HubErrorCode.HUB_REFUSED, f"the hub refused: {words}")
        if failed_envelope and _says_not_found(words):
            raise fail(HubErrorCode.REPOSITORY_NOT_FOUND, f"the hub says: {words}")
        if failed_envelope:
            raise fail(HubErrorCode.INVALID_RESPONSE, f"the hub answered Code {envelope_code}: {words}")
        data = payload.get("Data") if isinstance(payload, dict) else None
        commits = data.get("Commit") if isinstance(data, dict) else None
        if isinstance(commits, list) and not commits:
            raise fail(HubErrorCode.REVISION_NOT_FOUND, "the hub has no commit on that branch or tag")
        first = commits[0] if isinstance(commits, list) else None
        sha = first.get("Id") if isinstance(first, dict) else None
    if not isinstance(sha, str) or not is_commit(sha):
        raise fail(
            HubErrorCode.INVALID_RESPONSE,
            f"no commit in the answer: {words if payload is None else 'JSON without one'}",
        )
    return sha.lower()


def _says_not_found(words: str) -> bool:
    lowered = words.lower()
    return any(phrase in lowered for phrase in ("not found", "not exist", "不存在"))


# ---- the call ----------------------------------------------------------------------------


def hub_endpoint(hub: str, settings: OperatorSettings) -> str:
    return settings.huggingface_endpoint if hub == HUGGING_FACE else settings.modelscope_endpoint


async def resolve_commit(
    repo_source: str,
    repo_id: str,
    revision: str | None,
    settings: OperatorSettings,
    *,
    token: str | None = None,
    session: aiohttp.ClientSession | None = None,
    request_timeout: float = HUB_TIMEOUT_SECONDS,
) -> PinnedSource:
    """The commit that ``revision`` (a branch, tag or commit; None: the default branch) of
    ``repo_id`` is at, asked of the hub's API at the endpoint the settings name for that hub.

    A full 40-hex commit is returned as it is, without a call. ``token`` (the source's
    accessToken) reads private repositories; ``session`` reuses a client session (its proxy
    settings then apply; ``request_timeout`` still bounds the call). Raises :class:`HubError`.
    """
    parsed = parse_repo_source(repo_source)
    if parsed is None:
        raise HubError(
            HubErrorCode.INVALID_SOURCE,
            f"repoSource {scrub(repo_source)!r} is not a hub; use one of {', '.join(REPO_SOURCES)}",
        )
    hub, kind = parsed
    source = HubSource(hub, kind, check_repo_id(hub, repo_id), check_revision(hub, revision))
    requested = source.requested
    if is_commit(requested):
        return PinnedSource(hub, source.repo_id, requested, requested.lower(), kind)
    endpoint = hub_endpoint(hub, settings)
    url = revision_url(hub, kind, endpoint, source.repo_id, requested)
    secrets = (token,) if token else ()
    status, headers, body = await _get(
        url, request_headers(hub, token), session, request_timeout, source, secrets
    )
    commit = commit_from_answer(source, status, headers, body, secrets=secrets)
    log.debug("%s %s@%s is at commit %s", source.repo_source, source.repo_id, requested, commit)
    return PinnedSource(hub, source.repo_id, requested, commit, kind)


async def _get(
    url: str,
    headers: dict[str, str],
    session: aiohttp.ClientSession | None,
    request_timeout: float,
    source: HubSource,
    secrets: tuple[str, ...],
) -> tuple[int, Mapping[str, str], bytes]:
    what = f"{source.repo_source} {source.repo_id}@{source.requested}"
    target = URL(url, encoded=True)
    own = session is None
    if session is None:
        # The emulator on loopback never through a proxy; a real hub through the environment's
        # HTTPS_PROXY unless NO_PROXY names it.
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            trust_env=not is_loopback_endpoint(target.host or ""),
        )
    try:
        async with session.get(
            target, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as response:
            body = await response.content.read(MAX_ANSWER_BYTES)
            # Header names in any case (a mirror or HTTP/2 proxy may lower them).
            return response.status, CIMultiDict(response.headers), body
    except TimeoutError:
        raise HubError(
            HubErrorCode.HUB_UNREACHABLE, f"{what}: no answer from {_host(url)} within {request_timeout:g} s"
        ) from None
    except aiohttp.ClientError as error:
        detail = scrub(f"{type(error).__name__}: {error}", secrets)
        raise HubError(
            HubErrorCode.HUB_UNREACHABLE, f"{what}: cannot reach {_host(url)} ({detail})"
        ) from None
    finally:
        if own:
            await session.close()


def _host(url: str) -> str:
    """``scheme://host[:port]`` of a URL: all a reader needs (no user, path or query)."""
    return str(URL(url, encoded=True).origin())
