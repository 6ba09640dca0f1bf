"""A bounded fault soak (issue #7): 50 DataCaches and 5 replications are created, updated and
deleted while ECI answers 10 % 500s and 10 % throttling with added latency, two operator
replicas elect a leader on a Lease, the current leader is killed with SIGKILL at random
moments (the other takes over; the killed one is started again, as Kubernetes would), and
the apiserver restarts once (etcd kept; a leader that cannot renew meanwhile exits and is
started again too). Afterwards the emulator's state must be exactly what the objects ask for.

Every random choice (the plan of operations, which objects are deleted or changed, when the
operator dies) comes from one seeded generator: `DATACACHE_SOAK_SEED=<n>` replays a run, and
a failure prints its seed. Waits are on conditions with deadlines, never fixed sleeps; "a
random moment" is a random number of ECI calls after an operation, so it lands while the
operator is busy.

A cache kept by `deletionPolicy: Retain` keeps the tags the operator gave it (owner uid,
namespace and name: whoever finds it can tell where it came from), so "no cache tagged by
the operator without an object" reads: none but those of objects deleted with Retain, and
each of those (deleted once Ready) still has exactly its one cache, not being deleted.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.integration.support import ACCESS_KEY_SECRET, Kube, OperatorProcess, wait_for
from tests.support.controlplane import ControlPlane, free_port

from datacache_operator import API_VERSION

SEED_VARIABLE = "DATACACHE_SOAK_SEED"
REGION = "cn-hangzhou"
SOURCE_REGION = "cn-hongkong"
COPY_REGIONS = ("cn-beijing", "cn-shanghai")
OWNER_UID_TAG = "eci.datacache.dev/owner-uid"
OWNER_NAMESPACE_TAG = "eci.datacache.dev/owner-namespace"
DATACACHES = 50
SOURCES = 5  # of the 50, in SOURCE_REGION: the replications' sources, never deleted
KILLS = 3
# Generous: the machine is small and shared; a healthy run settles in well under a minute.
SETTLE_TIMEOUT_S = 150.0
REPLICAS = ("soak-a", "soak-b")
LEASE = "eci-datacache-operator"
LEADER_ELECTION = {
    "DATACACHE_LEADER_ELECTION": "true",
    "DATACACHE_LEADER_ELECTION_LEASE_DURATION": "4",
    "DATACACHE_LEADER_ELECTION_RENEW_DEADLINE": "3",
    "DATACACHE_LEADER_ELECTION_RETRY_PERIOD": "0.5",
}
FAULTS = {"fault_500_rate": 0.1, "fault_throttle_rate": 0.1, "fault_latency_ms": 30}


@dataclass
class Cache:
    name: str
    region: str
    retain: bool
    retention: int
    uid: str = ""
    deleted: bool = False
    ready_when_deleted: bool = False  # a retained cache must then still exist

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "DataCache",
            "metadata": {"name": self.name},
            "spec": {
                "region": self.region,
                "path": f"/models/{self.name}",
                "retentionDays": self.retention,
                "deletionPolicy": "Retain" if self.retain else "Delete",
                "dataSource": {
                    "type": "URL",
                    "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"},
                },
            },
        }


@dataclass
class Replication:
    name: str
    source: str
    retain: bool
    tags: dict[str, str] = field(default_factory=dict)  # on the cn-beijing copy
    uid: str = ""
    deleted: bool = False

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "DataCacheReplication",
            "metadata": {"name": self.name},
            "spec": {
                "source": {"dataCacheRef": {"name": self.source}},
                "destinations": [
                    {"region": COPY_REGIONS[0], "tags": dict(self.tags)},
                    {"region": COPY_REGIONS[1]},
                ],
                "deletionPolicy": "Retain" if self.retain else "Delete",
            },
        }


@dataclass
class Step:
    what: str
    run: Callable[[], None]
    needs_operator: bool = False  # waits on the operator's work, so it cannot run while it is down


def tags_of(cache: dict[str, Any]) -> dict[str, str]:
    tags = cache.get("Tags") or []
    return dict(tags) if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def ready_for_generation(obj: dict[str, Any]) -> bool:
    ready = condition(obj, "Ready")
    generation = obj["metadata"]["generation"]
    return (
        ready.get("status") == "True"
        and ready.get("observedGeneration") == generation
        and (obj.get("status") or {}).get("observedGeneration") == generation
    )


class Soak:
    def __init__(
        self,
        kube: Kube,
        eci: Any,
        controlplane: ControlPlane,
        operators: dict[str, OperatorProcess],
        rng: random.Random,
    ) -> None:
        self.kube = kube
        self.eci = eci
        self.controlplane = controlplane
        self.operators = operators
        self.killed: list[str] = []
        self.rng = rng
        self.started = time.monotonic()
        self.timeline: list[str] = []
        self.last_problem_count = -1
        self.kills = 0
        self.apiserver_restarts = 0
        self.caches = [
            Cache(
                name=f"soak-{i:02d}",
                region=SOURCE_REGION if i < SOURCES else REGION,
                retain=i >= SOURCES and rng.random() < 0.3,
                retention=rng.choice((7, 14, 30)),
            )
            for i in range(DATACACHES)
        ]
        self.replications = [
            Replication(name=f"soak-rep-{i}", source=self.caches[i].name, retain=i == 2)
            for i in range(SOURCES)
        ]

    # --- what happened, for whoever reads a failure ----------------------------------------
    def note(self, message: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:7.1f}s {message}")

    # --- the plan ------------------------------------------------------------------------
    def plan(self) -> list[Step]:
        """Creates in chunks, each followed by a few updates and deletes of what exists."""
        rng = self.rng
        steps: list[Step] = []
        created: list[Cache] = []
        order = self.caches[SOURCES:]
        rng.shuffle(order)
        chunks = [self.caches[:SOURCES] + order[:5]] + [order[i : i + 5] for i in range(5, len(order), 5)]
        for index, chunk in enumerate(chunks):
            steps.append(Step(f"create {', '.join(c.name for c in chunk)}", self._creator(chunk)))
            if index == 0:
                steps.append(Step("create the replications", self._replications_creator()))
            created += chunk
            if chunk and rng.random() < 0.5:  # a delete right after the create: the cache may not exist yet
                quick = rng.choice([c for c in chunk if c.region == REGION])
                if not quick.retain:
                    quick.deleted = True
                    steps.append(Step(f"delete {quick.name} at once", self._deleter(quick)))
            for _ in range(rng.randint(1, 3)):
                target = rng.choice([c for c in created if c.region == REGION and not c.deleted])
                new = rng.choice([d for d in (3, 7, 14, 30, 60) if d != target.retention])
                steps.append(Step(f"retentionDays of {target.name} -> {new}", self._updater(target, new)))
            if index >= 2:
                for _ in range(rng.randint(0, 2)):
                    deletable = [c for c in created if c.region == REGION and not c.deleted]
                    target = rng.choice(deletable)
                    target.deleted = True
                    steps.append(
                        Step(
                            f"delete {target.name} ({'Retain' if target.retain else 'Delete'})",
                            self._deleter(target),
                        )
                    )
            if index == 4:
                rep = self.replications[0]
                steps.append(
                    Step(f"tags of {rep.name}'s {COPY_REGIONS[0]} copy", self._replication_tagger(rep))
                )
            if index == 6:
                for rep in self.replications[1:3]:
                    steps.append(Step(f"delete {rep.name} when Ready", self._replication_deleter(rep), True))
        for cache in self.caches:  # the plan set them to know what is left; the steps set them again
            cache.deleted = False
        return steps

    def _creator(self, chunk: list[Cache]) -> Callable[[], None]:
        def run() -> None:
            self.kube.apply([c.manifest() for c in chunk])
            found = {o["metadata"]["name"]: o for o in self.list("datacache")}
            for cache in chunk:
                cache.uid = found[cache.name]["metadata"]["uid"]

        return run

    def _replications_creator(self) -> Callable[[], None]:
        def run() -> None:
            self.kube.apply([r.manifest() for r in self.replications])
            found = {o["metadata"]["name"]: o for o in self.list("datacachereplication")}
            for rep in self.replications:
                rep.uid = found[rep.name]["metadata"]["uid"]

        return run

    def _updater(self, cache: Cache, retention: int) -> Callable[[], None]:
        def run() -> None:
            cache.retention = retention
            self.kube.apply(cache.manifest())

        return run

    def _deleter(self, cache: Cache) -> Callable[[], None]:
        def run() -> None:
            obj = self.kube.get("datacache", cache.name) or {}
            cache.ready_when_deleted = condition(obj, "Ready").get("status") == "True"
            cache.deleted = True
            self.kube.kubectl("delete", "datacache", cache.name, "--wait=false")

        return run

    def _replication_tagger(self, rep: Replication) -> Callable[[], None]:
        def run() -> None:
            rep.tags = {"soak": "tagged"}
            self.kube.apply(rep.manifest())

        return run

    def _replication_deleter(self, rep: Replication) -> Callable[[], None]:
        def run() -> None:
            # Deleting a replication before its copies exist is a test of its own; here the
            # copies are made first so that the policy decides what is left.
            self.kube.wait_condition("datacachereplication", rep.name, "Ready", "True", timeout=120)
            rep.deleted = True
            self.kube.kubectl("delete", "datacachereplication", rep.name, "--wait=false")

        return run

    # --- disruptions -----------------------------------------------------------------------
    def wait_for_calls(self, count: int) -> None:
        """Until ECI has answered `count` more calls: a random moment while the operator works."""
        before = self.calls()
        wait_for(lambda: self.calls() >= before + count, timeout=60, interval=0.05, what=f"{count} ECI calls")

    def calls(self) -> int:
        return sum(sum(outcomes.values()) for outcomes in self.eci.counters().values())

    def leader(self) -> str:
        found = self.kube.kubectl("get", "lease", LEASE, "-o", "json", check=False)
        return (
            str(json.loads(found.stdout)["spec"].get("holderIdentity") or "") if found.returncode == 0 else ""
        )

    def kill(self) -> None:
        """SIGKILL of the replica holding the Lease now."""
        holder = wait_for(self.leader, timeout=30, what="a leader")
        name = next(n for n, p in self.operators.items() if p.env["POD_NAME"] == holder)
        self.operators[name].kill()
        self.killed.append(name)
        self.kills += 1
        self.note(f"leader {name} killed (SIGKILL)")

    def restart(self) -> None:
        while self.killed:
            name = self.killed.pop()
            process = self.operators[name]
            # A new pod, as a ReplicaSet makes: a new identity, so the other replica takes over.
            process.env["POD_NAME"] = f"{name}-{self.kills}"
            process.start()
            self.note(f"{name} started again as {process.env['POD_NAME']}")

    def revive(self) -> None:
        """What Kubernetes does for a replica that exited (a leader that could not renew)."""
        for name, process in self.operators.items():
            if process.process is not None and process.process.poll() is not None and name not in self.killed:
                self.note(f"{name} exited with {process.process.returncode}; started again")
                process.start()

    def restart_apiserver(self) -> None:
        self.note("apiserver stopping (etcd kept)")
        self.controlplane.restart_apiserver()
        self.apiserver_restarts += 1
        self.note("apiserver ready again")

    def run(self) -> None:
        steps = self.plan()
        rng = self.rng
        # Kills at least 3 steps apart (at most 2 steps run while the operator is down), and
        # the apiserver restart while it is up.
        kill_after: set[int] = set()
        while len(kill_after) < KILLS + 1:
            candidate = rng.randrange(1, len(steps) - 1)
            if all(abs(candidate - other) >= 3 for other in kill_after):
                kill_after.add(candidate)
        apiserver_after = rng.choice(
            [i for i in range(2, len(steps) - 1) if not {i, i - 1, i - 2} & kill_after]
        )
        self.note(
            f"{len(steps)} steps; kills after {sorted(kill_after)}, apiserver restart after {apiserver_after}"
        )
        down = 0  # steps left to run while the operator is down
        for index, step in enumerate(steps):
            self.revive()
            if step.needs_operator and down:
                down = 0
                self.restart()
            step.run()
            self.note(step.what)
            if down:
                down -= 1
                if not down:
                    self.restart()
                continue
            if index in kill_after:
                self.wait_for_calls(rng.randint(1, 40))
                self.kill()
                down = rng.randint(0, 2)  # objects change while nobody watches
                if not down:
                    self.restart()
            elif index == apiserver_after:
                self.wait_for_calls(rng.randint(1, 20))
                self.restart_apiserver()
        if down:
            self.restart()
        assert self.kills >= KILLS and self.apiserver_restarts == 1, (self.kills, self.apiserver_restarts)

    # --- the invariants --------------------------------------------------------------------
    def settled(self) -> bool:
        self.revive()
        problems = self.problems()
        if len(problems) != self.last_problem_count:
            self.last_problem_count = len(problems)
            self.note(f"{len(problems)} problems" + (f", e.g. {problems[0]}" if problems else ""))
        return not problems

    def list(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.kube.kubectl("get", kind, "-o", "json").stdout)["items"]
        return items

    def ours(self) -> list[dict[str, Any]]:
        """Every cache in every region tagged with this test's namespace."""
        return [c for c in self.eci.caches() if tags_of(c).get(OWNER_NAMESPACE_TAG) == self.kube.namespace]

    def problems(self) -> list[str]:
        found: list[str] = []
        clouds = self.ours()
        owned: dict[str, list[dict[str, Any]]] = {}
        for cloud in clouds:
            owned.setdefault(tags_of(cloud)[OWNER_UID_TAG], []).append(cloud)
        objects = {o["metadata"]["name"]: o for o in self.list("datacache")}
        replications = {o["metadata"]["name"]: o for o in self.list("datacachereplication")}

        for cache in self.caches:
            obj = objects.get(cache.name)
            mine = owned.get(cache.uid, [])
            if cache.deleted:
                if obj is not None:
                    found.append(
                        f"{cache.name}: deleted but still there (finalizers {obj['metadata'].get('finalizers')})"
                    )
                elif not cache.retain and mine:
                    found.append(
                        f"{cache.name}: deleted (Delete) but left {[c['DataCacheId'] for c in mine]}"
                    )
                elif cache.retain and cache.ready_when_deleted and len(mine) != 1:
                    found.append(f"{cache.name}: deleted (Retain) when Ready, left {len(mine)} caches, not 1")
                elif cache.retain and any(c["Status"] == "Deleting" for c in mine):
                    found.append(f"{cache.name}: deleted (Retain) but its cache is being deleted")
                continue
            if obj is None:
                found.append(f"{cache.name}: missing from the apiserver")
                continue
            ids = [c["DataCacheId"] for c in mine]
            if len(mine) != 1:
                found.append(f"{cache.name}: {len(mine)} caches {ids}, not 1")
                continue
            (cloud,) = mine
            status = obj.get("status") or {}
            if status.get("dataCacheId") != cloud["DataCacheId"] or cloud["RegionId"] != cache.region:
                found.append(f"{cache.name}: status names {status.get('dataCacheId')}, the cloud has {ids}")
            if cloud["Status"] != "Available" or cloud.get("RetentionDays") != cache.retention:
                found.append(
                    f"{cache.name}: cache {cloud['Status']} with retention {cloud.get('RetentionDays')},"
                    f" spec {cache.retention}"
                )
            if not ready_for_generation(obj):
                found.append(f"{cache.name}: not Ready for generation {obj['metadata']['generation']}")

        for rep in self.replications:
            obj = replications.get(rep.name)
            mine = owned.get(rep.uid, [])
            if rep.deleted:
                regions = sorted(c["RegionId"] for c in mine)
                if obj is not None:
                    found.append(f"{rep.name}: deleted but still there")
                elif not rep.retain and mine:
                    found.append(f"{rep.name}: deleted (Delete) but left copies in {regions}")
                elif rep.retain and regions != sorted(COPY_REGIONS):
                    found.append(f"{rep.name}: deleted (Retain) but left copies in {regions}")
                continue
            if obj is None:
                found.append(f"{rep.name}: missing from the apiserver")
                continue
            entries = {d["region"]: d for d in (obj.get("status") or {}).get("destinations") or []}
            for region in COPY_REGIONS:
                copies = [c for c in mine if c["RegionId"] == region]
                if len(copies) != 1:
                    found.append(f"{rep.name}: {len(copies)} copies in {region}, not 1")
                elif entries.get(region, {}).get("dataCacheId") != copies[0]["DataCacheId"]:
                    found.append(f"{rep.name}: status of {region} does not name {copies[0]['DataCacheId']}")
                elif region == COPY_REGIONS[0] and rep.tags.items() - tags_of(copies[0]).items():
                    found.append(f"{rep.name}: {region} copy lacks the tags {rep.tags}")
            if not ready_for_generation(obj):
                found.append(f"{rep.name}: not Ready for generation {obj['metadata']['generation']}")

        # No cache tagged by the operator without an object: those of deleted objects were
        # checked above (none with Delete; the one kept with Retain), and there is no other owner.
        known = {c.uid for c in self.caches} | {r.uid for r in self.replications}
        for uid, leftovers in owned.items():
            if uid not in known:
                found.append(f"caches {[c['DataCacheId'] for c in leftovers]} of an unknown owner {uid}")
        return found

    def report(self) -> str:
        """The problems and the diagnostics, or why they could not be had."""
        try:
            return "\n".join(self.problems()) + "\n" + self.diagnostics()
        except Exception as error:  # e.g. the apiserver did not come back
            return f"(no diagnostics: {error!r})\n" + "\n".join(self.timeline)

    def diagnostics(self) -> str:
        objects = []
        for kind in ("datacache", "datacachereplication"):
            for obj in self.list(kind):
                status = obj.get("status") or {}
                ready = condition(obj, "Ready")
                synced = condition(obj, "Synced")
                objects.append(
                    f"  {kind}/{obj['metadata']['name']} gen={obj['metadata']['generation']}"
                    f" observed={status.get('observedGeneration')} id={status.get('dataCacheId')}"
                    f" status={status.get('status') or status.get('readyDestinations')}"
                    f" Ready={ready.get('status')}/{ready.get('reason')}@{ready.get('observedGeneration')}"
                    f" Synced={synced.get('status')}/{synced.get('reason')}"
                    f" deleting={bool(obj['metadata'].get('deletionTimestamp'))}"
                )
        clouds = [
            f"  {c['DataCacheId']} {c['RegionId']} {c['Status']} retention={c.get('RetentionDays')}"
            f" owner={tags_of(c).get('eci.datacache.dev/owner-name')}/{tags_of(c).get(OWNER_UID_TAG)}"
            for c in self.ours()
        ]
        # kopf's DEBUG lines (every watch event) drown the rest: the last of the others.
        logs = []
        for name, process in self.operators.items():
            lines = [line for line in process.log().splitlines() if "[DEBUG" not in line]
            logs.append(f"--- {name}\n" + "\n".join(lines[-50:]).replace(ACCESS_KEY_SECRET, "***"))
        log = "\n".join(logs)
        return "\n".join(
            [
                "timeline:",
                *self.timeline,
                "objects:",
                *objects,
                "caches tagged with the namespace:",
                *clouds,
                f"ECI call outcomes: {self.eci.counters()}",
                f"lease holder: {self.leader()}",
                "operator logs (tails):",
                log,
            ]
        )


