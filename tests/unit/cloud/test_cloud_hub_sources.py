"""Hub sources, pure parts: which data sources are hub sources, the URLs asked, what each hub's
answers mean (commits and errors), the hub endpoint settings. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from datacache_operator.cloud.hubs import (
    DATASET,
    HUGGING_FACE,
    MODEL,
    MODELSCOPE,
    HubError,
    HubErrorCode,
    HubSource,
    PinnedSource,
    check_repo_id,
    check_revision,
    commit_from_answer,
    hub_source,
    is_commit,
    parse_repo_source,
    pinned_options,
    request_headers,
    resolve_commit,
    revision_url,
)
from datacache_operator.settings import OperatorSettings

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_SECRET-token-never-shown-0042"


def hf(revision: str | None = "main", repo_id: str = "org/model", kind: str = MODEL) -> HubSource:
    return HubSource(HUGGING_FACE, kind, repo_id, revision)


def ms(revision: str | None = "master", repo_id: str = "org/model", kind: str = MODEL) -> HubSource:
    return HubSource(MODELSCOPE, kind, repo_id, revision)


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def ms_commits(*ids: str) -> bytes:
    commits = [{"Id": i, "ShortId": i[:8], "Title": "t", "Message": "m"} for i in ids]
    return body(
        {
            "Code": 200,
            "Data": {"Commit": commits},
            "Message": "success",
            "RequestId": "r",
            "Success": True,
            "TotalCount": len(ids),
        }
    )


# ---- which sources are hub sources -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HuggingFace/Model", (HUGGING_FACE, MODEL)),
        ("HuggingFace/DataSet", (HUGGING_FACE, DATASET)),
        ("huggingface/dataset", (HUGGING_FACE, DATASET)),
        ("ModelScope/Model", (MODELSCOPE, MODEL)),
        (" ModelScope/DataSet ", (MODELSCOPE, DATASET)),
        ("GitHub/Model", None),
        ("HuggingFace", None),
        ("", None),
        (None, None),
    ],
)
def test_repo_source_values(value: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_repo_source(value) == expected


def test_hub_source_reads_repo_source_repo_id_and_revision() -> None:
    source = hub_source(
        "URL", {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-7B", "revision": "v1"}
    )
    assert source == HubSource(HUGGING_FACE, MODEL, "Qwen/Qwen2-7B", "v1")
    assert source.requested == "v1" and not source.is_pinned
    assert source.repo_source == "HuggingFace/Model"


def test_hub_source_defaults_to_each_hubs_default_branch() -> None:
    hf_source = hub_source("URL", {"repoSource": "HuggingFace/DataSet", "repoId": "o/d"})
    ms_source = hub_source("URL", {"repoSource": "ModelScope/Model", "repoId": "o/m", "revision": " "})
    assert hf_source is not None and hf_source.revision is None and hf_source.requested == "main"
    assert ms_source is not None and ms_source.revision is None and ms_source.requested == "master"


def test_a_commit_revision_is_already_pinned() -> None:
    source = hub_source("URL", {"repoSource": "ModelScope/Model", "repoId": "o/m", "revision": SHA.upper()})
    assert source is not None and source.is_pinned


@pytest.mark.parametrize(
    ("source_type", "options"),
    [
        ("OSS", {"repoSource": "HuggingFace/Model", "repoId": "o/m"}),
        ("URL", {"url": "https://example.com/model.tar"}),
        ("URL", {"repoSource": "HuggingFace/Model"}),
        ("URL", {"repoId": "o/m"}),  # the API requires repoSource with repoId: no hub guessed
        ("URL", {"repoSource": "Other/Model", "repoId": "o/m"}),
        ("URL", {}),
        (None, None),
    ],
)
def test_not_hub_sources(source_type: str | None, options: dict[str, str] | None) -> None:
    assert hub_source(source_type, options) is None


def test_pinned_options_replace_only_the_revision() -> None:
    pinned = PinnedSource(HUGGING_FACE, "o/m", "main", SHA)
    options = {"repoSource": "HuggingFace/Model", "repoId": "o/m", "revision": "main", "accessToken": "x"}
    assert pinned_options(options, pinned) == {**options, "revision": SHA}
    assert pinned.options() == {"repoSource": "HuggingFace/Model", "repoId": "o/m", "revision": SHA}
    assert pinned.describe() == f"HuggingFace/Model o/m@main ({SHA})"
    assert PinnedSource(MODELSCOPE, "o/m", SHA, SHA, DATASET).describe() == f"ModelScope/DataSet o/m@{SHA}"


def test_is_commit() -> None:
    assert is_commit(SHA) and is_commit(SHA.upper())
    assert not is_commit(SHA[:-1]) and not is_commit(SHA + "0") and not is_commit("main")
    assert not is_commit("g" * 40) and not is_commit(None) and not is_commit("")


@pytest.mark.parametrize(
    ("hub", "repo_id", "ok"),
    [
        (HUGGING_FACE, "gpt2", True),
        (HUGGING_FACE, "openai-community/gpt2", True),
        (MODELSCOPE, "Qwen/Qwen2-7B", True),
        (MODELSCOPE, "gpt2", False),  # ModelScope ids are owner/name
        (HUGGING_FACE, "a/b/c", False),
        (HUGGING_FACE, "a//b", False),
        (HUGGING_FACE, "../x", False),
        (HUGGING_FACE, "o/na me", False),
        (HUGGING_FACE, "o/m?x=1", False),
        (HUGGING_FACE, "", False),
    ],
)
def test_repository_ids(hub: str, repo_id: str, ok: bool) -> None:
    if ok:
        assert check_repo_id(hub, repo_id) == repo_id
    else:
        with pytest.raises(HubError) as caught:
            check_repo_id(hub, repo_id)
        assert caught.value.code == HubErrorCode.INVALID_SOURCE and not caught.value.retryable


def test_revisions_checked() -> None:
    assert check_revision(HUGGING_FACE, None) == "main"
    assert check_revision(MODELSCOPE, "") == "master"
    assert check_revision(HUGGING_FACE, "refs/pr/1") == "refs/pr/1"
    for bad in ("a b", "x\ty", "v" * 256):
        with pytest.raises(HubError, match="InvalidHubSource"):
            check_revision(HUGGING_FACE, bad)


# ---- the URLs asked ------------------------------------------------------------------------


def test_hugging_face_urls_encode_the_revision_whole() -> None:
    assert (
        revision_url(HUGGING_FACE, MODEL, "https://huggingface.co/", "org/model", "refs/pr/1")
        == "https://huggingface.co/api/models/org/model/revision/refs%2Fpr%2F1?expand=sha"
    )
    assert (
        revision_url(HUGGING_FACE, DATASET, "https://hf-mirror.com", "squad", "v1.0+x")
        == "https://hf-mirror.com/api/datasets/squad/revision/v1.0%2Bx?expand=sha"
    )


def test_modelscope_urls_ask_the_commits_of_the_ref() -> None:
    assert (
        revision_url(MODELSCOPE, MODEL, "https://modelscope.cn", "Qwen/Qwen2-7B", "release/v1")
        == "https://modelscope.cn/api/v1/models/Qwen/Qwen2-7B/commits?Ref=release%2Fv1&PageNumber=1&PageSize=1"
    )
    assert revision_url(MODELSCOPE, DATASET, "http://127.0.0.1:1/hub/modelscope", "o/d", "master").startswith(
        "http://127.0.0.1:1/hub/modelscope/api/v1/datasets/o/d/commits?Ref=master"
    )


def test_tokens_go_in_headers_only() -> None:
    assert "Authorization" not in request_headers(HUGGING_FACE, None)
    assert request_headers(HUGGING_FACE, TOKEN)["Authorization"] == f"Bearer {TOKEN}"
    assert "Cookie" not in request_headers(HUGGING_FACE, TOKEN)
    headers = request_headers(MODELSCOPE, TOKEN)
    assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["Cookie"] == f"m_session_id={TOKEN}"


# ---- Hugging Face's answers -------------------------------------------------------------------


def test_hugging_face_sha() -> None:
    assert commit_from_answer(hf(), 200, {}, body({"_id": "x", "id": "org/model", "sha": SHA.upper()})) == SHA


@pytest.mark.parametrize(
    ("status", "headers", "payload", "code"),
    [
        (
            404,
            {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id: nope"},
            {"error": "Invalid rev id: nope"},
            HubErrorCode.REVISION_NOT_FOUND,
        ),
        (
            404,
            {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            {"error": "Repository not found"},
            HubErrorCode.REPOSITORY_NOT_FOUND,
        ),
        # Anonymous: the hub answers 401 for a repository that does not exist (or is private).
        (
            401,
            {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            {"error": "Repository not found"},
            HubErrorCode.REPOSITORY_NOT_FOUND,
        ),
        (
            404,
            {},
            {"error": "Sorry, we can't find the page you are looking for."},
            HubErrorCode.REPOSITORY_NOT_FOUND,
        ),
        (
            403,
            {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model org/model is restricted."},
            {"error": "Access to model org/model is restricted."},
            HubErrorCode.HUB_REFUSED,
        ),
        (401, {}, {"error": "Invalid credentials in Authorization header"}, HubErrorCode.HUB_REFUSED),
        (403, {"X-Error-Message": "Access to this resource is disabled."}, None, HubErrorCode.HUB_REFUSED),
        (400, {}, {"error": "Invalid repo name"}, HubErrorCode.HUB_REFUSED),
        (500, {}, {"error": "Internal Error"}, HubErrorCode.HUB_UNREACHABLE),
        (503, {}, None, HubErrorCode.HUB_UNREACHABLE),
        (429, {}, {"error": "rate limited"}, HubErrorCode.HUB_UNREACHABLE),
        (200, {}, {"id": "org/model"}, HubErrorCode.INVALID_RESPONSE),
        (200, {}, {"sha": "abc"}, HubErrorCode.INVALID_RESPONSE),
    ],
)
def test_hugging_face_errors(status: int, headers: dict[str, str], payload: Any, code: HubErrorCode) -> None:
    raw = body(payload) if payload is not None else b"<html>Service Unavailable</html>"
    with pytest.raises(HubError) as caught:
        commit_from_answer(hf("v1"), status, headers, raw)
    error = caught.value
    assert error.code == code and error.http_status == status
    assert error.retryable == (code in (HubErrorCode.HUB_UNREACHABLE, HubErrorCode.INVALID_RESPONSE))
    assert "HuggingFace/Model org/model@v1" in str(error)
    words = headers.get("X-Error-Message") or (payload or {}).get("error")
    if words and status != 200:
        assert words in error.message  # the hub's own words


def test_an_html_page_is_not_a_commit() -> None:
    with pytest.raises(HubError) as caught:
        commit_from_answer(hf(), 200, {}, b"<html><body>Please sign in to the proxy</body></html>")
    assert caught.value.code == HubErrorCode.INVALID_RESPONSE and caught.value.retryable
    assert "Please sign in" in caught.value.message


def test_a_token_the_hub_echoes_is_never_shown() -> None:
    with pytest.raises(HubError) as caught:
        commit_from_answer(hf(), 401, {}, body({"error": f"Invalid token {TOKEN}"}), secrets=(TOKEN,))
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value.args)


# ---- ModelScope's answers ---------------------------------------------------------------------


def test_modelscope_newest_commit() -> None:
    other = "f" * 40
    assert commit_from_answer(ms(), 200, {}, ms_commits(SHA.upper(), other)) == SHA


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (
            200,
            {"Code": 200, "Data": {"Commit": []}, "Success": True, "TotalCount": 0},
            HubErrorCode.REVISION_NOT_FOUND,
        ),
        (
            404,
            {"Code": 10010205001, "Message": "获取模型版本失败，信息：record not found", "Success": False},
            HubErrorCode.REPOSITORY_NOT_FOUND,
        ),
        (
            200,
            {"Code": 10010205001, "Message": "model not exist", "Success": False},
            HubErrorCode.REPOSITORY_NOT_FOUND,
        ),
        (403, {"Code": 403, "Message": "no permission", "Success": False}, HubErrorCode.HUB_REFUSED),
        (401, {"Code": 401, "Message": "login first", "Success": False}, HubErrorCode.HUB_REFUSED),
        (200, {"Code": 403, "Message": "no permission", "Success": False}, HubErrorCode.HUB_REFUSED),
        (200, {"Code": 10010200001, "Message": "busy", "Success": False}, HubErrorCode.INVALID_RESPONSE),
        (
            200,
            {"Code": 200, "Data": {"Commit": [{"Id": "short"}]}, "Success": True},
            HubErrorCode.INVALID_RESPONSE,
        ),
        (200, {"Code": 200, "Data": {}, "Success": True}, HubErrorCode.INVALID_RESPONSE),
        (502, None, HubErrorCode.HUB_UNREACHABLE),
        (
            503,
            {"Code": 503, "Message": "Service Unavailable", "Success": False},
            HubErrorCode.HUB_UNREACHABLE,
        ),
    ],
)
def test_modelscope_errors(status: int, payload: Any, code: HubErrorCode) -> None:
    raw = body(payload) if payload is not None else b"<html>502 Bad Gateway</html>"
    with pytest.raises(HubError) as caught:
        commit_from_answer(ms("v2", kind=DATASET), status, {}, raw)
    error = caught.value
    assert error.code == code
    assert "ModelScope/DataSet org/model@v2" in str(error)
    message = (payload or {}).get("Message")
    if message and code != HubErrorCode.INVALID_RESPONSE:
        assert message in error.message


# ---- resolve_commit without a call -------------------------------------------------------------


async def test_a_full_commit_is_returned_without_a_call() -> None:
    # Port 9 of a TEST-NET address: any call would fail, so passing shows none was made.
    settings = OperatorSettings(
        huggingface_endpoint="http://192.0.2.1:9", modelscope_endpoint="http://192.0.2.1:9"
    )
    pinned = await resolve_commit("HuggingFace/Model", "o/m", SHA.upper(), settings)
    assert pinned == PinnedSource(HUGGING_FACE, "o/m", SHA.upper(), SHA, MODEL)
    assert not pinned.moved
    pinned = await resolve_commit("modelscope/dataset", "o/d", SHA, settings)
    assert pinned == PinnedSource(MODELSCOPE, "o/d", SHA, SHA, DATASET)


async def test_invalid_sources_fail_before_any_call() -> None:
    settings = OperatorSettings(huggingface_endpoint="http://192.0.2.1:9")
    with pytest.raises(HubError) as caught:
        await resolve_commit("GitHub/Model", "o/m", "main", settings)
    assert caught.value.code == HubErrorCode.INVALID_SOURCE
    with pytest.raises(HubError, match="InvalidHubSource"):
        await resolve_commit("HuggingFace/Model", "o/m/x", "main", settings)


# ---- settings ---------------------------------------------------------------------------------


def test_hub_endpoints_default_to_the_public_hubs() -> None:
    settings = OperatorSettings()
    assert settings.huggingface_endpoint == "https://huggingface.co"
    assert settings.modelscope_endpoint == "https://modelscope.cn"


def test_hub_endpoints_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACACHE_HUGGINGFACE_ENDPOINT", "https://hf-mirror.com/")
    monkeypatch.setenv("DATACACHE_MODELSCOPE_ENDPOINT", "http://127.0.0.1:18082/hub/modelscope")
    settings = OperatorSettings()
    assert settings.huggingface_endpoint == "https://hf-mirror.com"
    assert settings.modelscope_endpoint == "http://127.0.0.1:18082/hub/modelscope"


@pytest.mark.parametrize(
    "value", ["huggingface.co", "ftp://x", "https://", "https://user:pw@hf-mirror.com", "https://h/?q=1"]
)
def test_hub_endpoints_must_be_urls_without_credentials(value: str) -> None:
    with pytest.raises(ValidationError):
        OperatorSettings(huggingface_endpoint=value)


def test_hugging_face_error_headers_in_any_case() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict({"x-error-code": "RevisionNotFound", "x-error-message": "Invalid rev id: v9"})
    with pytest.raises(HubError) as caught:
        commit_from_answer(hf("v9"), 404, headers, b"{}")
    assert (
        caught.value.code == HubErrorCode.REVISION_NOT_FOUND and "Invalid rev id: v9" in caught.value.message
    )
