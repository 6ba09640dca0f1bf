"""One pass of an EciAccount: its credentials tried with a harmless call (a DescribeDataCaches
by a tag nothing carries, in the default region), and the namespaces it serves.

An EciAccount makes nothing in the cloud, so it has no finalizer: once it is deleted, its
namespaces use the operator's own credentials, and their objects whose caches were made with it
are refused (`AccountChanged`) rather than served with other keys.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from datacache_operator.api.account import EciAccountStatus
from datacache_operator.cloud.accounts import AccountCredentialsError, secret_of
from datacache_operator.cloud.errors import EciError
from datacache_operator.controllers.accounts import AccountDirectory
from datacache_operator.controllers.base import PassResult, PollingController
from datacache_operator.reconcile.accounts import served_namespaces
from datacache_operator.reconcile.common import ConditionValue, Event
from datacache_operator.settings import OperatorSettings

CREDENTIALS_NOT_READY = "CredentialsNotReady"
PROBE_TAG = {"eci.datacache.dev/probe": "credentials"}  # on no cache: the answer is empty


class AccountController(PollingController):
    def __init__(
        self,
        settings: OperatorSettings,
        directory: AccountDirectory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(settings, directory.clients.own, clock, rng, accounts=directory)
        self.directory = directory
        self._known: dict[str, tuple[str, tuple[str, str] | None]] = {}  # uid -> (name, its Secret)

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        meta = body["metadata"]
        uid, name = meta["uid"], meta["name"]
        status = self.current_status(body)
        events: list[Event] = []
        now = self.clock()
        known = self._known.get(uid)
        secret = secret_of(body)
        if known is not None and known[1] != secret:
            self.directory.forget(name, known[1])  # the old Secret's keys are not used again
        self._known[uid] = (name, secret)
        namespaces = self.directory.namespaces()
        if namespaces is not None:  # else the list is left as last seen, not emptied
            served = served_namespaces(name, namespaces, await self.directory.accounts())
            status.update(EciAccountStatus(namespaces=served).to_patch())
        served = list(status.get("namespaces") or [])
        region = self.settings.default_region
        try:
            cloud = await self.directory.client_of(body)
            await cloud.find_by_tags(region, PROBE_TAG)
        except AccountCredentialsError as error:
            message = f"{error}."
            values = [ConditionValue("Ready", "False", CREDENTIALS_NOT_READY, message)]
            return self._conclude(uid, status, values, meta.get("generation"), now, 30.0, events)
        except EciError as error:
            reason, message, delay = self._failed_call(uid, error, events)
            values = [ConditionValue("Ready", "False", reason, message)]
            return self._conclude(uid, status, values, meta.get("generation"), now, delay, events)
        self._failures.pop(uid, None)
        serving = ", ".join(served) if served else "no namespace yet"
        message = f"DescribeDataCaches in {region} succeeded with these credentials; serving {serving}."
        values = [ConditionValue("Ready", "True", "Verified", message)]
        delay = self.settings.poll_interval_stable
        return self._conclude(uid, status, values, meta.get("generation"), now, delay, events)

    async def _finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        return True, [], None  # nothing in the cloud (and no finalizer is put on)

    def forget(self, uid: str) -> None:
        """The EciAccount is gone: its client and Secret go too."""
        known = self._known.pop(uid, None)
        if known is not None:
            self.directory.forget(*known)
        super().forget(uid)