@pytest.mark.timeout(480)  # above the run's own deadlines, so that they report first
def test_soak_faults_kills_and_an_apiserver_restart_leave_exact_state(
    kube: Kube,
    controlplane: ControlPlane,
    operator_env: dict[str, str],
    datacache_crds: list[str],
    eci: Any,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(1_000_000))
    print(f"soak seed {seed} ({SEED_VARIABLE}={seed} replays it)")
    eci.set_faults(**FAULTS)
    # kopf's DEBUG lines (each watch event of 55 objects) cost CPU that the soak needs.
    operators = {
        name: OperatorProcess(
            {
                **operator_env,
                **LEADER_ELECTION,
                "DATACACHE_OPERATOR_NAMESPACE": kube.namespace,
                "POD_NAME": name,
                "DATACACHE_LOG_LEVEL": "INFO",
                "DATACACHE_HEALTH_PORT": str(free_port()),
                "DATACACHE_METRICS_PORT": str(free_port()),
            },
            tmp_path / f"{name}.log",
        )
        for name in REPLICAS
    }
    for process in operators.values():
        process.start()
    soak = Soak(kube, eci, controlplane, operators, random.Random(seed))
    try:
        soak.run()
        soak.note("all steps done; waiting for the invariants")
        wait_for(soak.settled, timeout=SETTLE_TIMEOUT_S, interval=1.0, what="the invariants")
        soak.note("settled")
    except AssertionError as error:
        raise AssertionError(
            f"soak seed {seed} ({SEED_VARIABLE}={seed} replays it): {error}\n{soak.report()}"
        ) from None
    finally:
        for process in operators.values():
            process.stop()
    for process in operators.values():
        assert ACCESS_KEY_SECRET not in process.log(), "the access key secret leaked into an operator log"
    print("\n".join(soak.timeline))
