"""Deleting a replication: one region's retryable error does not hold up the others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.reconcile.common import owner_tags
from datacache_operator.settings import OperatorSettings


class FlakyRegionCloud:
    """cn-beijing answers 500 to every call; cn-shanghai holds one tagged copy."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []
        tags = owner_tags("", "uid-1", "ns", "rep")
        self.shanghai = ObservedCache(
            data_cache_id="edc-sh", region="cn-shanghai", status="Available", tags=tags
        )

    async def find_by_tags(self, region: str, tags: Mapping[str, str]) -> list[ObservedCache]:
        if region == "cn-beijing":
            raise EciError("InternalError", "try later", http_status=500)
        return [self.shanghai] if self.shanghai else []

    async def describe(self, region: str, data_cache_id: str) -> ObservedCache | None:
        return None

    async def delete(self, region: str, data_cache_id: str) -> bool:
        self.deleted.append((region, data_cache_id))
        return True


def body() -> dict[str, Any]:
    return {
        "metadata": {"uid": "uid-1", "namespace": "ns", "name": "rep"},
        "spec": {
            "source": {"dataCacheId": "edc-src", "region": "cn-hongkong"},
            "destinations": [{"region": "cn-beijing"}, {"region": "cn-shanghai"}],
            "deletionPolicy": "Delete",
        },
        "status": {
            "destinations": [
                {"region": "cn-beijing", "dataCacheId": "edc-bj"},
                {"region": "cn-shanghai", "dataCacheId": "edc-sh"},
            ]
        },
    }


async def test_a_retryable_error_in_one_region_still_deletes_the_others_and_keeps_the_finalizer():
    cloud = FlakyRegionCloud()
    controller = ReplicationController(OperatorSettings(), cloud, read_object=_no_object)  # type: ignore[arg-type]
    done, events, status = await controller.finalize(body())
    assert status is None
    assert cloud.deleted == [("cn-shanghai", "edc-sh")]
    assert not done  # cn-beijing is tried again on the next attempt
    assert [e.reason for e in events] == ["Deleting"]


async def _no_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    return None
