"""Controllers write status through the status models: a patch holds exactly the fields given,
camelCase, times as metav1.Time writes them, None to remove a field; a misspelt field is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from datacache_operator.api.datacache import DataCacheStatus
from datacache_operator.api.replication import DestinationStatus
from datacache_operator.controllers.replication import CopyManager


def test_a_patch_holds_the_fields_given_and_none_removes() -> None:
    patch = DataCacheStatus(
        data_cache_id="edc-1", progress=None, last_sync_time=datetime(2026, 12, 6, 10, 0, 5, tzinfo=UTC)
    ).to_patch()
    assert patch == {"dataCacheId": "edc-1", "progress": None, "lastSyncTime": "2026-12-06T10:00:05Z"}
    assert DataCacheStatus.alias("cache_generation") == "cacheGeneration"
    assert DestinationStatus.alias("copy_generation") == "copyGeneration"


def test_a_misspelt_destination_field_is_refused_not_dropped() -> None:
    entry: dict[str, Any] = {"region": "cn-beijing"}
    manager = CopyManager.__new__(CopyManager)
    manager.entry, manager.region = entry, "cn-beijing"
    manager._note(failed_generation=3)
    assert entry == {"region": "cn-beijing", "failedGeneration": 3}
    with pytest.raises(TypeError, match="falied_generation"):
        manager._note(falied_generation=3)
