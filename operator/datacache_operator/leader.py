"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it.

Only the holder reconciles. A candidate takes the Lease when it is free (no holder, or a
holder that has not renewed for LeaseDuration as measured on *our* clock from when we last
saw the record change, so clock skew between replicas does not matter). The holder renews
every RetryPeriod; if it cannot renew within RenewDeadline, or someone else holds the Lease,
it stops acting at once and exits (controller-runtime's behaviour), to be restarted with
fresh state. On SIGTERM it releases the Lease (empty holder), so the next candidate takes
over at its next retry instead of after a whole LeaseDuration.

The Lease gives no fencing. `check_may_act` is called before every cloud call and every
status or pod write: a holder that was frozen (SIGSTOP, a long GC pause, a partition) and
resumes finds its last renewal older than RenewDeadline and exits before acting. What
remains (a call already on the wire during a handover) is covered by the ClientToken and the
owner tags: a second create or copy is never made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from datacache_operator import kube
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger("datacache_operator.leader")

LEASE_API = "coordination.k8s.io/v1"
EXIT_LOST = 1


class LeaseHandedOver(RuntimeError):
    """An action after this replica handed the Lease over on its way out: refused, not fatal."""


def default_identity() -> str:
    """The pod's name (downward API) in a cluster, host name and pid elsewhere."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(
        self,
        settings: OperatorSettings,
        identity: str | None = None,
        on_change: Callable[[bool], None] = lambda leading: None,
        clock: Callable[[], float] = time.monotonic,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.settings = settings
        self.identity = identity or settings.leader_election_identity or default_identity()
        self.namespace = settings.operator_namespace
        self.name = settings.leader_election_lease_name
        self.duration = settings.leader_election_lease_duration
        self.on_change = on_change
        self.clock = clock
        self._exit = exit
        self.leading = False
        self.handed_over = False  # released on the way out: nothing may act any more
        self._renewed_at = -math.inf  # our clock, taken before the renewal that succeeded
        self._observed: dict[str, Any] | None = None  # the Lease spec as last read
        self._observed_at = -math.inf  # our clock, when that spec last changed

    # ---- one round of the Lease protocol (read, then create or replace) -----------------

    def _try_acquire_or_renew(self) -> bool:
        if self.handed_over:  # on the way out: never take back what was handed over
            return False
        api = kube.coordination_api()
        duration = math.ceil(self.duration)
        response: Any  # an HTTP response (_preload_content=False), not the client's model
        spec: dict[str, Any]
        try:
            response = api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
        except ApiException as error:
            if error.status != 404:
                raise
            spec = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": _now(),
                "renewTime": _now(),
                "leaseTransitions": 0,
            }
            body: Any = {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(spec)
            return True
        lease = json.loads(response.data)
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        held_elsewhere = holder and holder != self.identity
        expires = self._observed_at + float(spec.get("leaseDurationSeconds") or duration)
        if held_elsewhere and expires > self.clock():
            return False
        mine = holder == self.identity
        lease["spec"] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": spec.get("acquireTime") if mine and spec.get("acquireTime") else _now(),
            "renewTime": _now(),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
        }
        try:  # optimistic: the resourceVersion read above, one writer wins
            api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self._observe(lease["spec"])
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = self.clock()

    @property
    def holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    async def _round(self) -> bool:
        started = self.clock()
        try:
            won = await asyncio.to_thread(self._try_acquire_or_renew)
        except Exception as error:  # the apiserver away for a moment: the deadline decides
            logger.warning(f"lease {self.namespace}/{self.name}: {type(error).__name__}: {error}")
            return False
        if won:
            self._renewed_at = started
        return won

    # ---- the life of a candidate ----------------------------------------------------------

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Until this process holds the Lease (True), or `stop` is set first (False)."""
        logger.info(f"{self.identity}: waiting to lead (lease {self.namespace}/{self.name})")
        while not stop.is_set():
            if await self._round():
                self.leading = True
                logger.info(f"{self.identity}: became the leader (lease {self.namespace}/{self.name})")
                self.on_change(True)
                return True
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.leader_election_retry_period)
            except TimeoutError:
                pass
        return False

    async def keep(self) -> str:
        """Renew every RetryPeriod while leading; returns why leadership ended."""
        while True:
            await asyncio.sleep(self.settings.leader_election_retry_period)
            if self.handed_over:
                continue  # on the way out: no renewal and no verdict; the process ends soon
            if await self._round():
                continue
            if self.holder and self.holder != self.identity:
                return f"the lease is held by {self.holder}"
            if self.clock() - self._renewed_at >= self.settings.leader_election_renew_deadline:
                return f"could not renew the lease within {self.settings.leader_election_renew_deadline:g} s"

    def check_may_act(self) -> None:
        """Called before every action: exits at once unless the last renewal is fresh."""
        if self.handed_over:
            raise LeaseHandedOver(f"{self.identity} has handed the lease over")
        if not self.leading:
            self.lose("not the leader")
        age = self.clock() - self._renewed_at
        if age >= self.settings.leader_election_renew_deadline:
            self.lose(f"the last renewal of the lease is {age:.1f} s old")

    def lose(self, reason: str) -> None:
        """Stop acting at once: exit, to be restarted with fresh state."""
        self.leading = False
        logger.error(f"{self.identity}: leader election lost ({reason}); exiting")
        self.on_change(False)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        self._exit(EXIT_LOST)

    async def release(self) -> None:
        """Hand the Lease over (empty holder) once the guarded work has stopped."""
        if not self.leading:
            return
        self.leading = False
        self.handed_over = True
        self.on_change(False)
        try:
            await asyncio.to_thread(self._release)
        except Exception as error:
            logger.warning(f"could not release lease {self.namespace}/{self.name}: {error}")
            return
        logger.info(f"{self.identity}: released the lease {self.namespace}/{self.name}")

    def _release(self) -> None:
        api = kube.coordination_api()
        response: Any = api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
        lease = json.loads(response.data)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        lease["spec"] = {
            **spec,
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _now(),
            "acquireTime": _now(),
        }
        api.replace_namespaced_lease(self.name, self.namespace, lease)
