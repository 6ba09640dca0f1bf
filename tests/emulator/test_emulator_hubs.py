"""The hubs' revision endpoints (``/hub/huggingface``, ``/hub/modelscope``): each hub's answer
shapes, the admin API that sets commits, repositories and outages, the call log without tokens."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
import requests
from eci_datacache_emulator.admin_client import EmulatorAdminError

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_TOPSECRET-hub-token"


@pytest.fixture
def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback: never a proxy
    return session


def hf_get(http: requests.Session, emulator: Any, path: str, **kwargs: Any) -> requests.Response:
    return http.get(emulator.hub_endpoint("huggingface") + path, timeout=10, **kwargs)


def ms_get(http: requests.Session, emulator: Any, path: str, **kwargs: Any) -> requests.Response:
    return http.get(emulator.hub_endpoint("modelscope") + path, timeout=10, **kwargs)


def test_endpoints_are_under_the_hub_prefix(emulator, admin):
    assert emulator.hub_endpoint("huggingface") == f"http://{emulator.endpoint}/hub/huggingface"
    assert admin.hub_endpoint("HuggingFace/Model") == emulator.hub_endpoint("huggingface")
    assert admin.hub_endpoint("modelscope") == f"http://{emulator.endpoint}/hub/modelscope"


def test_a_fresh_emulator_knows_every_default_branch(emulator, http):
    answer = hf_get(http, emulator, "/api/models/org/any-model/revision/main")
    assert answer.status_code == 200
    info = answer.json()
    expected = hashlib.sha1(b"huggingface/model/org/any-model@main").hexdigest()
    assert info["sha"] == expected and info["id"] == "org/any-model" and info["modelId"] == "org/any-model"
    assert {"private", "gated", "disabled", "lastModified", "siblings", "author"} <= set(info)
    # Derived from the names only (the same after a restart), asked again: the same.
    assert hf_get(http, emulator, "/api/models/org/any-model/revision/main").json()["sha"] == expected
    dataset = hf_get(http, emulator, "/api/datasets/squad/revision/main").json()
    assert dataset["sha"] == hashlib.sha1(b"huggingface/dataset/squad@main").hexdigest()
    assert "modelId" not in dataset
    commits = ms_get(http, emulator, "/api/v1/models/org/any-model/commits", params={"Ref": "master"}).json()
    assert commits["Code"] == 200 and commits["Success"] is True and commits["TotalCount"] == 1
    assert (
        commits["Data"]["Commit"][0]["Id"]
        == hashlib.sha1(b"modelscope/model/org/any-model@master").hexdigest()
    )
    # Other branches and tags exist once set.
    assert hf_get(http, emulator, "/api/models/org/any-model/revision/dev").status_code == 404


def test_expand_sha_keeps_the_id_and_the_sha(emulator, http):
    answer = hf_get(http, emulator, "/api/models/gpt2/revision/main", params={"expand": "sha"})
    assert set(answer.json()) == {"_id", "id", "sha"}


def test_set_commits_move_refs_and_keep_the_history(emulator, admin, http):
    first = admin.set_hub_commit("huggingface", "org/m", "refs/pr/1")
    assert len(first) == 40
    assert hf_get(http, emulator, "/api/models/org/m/revision/refs%2Fpr%2F1").json()["sha"] == first
    admin.set_hub_commit("huggingface", "org/m", "refs/pr/1", SHA.upper())
    assert hf_get(http, emulator, "/api/models/org/m/revision/refs%2Fpr%2F1").json()["sha"] == SHA
    # A commit the repository has had answers itself; any other is an unknown revision.
    assert hf_get(http, emulator, f"/api/models/org/m/revision/{first}").json()["sha"] == first
    assert hf_get(http, emulator, f"/api/models/org/m/revision/{'e' * 40}").status_code == 404
    assert admin.hub_commit("huggingface", "org/m", "refs/pr/1") == SHA
    assert (
        admin.hub_commit("huggingface", "org/m") == hashlib.sha1(b"huggingface/model/org/m@main").hexdigest()
    )

    tag = admin.set_hub_commit("ModelScope/DataSet", "org/d", "v1.0")
    moved = admin.set_hub_commit("modelscope", "org/d", "v1.0", kind="dataset")
    assert moved != tag
    answer = ms_get(http, emulator, "/api/v1/datasets/org/d/commits", params={"Ref": "v1.0", "PageSize": "5"})
    assert [c["Id"] for c in answer.json()["Data"]["Commit"]] == [moved, tag]  # newest first
    assert answer.json()["TotalCount"] == 2
    page = ms_get(http, emulator, "/api/v1/datasets/org/d/commits", params={"Ref": "v1.0", "PageSize": "1"})
    assert [c["Id"] for c in page.json()["Data"]["Commit"]] == [moved]
    assert any(
        (repo["hub"], repo["kind"], repo["repoId"]) == ("modelscope", "dataset", "org/d")
        and repo["refs"]
        == {"master": hashlib.sha1(b"modelscope/dataset/org/d@master").hexdigest(), "v1.0": moved}
        for repo in admin.hubs()["repos"]
    )


def test_hugging_face_errors_in_its_own_shape(emulator, admin, http):
    unknown_revision = hf_get(http, emulator, "/api/models/org/m/revision/nope")
    assert unknown_revision.status_code == 404
    assert unknown_revision.headers["X-Error-Code"] == "RevisionNotFound"
    assert unknown_revision.json() == {"error": "Invalid rev id: nope"}
    admin.set_hub_repo("huggingface", "org/gone", exists=False)
    anonymous = hf_get(http, emulator, "/api/models/org/gone/revision/main")
    assert anonymous.status_code == 401  # the hub tells an anonymous caller nothing more
    assert anonymous.headers["X-Error-Code"] == "RepoNotFound"
    assert anonymous.json() == {"error": "Repository not found"}
    with_token = hf_get(
        http, emulator, "/api/models/org/gone/revision/main", headers={"Authorization": "Bearer x"}
    )
    assert with_token.status_code == 404 and with_token.headers["X-Error-Code"] == "RepoNotFound"
    page = hf_get(http, emulator, "/api/whatever")
    assert page.status_code == 404 and "error" in page.json()


def test_private_and_gated_repositories_need_their_token(emulator, admin, http):
    admin.set_hub_repo("huggingface", "org/private", access="private", token=TOKEN)
    admin.set_hub_repo("huggingface", "org/gated", access="gated", token=TOKEN)
    admin.set_hub_repo("modelscope", "org/private", access="private", token=TOKEN)
    path = "/api/models/org/private/revision/main"
    assert hf_get(http, emulator, path).status_code == 401
    assert hf_get(http, emulator, path, headers={"Authorization": "Bearer other"}).status_code == 404
    assert (
        hf_get(http, emulator, path, headers={"Authorization": f"Bearer {TOKEN}"}).json()["private"] is True
    )
    gated = hf_get(
        http, emulator, "/api/models/org/gated/revision/main", headers={"Authorization": "Bearer other"}
    )
    assert gated.status_code == 403 and gated.headers["X-Error-Code"] == "GatedRepo"
    ms_path = "/api/v1/models/org/private/commits"
    refused = ms_get(http, emulator, ms_path, params={"Ref": "master"})
    assert refused.status_code == 403 and refused.json()["Success"] is False
    cookie = ms_get(http, emulator, ms_path, params={"Ref": "master"}, cookies={"m_session_id": TOKEN})
    assert cookie.status_code == 200 and cookie.json()["Data"]["Commit"]
    assert all(TOKEN not in str(entry) for entry in admin.hub_calls())
    assert TOKEN not in str(admin.hubs())
    assert [entry["token"] for entry in admin.hub_calls(hub="modelscope")] == [False, True]


def test_modelscope_errors_in_its_own_shape(emulator, admin, http):
    no_commit = ms_get(http, emulator, "/api/v1/models/org/m/commits", params={"Ref": "nope"})
    assert no_commit.status_code == 200
    assert no_commit.json()["Data"] == {"Commit": []} and no_commit.json()["TotalCount"] == 0
    admin.set_hub_repo("modelscope", "org/gone", exists=False)
    gone = ms_get(http, emulator, "/api/v1/models/org/gone/commits", params={"Ref": "master"})
    assert gone.status_code == 404
    body = gone.json()
    assert body["Code"] == 10010205001 and body["Success"] is False and "record not found" in body["Message"]
    assert set(body) == {"Code", "Message", "RequestId", "Success"}


def test_default_commits_can_be_turned_off(emulator, admin, http):
    admin.set_hub_default_commits(False)
    assert hf_get(http, emulator, "/api/models/org/m/revision/main").status_code == 401
    assert ms_get(http, emulator, "/api/v1/models/org/m/commits", params={"Ref": "master"}).status_code == 404
    commit = admin.set_hub_commit("huggingface", "org/m", "v1")
    assert hf_get(http, emulator, "/api/models/org/m/revision/v1").json()["sha"] == commit
    assert hf_get(http, emulator, "/api/models/org/m/revision/main").status_code == 404  # no default branch
    admin.reset()
    assert hf_get(http, emulator, "/api/models/org/m/revision/main").status_code == 200
    assert admin.hubs()["repos"] == [] and admin.hubs()["defaultCommits"] is True
    assert len(admin.hub_calls()) == 1  # the one since the reset


def test_an_outage_answers_every_request_of_a_hub(emulator, admin, http):
    admin.set_hub_outage("huggingface")
    down = hf_get(http, emulator, "/api/models/org/m/revision/main")
    assert down.status_code == 503
    assert ms_get(http, emulator, "/api/v1/models/org/m/commits", params={"Ref": "master"}).status_code == 200
    admin.set_hub_outage(status=500, delay_seconds=0.3)
    started = time.monotonic()
    assert ms_get(http, emulator, "/api/v1/models/org/m/commits").status_code == 500
    assert time.monotonic() - started >= 0.3
    admin.clear_hub_outage("modelscope")
    assert ms_get(http, emulator, "/api/v1/models/org/m/commits").status_code == 200
    assert hf_get(http, emulator, "/api/models/org/m/revision/main").status_code == 500
    admin.clear_hub_outage()
    assert hf_get(http, emulator, "/api/models/org/m/revision/main").status_code == 200
    outcomes = [(entry["hub"], entry["status"], entry["outcome"]) for entry in admin.hub_calls()]
    assert ("huggingface", 503, "Outage") in outcomes and ("modelscope", 500, "Outage") in outcomes


def test_hub_calls_are_not_eci_calls(emulator, admin, http):
    hf_get(http, emulator, "/api/models/org/m/revision/main")
    assert admin.calls() == [] and admin.counters() == {}
    assert admin.hub_calls(repo_id="org/m")[0]["revision"] == "main"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"hub": "github", "repoId": "o/m"}, "unknown hub"),
        ({"hub": "huggingface", "kind": "space", "repoId": "o/m"}, "unknown kind"),
        ({"hub": "huggingface", "repoId": "a/b/c"}, "repoId"),
        ({"hub": "huggingface", "repoId": "o/m", "commit": "abc"}, "40 hex"),
        ({"hub": "huggingface", "repoId": "o/m", "revision": SHA}, "not a commit"),
    ],
)
def test_bad_admin_input_is_400(emulator, admin, body, fragment):
    with pytest.raises(EmulatorAdminError) as caught:
        admin._call("POST", "/hubs/commits", body=body)
    assert caught.value.status == 400 and fragment in str(caught.value)


def test_bad_outage_and_repo_input_is_400(admin):
    with pytest.raises(EmulatorAdminError, match="400"):
        admin.set_hub_outage(status=200)
    with pytest.raises(EmulatorAdminError, match="access"):
        admin.set_hub_repo("huggingface", "o/m", access="secret")
