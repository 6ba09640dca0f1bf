"""The operator process's collector settings: full collections kept out of bursts, cyclic
garbage still freed without anyone asking."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from datacache_operator.main import FULL_COLLECTION_EVERY, calm_garbage_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.itself = self  # a cycle: only the collector frees it


@pytest.mark.usefixtures("collector_restored")
def test_start_up_objects_are_out_of_sight_and_full_collections_rare() -> None:
    young, middle, _ = gc.get_threshold()
    calm_garbage_collector()
    assert gc.get_freeze_count() > 10_000  # the imported modules, at least
    assert gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY)


@pytest.mark.usefixtures("collector_restored")
def test_cycles_made_after_start_up_are_still_freed_by_the_young_collections() -> None:
    calm_garbage_collector()
    gc.collect(0)  # the young count from zero: no collection between these two lines
    gone = weakref.ref(Node())
    assert gone() is not None
    # Enough new containers for several young collections: no explicit gc.collect().
    kept = [[] for _ in range(50 * gc.get_threshold()[0])]
    assert gone() is None
    del kept
