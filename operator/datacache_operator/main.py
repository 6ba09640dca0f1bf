"""`datacache-operator run`: the kopf wiring, and nothing else. Decorators live here and
nowhere else; each handler hands the object to the runtime (`runtime.py`), which drives a
controller (`controllers/`) and posts what comes back.

Every kind is registered from one table (`KINDS`): every watch event kept by the one
scheduler (a real change, the start of a deletion among them, makes the object due at once).
The passes put the finalizer on and take it off themselves (`runtime.py`): kopf's own handling
cost two patches and a watch round trip per object before its first pass. A kind is one entry
(EciAccount, the third, is cluster-scoped and has no finalizer).

The pod webhook, health and metrics are served outside kopf's run (every replica serves
them, leader or not); the scheduler and the pod binder run inside it (events are kopf's).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kopf

from datacache_operator import GROUP, VERSION, kube, runtime
from datacache_operator.admission.server import WebhookServer
from datacache_operator.api import account as account_api
from datacache_operator.api import datacache as datacache_api
from datacache_operator.api import replication as replication_api
from datacache_operator.cloud.accounts import AccountClients, eci_client_factory
from datacache_operator.cloud.client import EciClient
from datacache_operator.controllers import rollouts
from datacache_operator.controllers.accounts import AccountDirectory
from datacache_operator.controllers.base import PollingController
from datacache_operator.controllers.datacache import DataCacheController
from datacache_operator.controllers.eciaccount import AccountController
from datacache_operator.controllers.pods import PodBinder
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.leader import LeaderElection, default_identity
from datacache_operator.metrics import HealthServer, Metrics
from datacache_operator.reconcile.binding import cache_usable_change, copy_usable_change
from datacache_operator.settings import OperatorSettings, add_settings_arguments, settings_from_args

logger = logging.getLogger("datacache_operator")

ControllerFactory = Callable[[OperatorSettings, AccountDirectory, PodBinder], PollingController]


def roller() -> Callable[[str, str, str], Awaitable[list[str]]]:
    """Rolling opted-in workloads onto a cache's new revision, with the operator's kube calls."""
    return functools.partial(
        rollouts.roll,
        list_workloads=kube.list_workloads,
        read_workload=kube.read_workload,
        patch_workload=kube.patch_workload,
    )


@dataclass(frozen=True)
class Kind:
    """One custom kind: what the generic layers know of it, and how to build its controller."""

    spec: runtime.KindSpec
    controller: ControllerFactory


KINDS = (
    Kind(
        runtime.KindSpec(
            datacache_api.KIND,
            datacache_api.PLURAL,
            "the data cache is",
            datacache_api.cloud_statuses,
            cache_usable_change,
        ),
        lambda settings, accounts, pods: DataCacheController(
            settings,
            accounts.clients.own,
            kube.read_secret,
            users=pods.users,
            accounts=accounts,
            revision_users=pods.users_by_id,
            roll=roller() if settings.rollouts else None,
        ),
    ),
    Kind(
        runtime.KindSpec(
            replication_api.KIND,
            replication_api.PLURAL,
            "the copies are",
            replication_api.cloud_statuses,
            copy_usable_change,
        ),
        lambda settings, accounts, pods: ReplicationController(
            settings, accounts.clients.own, kube.get_object, users=pods.users, accounts=accounts
        ),
    ),
    Kind(
        runtime.KindSpec(
            account_api.KIND,
            account_api.PLURAL,
            "nothing in the cloud is",
            lambda status: (),
            lambda before, after, region: (False, False),
            finalizer=False,
        ),
        lambda settings, accounts, pods: AccountController(settings, accounts),
    ),
)


class NoDiffBase(kopf.DiffBaseStorage):
    """No change handlers here (the runtime decides what is a change), so nothing to diff:
    kopf's own storage deep-copies every body on every event to build an essence no one reads."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


# Events posted at once. kopf's default is a worker per object with no cap, each post on a TLS
# connection of its own (256 KiB of buffer): memory would grow with a burst's size. Events
# beyond these wait in kopf's queue, a few hundred bytes each.
EVENT_POSTERS = 16


# Gen1 collections between full ones (Python's default: 10). kopf's per-event objects are
# cyclic, so a burst makes many collections; a full one walks the whole heap while every thread
# waits, and ECI calls keep their rate-limit slots through the pause. Young collections, which
# free that garbage, stay as they are; full ones still run, rarely.
FULL_COLLECTION_EVERY = 1000


