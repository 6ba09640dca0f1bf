"""A drift check that finds nothing new writes no status: only its `lastSyncTime` would
change, and at 10,000 objects that is a write and a watch event per object per interval.
The time is rewritten once it is ten stable intervals old, and whenever anything else changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from datacache_operator.reconcile.common import status_to_write

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cache(synced: str, **fields: object) -> dict[str, object]:
    return {"status": "Available", "dataCacheId": "edc-1", "lastSyncTime": synced, **fields}


def test_only_a_newer_sync_time_is_not_written_while_the_old_one_is_young() -> None:
    assert status_to_write(cache(ago(300)), cache(ago(0)), NOW, max_age=3000) is None


def test_an_old_sync_time_is_rewritten() -> None:
    after = cache(ago(0))
    assert status_to_write(cache(ago(3000)), after, NOW, max_age=3000) is after


def test_any_other_change_is_written_with_the_new_time() -> None:
    after = cache(ago(0), status="Loading")
    assert status_to_write(cache(ago(10)), after, NOW, max_age=3000) is after


def test_none_values_of_a_merge_patch_are_not_a_change() -> None:
    assert status_to_write(cache(ago(10)), cache(ago(0), message=None), NOW, max_age=3000) is None


def test_a_status_without_a_sync_time_gets_one() -> None:
    after = cache(ago(0))
    assert status_to_write({"status": "Available", "dataCacheId": "edc-1"}, after, NOW, 3000) is after


def test_each_copy_of_a_replication_counts_and_the_oldest_decides() -> None:
    def replication(first: str, second: str) -> dict[str, object]:
        return {
            "destinations": [
                {"region": "cn-beijing", "dataCacheId": "edc-2", "lastSyncTime": first},
                {"region": "cn-shanghai", "dataCacheId": "edc-3", "lastSyncTime": second},
            ]
        }

    assert status_to_write(replication(ago(60), ago(60)), replication(ago(0), ago(0)), NOW, 3000) is None
    after = replication(ago(0), ago(0))
    assert status_to_write(replication(ago(60), ago(3600)), after, NOW, 3000) is after


def test_an_unchanged_status_is_not_written() -> None:
    assert status_to_write(cache(ago(10)), cache(ago(10)), NOW, max_age=3000) is None
    assert status_to_write(cache(ago(4000)), cache(ago(4000), message=None), NOW, max_age=3000) is None
    assert status_to_write({"status": "Available"}, {"status": "Available"}, NOW, max_age=3000) is None


def loading(synced: str, progress: str) -> dict[str, object]:
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "Loading",
        "message": f"The data cache is Loading ({progress}).",
        "lastTransitionTime": ago(100),
    }
    return cache(synced, status="Loading", progress=progress, conditions=[ready])


def test_progress_alone_is_written_once_the_last_write_is_thirty_seconds_old() -> None:
    """Each poll of a loading cache sees a new progress: writing every one was six status
    writes (and watch events) per cache in a 30-second load."""
    assert status_to_write(loading(ago(10), "40%"), loading(ago(0), "55%"), NOW, max_age=3000) is None
    after = loading(ago(0), "70%")
    assert status_to_write(loading(ago(30), "40%"), after, NOW, max_age=3000) is after


def test_a_new_cloud_status_or_condition_goes_at_once_even_with_a_new_progress() -> None:
    after = loading(ago(0), "100%")
    after["status"] = "Available"
    assert status_to_write(loading(ago(1), "90%"), after, NOW, max_age=3000) is after
    failed = loading(ago(0), "90%")
    failed["conditions"] = [{**failed["conditions"][0], "reason": "Failed"}]  # type: ignore[index]
    assert status_to_write(loading(ago(1), "90%"), failed, NOW, max_age=3000) is failed
