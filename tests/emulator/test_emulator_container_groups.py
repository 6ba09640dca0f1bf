"""The container-group side of ECI, through the unmodified official SDK: what a virtual node
sends for a pod bound to a cache, and what it reads back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_eci20180808 import models
from alibabacloud_eci20180808.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from eci_datacache_emulator.admin_client import EmulatorAdmin
from emulator_support import ONE_HOUR, REGION, create_request, describe_one

Group = models.CreateContainerGroupRequest


def group_request(name: str, path: str | None = "/models/qwen", **fields: Any) -> Group:
    volumes, mounts = [], []
    if path is not None:
        volumes = [
            models.CreateContainerGroupRequestVolume(
                name="model",
                type="HostPathVolume",
                host_path_volume=models.CreateContainerGroupRequestVolumeHostPathVolume(path=path),
            )
        ]
        mounts = [
            models.CreateContainerGroupRequestContainerVolumeMount(
                name="model", mount_path="/model", read_only=True
            )
        ]
    return Group(
        region_id=REGION,
        container_group_name=name,
        container=[
            models.CreateContainerGroupRequestContainer(
                name="main", image="vllm/vllm-openai:v0", volume_mount=mounts
            )
        ],
        volume=volumes,
        tag=[models.CreateContainerGroupRequestTag(key="k8s.pod", value=name)],
        **fields,
    )


def create_group(client: Client, request: Group) -> str:
    return str(client.create_container_group(request).body.container_group_id)


def describe_groups(client: Client, *ids: str, **fields: Any) -> list[Any]:
    request = models.DescribeContainerGroupsRequest(
        region_id=REGION, container_group_ids=json.dumps(list(ids)) if ids else None, **fields
    )
    return list(client.describe_container_groups(request).body.container_groups or [])


def events_of(group: Any) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in group.events or []]


def available_cache(
    client: Client, admin: EmulatorAdmin, path: str = "/models/qwen", bucket: str = "ml"
) -> str:
    cache_id = str(client.create_data_cache(create_request(path, bucket=bucket)).body.data_cache_id)
    admin.advance(ONE_HOUR)
    assert describe_one(client, cache_id).status == "Available"
    return cache_id


def test_a_group_at_an_available_caches_bucket_and_path_gets_it(client: Client, admin: EmulatorAdmin) -> None:
    cache_id = available_cache(client, admin)
    assert describe_one(client, cache_id).last_matched_time is None
    group_id = create_group(
        client,
        group_request(
            "infer-0", data_cache_bucket="ml", data_cache_pl="PL2", data_cache_bursting_enabled=True
        ),
    )
    assert group_id.startswith("eci-")

    (group,) = describe_groups(client, group_id)
    assert (group.container_group_name, group.status) == ("infer-0", "Pending")
    assert ("Normal", "DataCacheMatched") in events_of(group)
    assert [(v.name, v.type) for v in group.volumes] == [("model", "HostPathVolume")]
    assert [(m.name, m.mount_path, m.read_only) for m in group.containers[0].volume_mounts] == [
        ("model", "/model", True)
    ]
    assert [(t.key, t.value) for t in group.tags] == [("k8s.pod", "infer-0")]
    assert describe_one(client, cache_id).last_matched_time is not None
    (seen,) = admin.container_groups()
    assert seen["MatchedDataCaches"] == [
        {"Volume": "model", "DataCacheId": cache_id, "Path": "/models/qwen", "DiskGiB": 20}
    ]
    assert (seen["DataCacheBucket"], seen["DataCachePL"]) == ("ml", "PL2")

    admin.advance(60)
    (group,) = describe_groups(client, group_id)
    assert group.status == "Running" and group.containers[0].ready is True
    assert group.containers[0].current_state.state == "Running"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [("none", "DataCacheNotFound"), ("loading", "DataCacheNotReady"), ("other-bucket", "DataCacheNotFound")],
)
def test_a_group_without_an_available_cache_there_starts_with_an_empty_directory_and_says_so(
    client: Client, admin: EmulatorAdmin, setup: str, reason: str
) -> None:
    if setup == "loading":
        client.create_data_cache(create_request("/models/qwen", bucket="ml"))
    if setup == "other-bucket":
        available_cache(client, admin, bucket="team-a")
    group_id = create_group(client, group_request("infer-0", data_cache_bucket="ml"))
    admin.advance(60)
    (group,) = describe_groups(client, group_id)
    assert group.status == "Running"
    assert ("Warning", reason) in events_of(group) and ("Normal", "DataCacheMatched") not in events_of(group)
    assert admin.container_groups()[0]["MatchedDataCaches"] == []


def test_a_jobs_group_succeeds_and_a_deleted_group_is_gone(client: Client, admin: EmulatorAdmin) -> None:
    job = create_group(client, group_request("job-0", path=None, restart_policy="Never"))
    server = create_group(client, group_request("server-0", path=None))
    admin.advance(ONE_HOUR)
    statuses = {g.container_group_name: g.status for g in describe_groups(client)}
    assert statuses == {"job-0": "Succeeded", "server-0": "Running"}
    (done,) = describe_groups(client, job)
    assert done.succeeded_time and done.containers[0].current_state.exit_code == 0

    client.delete_container_group(
        models.DeleteContainerGroupRequest(region_id=REGION, container_group_id=server)
    )
    assert [g.container_group_id for g in describe_groups(client)] == [job]
    with pytest.raises(ClientException) as error:
        client.delete_container_group(
            models.DeleteContainerGroupRequest(region_id=REGION, container_group_id=server)
        )
    assert error.value.code == "InvalidContainerGroup.NotFound"


def test_a_client_token_makes_one_group_and_describe_pages(client: Client) -> None:
    first = create_group(client, group_request("infer-0", client_token="pod-uid-1"))
    assert create_group(client, group_request("infer-0", client_token="pod-uid-1")) == first
    with pytest.raises(ClientException) as error:
        create_group(client, group_request("other", client_token="pod-uid-1"))
    assert error.value.code == "IdempotentParameterMismatch"

    ids = [first] + [create_group(client, group_request(f"infer-{n}")) for n in range(1, 25)]
    page = client.describe_container_groups(
        models.DescribeContainerGroupsRequest(region_id=REGION, limit=20)
    ).body
    assert (len(page.container_groups), page.total_count) == (20, 25) and page.next_token
    rest = client.describe_container_groups(
        models.DescribeContainerGroupsRequest(region_id=REGION, limit=20, next_token=page.next_token)
    ).body.container_groups
    assert [g.container_group_id for g in page.container_groups + rest] == ids
    assert [g.container_group_id for g in describe_groups(client, ids[3], ids[7], "eci-unknown")] == [
        ids[3],
        ids[7],
    ]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"container": []}, "MissingParameter"),
        ({"restart_policy": "Sometimes"}, "InvalidParameter"),
        ({"data_cache_pl": "PL9"}, "InvalidParameter"),
    ],
)
def test_bad_requests_are_refused_with_the_parameter_named(
    client: Client, change: dict[str, Any], code: str
) -> None:
    request = group_request("bad")
    for key, value in change.items():
        setattr(request, key, value)
    with pytest.raises(ClientException) as error:
        client.create_container_group(request)
    assert error.value.code.startswith(code)