def calm_garbage_collector() -> None:
    """Keep full collections out of bursts: what start-up built (about 165,000 objects, the
    imported modules mostly: a full collection of them alone takes 115 ms on an idle core) is
    moved out of the collector's sight for good, and full collections are rare."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)


def register(
    registry: kopf.OperatorRegistry,
    settings: OperatorSettings,
    metrics: Metrics,
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Declare every handler on `registry` (settings decide intervals and namespaces);
    `on_stopped` runs once no pass, status write or ECI call is left."""

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="startup")
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 310
        settings.networking.request_timeout = 60
        settings.posting.level = logging.INFO
        settings.posting.worker_limit = EVENT_POSTERS
        operator_settings = await runtime.with_cluster_id(given_settings)
        cloud = EciClient(operator_settings, hooks=metrics, guard=kube.check_may_act)
        build = eci_client_factory(operator_settings, hooks=metrics, guard=kube.check_may_act)
        accounts = AccountDirectory(AccountClients(cloud, build))
        accounts.start()
        binder = PodBinder(
            operator_settings,
            kube.list_pods,
            kube.patch_pod,
            kube.get_object,
            kube.patch_status,
            runtime.post_event,
            on_ungated=metrics.on_pod_ungated,
            on_waiting=metrics.on_pods_waiting,
        )
        kinds = {
            kind.spec.plural: runtime.Registered(
                kind.spec, kind.controller(operator_settings, accounts, binder)
            )
            for kind in KINDS
        }
        memo.shared = runtime.prepare(
            operator_settings, metrics, kinds, cloud=cloud, binder=binder, accounts=accounts
        )

    given_settings = settings

    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        shared: runtime.Shared | None = getattr(memo, "shared", None)  # None: start-up failed
        if shared is not None:
            await runtime.stop(shared)
        if on_stopped is not None:
            # The Lease is handed over here, not once kopf has returned: kopf then waits up to
            # 5 s for every task begun after it started, the webhook's kept-alive connections
            # among them, and the next leader would wait that long.
            await on_stopped()
        await runtime.flush_events()

    for kind in KINDS:
        _register_kind(registry, kind)


def _register_kind(registry: kopf.OperatorRegistry, kind: Kind) -> None:
    """The one handler of each kind: every event kept by the scheduler, a pass at once on a
    real change."""

    # The filter sees every event (kept for the next pass); the handler runs only on a real
    # change, so it logs only then.
    @kopf.on.event(
        GROUP,
        VERSION,
        kind.spec.plural,
        registry=registry,
        when=functools.partial(runtime.observe, kind.spec.plural),
        id=f"{kind.spec.plural}_wake",
    )
    def wake_on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime.wake(body, memo)


def configure_logging(settings: OperatorSettings) -> None:
    """kopf's own log set-up: JSON lines on request, each with the object it is about."""
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=settings.log_level in ("DEBUG", "INFO"),
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    logging.getLogger().setLevel(settings.log_level)


async def serve(settings: OperatorSettings) -> None:
    """Health, metrics and the pod webhook first (every replica serves them, leader or not),
    then kopf until a signal: at once, or once this replica leads (leader election)."""
    metrics = Metrics()
    metrics.eci_rate_limit.set(settings.rate_limit)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    health = HealthServer(metrics)
    if settings.health_port:
        await health.start(settings.health_port)
    webhook = WebhookServer(settings, metrics) if settings.webhook_port else None
    if webhook is not None:
        await webhook.start()
    try:
        if settings.leader_election:
            await _lead_then_operate(settings, metrics)
        else:
            metrics.set_leader(True)
            await _operate(settings, metrics)
    finally:
        if webhook is not None:
            await webhook.stop()
        await health.stop()


async def _operate(
    settings: OperatorSettings, metrics: Metrics, on_stopped: Callable[[], Awaitable[None]] | None = None
) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, settings, metrics, on_stopped)
    await kopf.operator(
        registry=registry,
        # kopf's own default asks the passwd database, which has no entry for the image's
        # numeric user: the process would exit before it started.
        identity=settings.leader_election_identity or default_identity(),  # type: ignore[arg-type]
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
    )


async def _lead_then_operate(settings: OperatorSettings, metrics: Metrics) -> None:
    """Wait for the Lease, reconcile while holding it, hand it over on a signal. Losing it
    ends the process at once (`LeaderElection.lose`)."""
    election = LeaderElection(settings, on_change=metrics.set_leader)
    kube.set_action_guard(election.check_may_act)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # kopf puts its own handlers in once it runs
        loop.add_signal_handler(signum, stop.set)

    # Resumed after a SIGSTOP: check the Lease's age before anything else gets to act.
    def check_after_resume() -> None:
        if election.leading:
            election.check_may_act()

    loop.add_signal_handler(signal.SIGCONT, check_after_resume)
    if not await election.acquire(stop) or stop.is_set():
        await election.release()
        return
    keeper = asyncio.create_task(election.keep())
    operator = asyncio.create_task(_operate(settings, metrics, on_stopped=election.release))
    try:
        done, _ = await asyncio.wait({keeper, operator}, return_when=asyncio.FIRST_COMPLETED)
        if keeper in done:
            election.lose(keeper.result())
    finally:
        keeper.cancel()
        # kopf has finished (a signal) or failed: nothing acts any more, so the next
        # candidate may take over at its next retry.
        await election.release()
    operator.result()


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings)
    calm_garbage_collector()
    asyncio.run(serve(settings))
    return 0
