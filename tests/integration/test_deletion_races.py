"""A delete that arrives while the operator is in the middle of a pass (found while building
the fault soak): kopf runs the delete handler while the daemon's pass is still creating, so
the finalizer must wait for that pass, or the new cache outlives its object."""

from __future__ import annotations

from typing import Any

from tests.integration.support import Kube, OperatorProcess, wait_for
from tests.integration.test_datacache_lifecycle import caches_owned_by, datacache, unique
from tests.integration.test_replication import copies_owned_by, ready_source, ref, replication

from datacache_operator.api.common import OWNER_UID_TAG


def _looked_up_at(eci: Any, region: str, path: str) -> bool:
    """The describe at the bucket and path that comes right before the first create (or copy):
    for the object's own cache (its create's reply lost) or another one there."""
    return any(
        c["region"] == region and c["params"].get("Path") == path
        for c in eci.calls(action="DescribeDataCaches")
    )


def test_deleted_while_its_create_is_in_flight_leaves_no_cache(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    eci.set_faults(fault_latency_ms=2000, actions=["CreateDataCache"])  # a create that takes 2 s
    name = unique("race")
    operator.stop()
    kube.apply(datacache(name))
    operator.start()
    uid = kube.get("datacache", name)["metadata"]["uid"]  # type: ignore[index]
    region = operator.env["DATACACHE_DEFAULT_REGION"]
    wait_for(
        lambda: _looked_up_at(eci, region, f"/models/{name}"),
        interval=0.02,
        what="the lookup before the create",
    )
    kube.kubectl("delete", "datacache", name, "--wait=false")  # the create is on its way now

    wait_for(lambda: kube.get("datacache", name) is None, timeout=60, what="the object to go")
    wait_for(
        lambda: [
            c for c in eci.calls(action="CreateDataCache") if c["params"].get("Path") == f"/models/{name}"
        ],
        timeout=30,
        what="the create to be answered",
    )
    leftovers = caches_owned_by(eci, uid)
    assert all(c["Status"] == "Deleting" for c in leftovers), leftovers
    wait_for(lambda: not caches_owned_by(eci, uid), timeout=30, what=f"no cache tagged {OWNER_UID_TAG}={uid}")


def test_replication_deleted_while_its_copy_is_in_flight_leaves_no_copy(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    ready_source(kube, source := unique("src"))
    eci.set_faults(fault_latency_ms=2000, actions=["CopyDataCache"])  # a copy that takes 2 s
    name = unique("race")
    operator.stop()
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, deletionPolicy="Delete"))
    operator.start()
    uid = kube.get("datacachereplication", name)["metadata"]["uid"]  # type: ignore[index]
    wait_for(
        lambda: _looked_up_at(eci, "cn-beijing", f"/models/{source}"),
        interval=0.02,
        what="the lookup before the copy",
    )
    kube.kubectl("delete", "datacachereplication", name, "--wait=false")  # the copy is on its way now

    wait_for(lambda: kube.get("datacachereplication", name) is None, timeout=60, what="the object to go")
    wait_for(
        lambda: [
            c
            for c in eci.calls(action="CopyDataCache")
            if c["params"].get("DestinationRegionId") == "cn-beijing"
            and c["params"].get("Tag.1.Value") == uid
        ],
        timeout=30,
        what="the copy to be answered",
    )
    leftovers = copies_owned_by(eci, uid, "cn-beijing")
    assert all(c["Status"] == "Deleting" for c in leftovers), leftovers
    wait_for(lambda: not copies_owned_by(eci, uid, "cn-beijing"), timeout=30, what="no copy left")
