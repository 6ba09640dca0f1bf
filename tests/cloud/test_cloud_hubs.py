"""resolve_commit against the emulator's hub endpoints (on its own thread), for both hubs:
branches and tags to commits, a moved branch, a commit without a call, unknown repositories and
revisions, private repositories and tokens, a hub that is down or slow, a mirror endpoint."""

from __future__ import annotations

import socket

import pytest
from eci_datacache_emulator import Emulator, EmulatorConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin

from datacache_operator.cloud.hubs import HubError, HubErrorCode, PinnedSource, resolve_commit
from datacache_operator.settings import OperatorSettings

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_TOPSECRET-token-of-the-test"
# repoSource value, the emulator's hub name, its kind, the default branch
HUBS = [
    ("HuggingFace/Model", "huggingface", "model", "main"),
    ("HuggingFace/DataSet", "huggingface", "dataset", "main"),
    ("ModelScope/Model", "modelscope", "model", "master"),
    ("ModelScope/DataSet", "modelscope", "dataset", "master"),
]


@pytest.fixture
def settings(emulator: Emulator) -> OperatorSettings:
    return OperatorSettings(
        huggingface_endpoint=emulator.hub_endpoint("huggingface"),
        modelscope_endpoint=emulator.hub_endpoint("modelscope"),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("repo_source", "hub", "kind", "default"), HUBS)
async def test_a_branch_resolves_to_its_commit_and_follows_it(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str, kind: str, default: str
) -> None:
    first = admin.set_hub_commit(hub, "org/model", "release/v1", kind=kind)
    pinned = await resolve_commit(repo_source, "org/model", "release/v1", settings)
    assert pinned == PinnedSource(pinned.hub, "org/model", "release/v1", first, pinned.kind)
    assert pinned.repo_source == repo_source and pinned.moved

    moved = admin.set_hub_commit(hub, "org/model", "release/v1", kind=kind)
    assert moved != first
    assert (await resolve_commit(repo_source, "org/model", "release/v1", settings)).commit == moved

    # No revision: the hub's default branch.
    default_pin = await resolve_commit(repo_source, "org/model", None, settings)
    assert default_pin.requested == default
    calls = admin.hub_calls(hub=hub, repo_id="org/model")
    assert [(c["kind"], c["revision"], c["status"]) for c in calls] == [
        (kind, "release/v1", 200),
        (kind, "release/v1", 200),
        (kind, default, 200),
    ]


@pytest.mark.parametrize(("repo_source", "hub", "kind", "default"), HUBS[::2])
async def test_a_commit_passes_through_without_a_call(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str, kind: str, default: str
) -> None:
    pinned = await resolve_commit(repo_source, "org/model", SHA, settings)
    assert pinned.commit == SHA and not pinned.moved
    assert admin.hub_calls() == []


@pytest.mark.parametrize(("repo_source", "hub", "kind", "default"), HUBS[::2])
async def test_a_tag_and_a_commit_it_was_at(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str, kind: str, default: str
) -> None:
    tag = admin.set_hub_commit(hub, "org/tagged", "v2.0", SHA, kind=kind)
    assert tag == SHA
    assert (await resolve_commit(repo_source, "org/tagged", "v2.0", settings)).commit == SHA


@pytest.mark.parametrize(("repo_source", "hub", "kind", "default"), HUBS)
async def test_unknown_revisions_and_repositories(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str, kind: str, default: str
) -> None:
    with pytest.raises(HubError) as caught:
        await resolve_commit(repo_source, "org/model", "no-such-branch", settings)
    assert caught.value.code == HubErrorCode.REVISION_NOT_FOUND and not caught.value.retryable
    assert f"{repo_source} org/model@no-such-branch" in caught.value.message

    admin.set_hub_repo(hub, "org/gone", exists=False, kind=kind)
    with pytest.raises(HubError) as caught:
        await resolve_commit(repo_source, "org/gone", None, settings)
    assert caught.value.code == HubErrorCode.REPOSITORY_NOT_FOUND and not caught.value.retryable
    words = "Repository not found" if hub == "huggingface" else "record not found"
    assert words in caught.value.message  # the hub's own words


