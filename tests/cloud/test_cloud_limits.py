"""The most the CRD admits is what ECI (the emulator) accepts, and one more tag is refused:
the apply-time limits are the cloud's, less what the operator adds itself."""

from __future__ import annotations

import pytest

from datacache_operator.api.datacache import DataCacheSpec
from datacache_operator.cloud import EciClient, EciError
from datacache_operator.controllers.datacache import create_request, desired_cache
from datacache_operator.settings import OperatorSettings

REGION = "cn-hangzhou"
META = {"uid": "0" * 36, "namespace": "n" * 63, "name": "a" * 253}  # each as long as Kubernetes allows
SETTINGS = OperatorSettings(cluster_id="c" * 128, default_region=REGION)  # as long as the setting allows


def largest_spec(tag_count: int) -> DataCacheSpec:
    tags = {f"{index:03d}".ljust(128, "k"): "v" * 128 for index in range(tag_count)}
    return DataCacheSpec.model_validate(
        {
            "path": "/models/long",
            "dataSource": {"type": "URL", "options": {"url": "https://x/y"}},
            "tags": tags,
        }
    )


async def test_the_largest_datacache_the_crd_admits_is_created(eci: EciClient):
    desired = desired_cache(largest_spec(16), META, SETTINGS, None)
    cache_id = await eci.create(REGION, create_request(desired), client_token="largest")
    cache = await eci.describe(REGION, cache_id)
    assert cache is not None
    assert cache.name == desired.name and len(cache.name) == 128
    assert cache.tags == desired.tags and len(cache.tags) == 20


async def test_one_tag_more_is_what_the_cloud_refuses(eci: EciClient):
    desired = desired_cache(largest_spec(17), META, SETTINGS, None)
    with pytest.raises(EciError) as caught:
        await eci.create(REGION, create_request(desired), client_token="one-more")
    assert (caught.value.code, caught.value.http_status) == ("InvalidParameter", 400)