@pytest.mark.parametrize(
    ("repo_source", "hub"), [("HuggingFace/Model", "huggingface"), ("ModelScope/Model", "modelscope")]
)
async def test_private_repositories_need_their_token_which_is_never_shown(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str
) -> None:
    admin.set_hub_repo(hub, "org/private", access="private", token=TOKEN)
    commit = admin.set_hub_commit(hub, "org/private", "v1")
    assert (await resolve_commit(repo_source, "org/private", "v1", settings, token=TOKEN)).commit == commit
    with pytest.raises(HubError) as caught:
        await resolve_commit(repo_source, "org/private", "v1", settings, token="another-token")
    # Hugging Face hides a private repository (RepoNotFound); ModelScope refuses (403).
    expected = HubErrorCode.REPOSITORY_NOT_FOUND if hub == "huggingface" else HubErrorCode.HUB_REFUSED
    assert caught.value.code == expected
    assert "another-token" not in str(caught.value)
    assert [c["token"] for c in admin.hub_calls(hub=hub)] == [True, True]


async def test_a_gated_repository_is_refused(settings: OperatorSettings, admin: EmulatorAdmin) -> None:
    admin.set_hub_repo("huggingface", "org/gated", access="gated", token=TOKEN)
    with pytest.raises(HubError) as caught:
        await resolve_commit("HuggingFace/Model", "org/gated", None, settings)
    assert caught.value.code == HubErrorCode.HUB_REFUSED and caught.value.http_status == 401
    assert "restricted" in caught.value.message
    assert (await resolve_commit("HuggingFace/Model", "org/gated", None, settings, token=TOKEN)).commit


@pytest.mark.parametrize(
    ("repo_source", "hub"), [("HuggingFace/Model", "huggingface"), ("ModelScope/Model", "modelscope")]
)
async def test_a_hub_that_is_down_is_unreachable_and_retryable(
    settings: OperatorSettings, admin: EmulatorAdmin, repo_source: str, hub: str
) -> None:
    admin.set_hub_outage(hub)
    with pytest.raises(HubError) as caught:
        await resolve_commit(repo_source, "org/model", "main", settings)
    assert caught.value.code == HubErrorCode.HUB_UNREACHABLE and caught.value.retryable
    assert caught.value.http_status == 503
    admin.clear_hub_outage()
    assert (await resolve_commit(repo_source, "org/model", None, settings)).commit

    nothing_there = OperatorSettings(
        huggingface_endpoint=f"http://127.0.0.1:{closed_port()}/hub/huggingface",
        modelscope_endpoint=f"http://127.0.0.1:{closed_port()}/hub/modelscope",
    )
    with pytest.raises(HubError) as caught:
        await resolve_commit(repo_source, "org/model", "main", nothing_there)
    assert caught.value.code == HubErrorCode.HUB_UNREACHABLE and caught.value.retryable
    assert "cannot reach http://127.0.0.1:" in caught.value.message


async def test_a_hub_that_does_not_answer_in_time(settings: OperatorSettings, admin: EmulatorAdmin) -> None:
    admin.set_hub_outage("modelscope", status=503, delay_seconds=2.0)
    with pytest.raises(HubError) as caught:
        await resolve_commit("ModelScope/Model", "org/model", "master", settings, request_timeout=0.3)
    assert caught.value.code == HubErrorCode.HUB_UNREACHABLE and "within 0.3 s" in caught.value.message


async def test_the_mirror_endpoint_is_the_one_asked(settings: OperatorSettings, admin: EmulatorAdmin) -> None:
    with Emulator(EmulatorConfig(seed=9, tls=False)).in_thread() as mirror:
        mirror_admin = mirror.admin
        on_mirror = mirror_admin.set_hub_commit("huggingface", "org/model", "main", "a" * 40)
        on_origin = admin.set_hub_commit("huggingface", "org/model", "main", "b" * 40)
        through_mirror = settings.model_copy(
            update={"huggingface_endpoint": mirror.hub_endpoint("huggingface")}
        )
        pinned = await resolve_commit("HuggingFace/Model", "org/model", "main", through_mirror)
        assert pinned.commit == on_mirror != on_origin
        assert len(mirror_admin.hub_calls()) == 1 and admin.hub_calls() == []
        # ModelScope's endpoint is its own setting: still the origin.
        await resolve_commit("ModelScope/Model", "org/model", None, through_mirror)
        assert len(mirror_admin.hub_calls()) == 1 and len(admin.hub_calls(hub="modelscope")) == 1
