"""Each team's caches in its own cloud account, chosen per namespace by EciAccounts: through
the real apiserver, the operator process and the emulator serving three accounts (the
operator's own, team A's by an AccessKey pair in a Secret, team B's by a RAM role the operator
assumes over STS), with the official SDK and credentials library, unmodified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eci_datacache_emulator import AccountConfig, Emulator, EmulatorConfig, RoleConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin
from tests.integration.support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Kube, OperatorProcess, wait_for
from tests.integration.test_datacache_lifecycle import datacache, unique
from tests.support.controlplane import ControlPlane

from datacache_operator import GROUP, VERSION

pytestmark = pytest.mark.controlplane

OWN_ID, A_ID, B_ID = "1000000000000001", "1000000000000002", "1000000000000003"
A_KEY, A_SECRET = "team-a-key", "team-a-SECRET-never-shown-5d1e"  # noqa: S105 - a test credential
B_ROLE = f"acs:ram::{B_ID}:role/eci-datacache"
A_RATE = 2  # team A's calls a second, all regions together


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    config = EmulatorConfig(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        account_id=OWN_ID,
        accounts=[
            AccountConfig(A_ID, {A_KEY: A_SECRET}),
            AccountConfig(B_ID, {}, roles=[RoleConfig("eci-datacache", trusted_accounts=(OWN_ID,))]),
        ],
        tls_dir=tmp_path_factory.mktemp("emulator-tls"),
        rate_limit=0,
        seed=11,
    )
    with Emulator(config).in_thread() as running:
        yield running


@pytest.fixture
def cloud(clouds: Emulator) -> Iterator[EmulatorAdmin]:
    admin = EmulatorAdmin(clouds.admin_url)
    admin.reset()
    yield admin
    admin.reset()


class Teams:
    """Two tenant namespaces, an administrators' namespace holding team A's keys, and the
    EciAccounts (cluster-scoped) this test made, deleted afterwards."""

    def __init__(self, controlplane: ControlPlane, namespace: str) -> None:
        self.controlplane = controlplane
        self.a = Kube(controlplane, namespace)
        self.b = Kube(controlplane, f"{namespace}-b")
        self.admin = f"{namespace}-accounts"
        self.prefix = namespace
        for name in (self.b.namespace, self.admin):
            controlplane.kubectl("create", "namespace", name)
        controlplane.kubectl(
            "create",
            "secret",
            "generic",
            "keys-of-team-a",
            "-n",
            self.admin,
            f"--from-literal=ALIBABA_CLOUD_ACCESS_KEY_ID={A_KEY}",
            f"--from-literal=ALIBABA_CLOUD_ACCESS_KEY_SECRET={A_SECRET}",
        )

    def account(
        self, team: str, selects: list[str], credentials: dict[str, Any] | None = None, **spec: Any
    ) -> str:
        """Apply EciAccount `<prefix>-<team>` selecting the namespaces `selects` by name (team
        A's keys, or team B's role, unless `credentials` says otherwise)."""
        name = f"{self.prefix}-{team}"
        selector = {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": selects}]
        }
        if credentials is None and team == "a":
            credentials = {"secretRef": {"namespace": self.admin, "name": "keys-of-team-a"}}
        elif credentials is None:
            credentials = {"ramRoleArn": B_ROLE, "sessionDuration": "15m"}
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "EciAccount",
            "metadata": {"name": name},
            "spec": {"namespaceSelector": selector, "credentials": credentials, **spec},
        }
        self.controlplane.apply(manifest)
        return name

    def get_account(self, name: str) -> dict[str, Any]:
        found = self.controlplane.kubectl("get", "eciaccount", name, "-o", "json")
        result: dict[str, Any] = json.loads(found.stdout)
        return result

    def account_ready(self, name: str, status: str = "True", reason: str | None = None) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            found = self.get_account(name)
            condition = next(
                (c for c in found.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {}
            )
            ok = condition.get("status") == status and reason in (None, condition.get("reason"))
            return found if ok else None

        return wait_for(ready, timeout=60, what=f"EciAccount {name} Ready={status} {reason or ''}")

    def cleanup(self) -> None:
        for team in ("a", "b", "c"):
            self.controlplane.kubectl("delete", "eciaccount", f"{self.prefix}-{team}", "--ignore-not-found")


@pytest.fixture
def teams(controlplane: ControlPlane, namespace: str) -> Iterator[Teams]:
    made = Teams(controlplane, namespace)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def operator(
    operator_env: dict[str, str], datacache_crds: list[str], clouds: Emulator, teams: Teams, tmp_path: Path
) -> Iterator[OperatorProcess]:
    env = {
        **operator_env,
        "ECI_ENDPOINT": clouds.endpoint,
        "DATACACHE_NAMESPACES": f"{teams.a.namespace},{teams.b.namespace}",
        "DATACACHE_STS_ENDPOINT": clouds.sts_endpoint,
        "SSL_CERT_FILE": str(clouds.ca_file),  # the emulator's STS is HTTPS, under its own CA
    }
    running = OperatorProcess(env, tmp_path / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
        log = running.log()
        assert A_SECRET not in log and ACCESS_KEY_SECRET not in log, "a secret leaked into the log"


def cache_ids(cloud: EmulatorAdmin, account: str) -> set[str]:
    return {c["DataCacheId"] for c in cloud.caches(account=account)}


def ready_cache(team: Kube, name: str) -> dict[str, Any]:
    return team.wait_condition("datacache", name, "Ready", "True", timeout=90)


def message_of(obj: dict[str, Any], type_: str = "Ready") -> str:
    return str(next(c for c in obj["status"]["conditions"] if c["type"] == type_)["message"])


def test_two_namespaces_on_two_accounts_build_in_their_own_accounts_only(
    operator: OperatorProcess, teams: Teams, cloud: EmulatorAdmin
) -> None:
    a = teams.account("a", [teams.a.namespace], rateLimit=A_RATE)
    b = teams.account("b", [teams.b.namespace])
    assert teams.account_ready(a)["status"]["namespaces"] == [teams.a.namespace]
    assert teams.account_ready(b)["status"]["namespaces"] == [teams.b.namespace]

    names = [unique("a") for _ in range(4)]
    for name in names:
        teams.a.apply(datacache(name))
    teams.b.apply(datacache("b-model"))
    built_a = {ready_cache(teams.a, name)["status"]["dataCacheId"] for name in names}
    in_b = ready_cache(teams.b, "b-model")
    assert {teams.a.get("datacache", n)["status"]["account"] for n in names} == {a}  # type: ignore[index]
    assert in_b["status"]["account"] == b

    assert cache_ids(cloud, A_ID) == built_a
    assert cache_ids(cloud, B_ID) == {in_b["status"]["dataCacheId"]}
    assert not cache_ids(cloud, OWN_ID) & (built_a | cache_ids(cloud, B_ID))

    # Team A's calls, every region together, never more than its rate limit in any second.
    per_second = cloud.calls_per_second(account=A_ID).get(A_ID, {})
    assert sum(per_second.values()) >= 2 * len(names) and max(per_second.values()) <= A_RATE

    # Team B's temporary keys expire (the emulator's clock jumps past the session): the
    # library assumes the role again before its calls, and none of them fails.
    assumed = len(cloud.calls(action="AssumeRole"))
    cloud.advance(901)
    calls_before = len(cloud.calls(account=B_ID))
    wait_for(
        lambda: any(c["action"] == "DescribeDataCaches" for c in cloud.calls(account=B_ID)[calls_before:]),
        what="team B's next poll after the expiry",
    )
    assert {c["outcome"] for c in cloud.calls(account=B_ID)} == {"Success"}, cloud.calls(account=B_ID)
    assert len(cloud.calls(action="AssumeRole")) > assumed
    shown = json.dumps([teams.a.get("datacache", n) for n in names] + [teams.get_account(a)])
    assert A_SECRET not in shown
    assert A_KEY not in shown


def test_bad_or_revoked_credentials_name_the_account_and_code_while_others_keep_working(
    operator: OperatorProcess, teams: Teams, cloud: EmulatorAdmin
) -> None:
    a = teams.account("a", [teams.a.namespace])
    b = teams.account("b", [teams.b.namespace])
    teams.account_ready(a)
    teams.a.apply(datacache("model"))
    ready_cache(teams.a, "model")

    cloud.disable_key(A_KEY)  # an administrator deactivated team A's key
    refused = teams.a.wait_condition("datacache", "model", "Synced", "False", timeout=60)
    message = message_of(refused, "Synced")
    assert message.startswith(f"EciAccount {a}: InvalidAccessKeyId.Inactive"), message
    teams.account_ready(a, "False", "InvalidAccessKeyIdInactive")

    teams.b.apply(datacache("still-works"))  # team B's account is not affected
    assert ready_cache(teams.b, "still-works")["status"]["account"] == b

    missing_role = {"ramRoleArn": f"acs:ram::{B_ID}:role/not-there"}
    c = teams.account("c", ["nobody"], credentials=missing_role)
    assert "STS AssumeRole: " in message_of(teams.account_ready(c, "False", "EntityNotExistRole"))

    teams.controlplane.kubectl("delete", "secret", "keys-of-team-a", "-n", teams.admin)
    cloud.enable_key(A_KEY)
    gone = teams.account_ready(a, "False", "CredentialsNotReady")
    assert f"Secret {teams.admin}/keys-of-team-a not found" in message_of(gone)
    teams.a.wait_condition("datacache", "model", "Ready", "False", reason="AccountNotReady", timeout=90)


def test_a_namespace_moving_between_accounts_is_refused_and_nothing_is_deleted_with_other_keys(
    operator: OperatorProcess, teams: Teams, cloud: EmulatorAdmin
) -> None:
    a = teams.account("a", [teams.a.namespace])
    b = teams.account("b", [teams.b.namespace])
    teams.b.apply(datacache("model", deletionPolicy="Delete"))
    cache_id = ready_cache(teams.b, "model")["status"]["dataCacheId"]

    teams.account("a", [teams.a.namespace, teams.b.namespace])  # now both select team B
    conflict = teams.b.wait_condition("datacache", "model", "Stalled", "True", reason="AccountConflict")
    assert f"EciAccounts {a} and {b}" in message_of(conflict)

    teams.account("b", ["nobody"])  # team B moved to team A's account
    moved = teams.b.wait_condition("datacache", "model", "Stalled", "True", reason="AccountChanged")
    assert f"cache {cache_id} lives in the account of EciAccount {b}" in message_of(moved)
    assert teams.account_ready(a)["status"]["namespaces"] == sorted([teams.a.namespace, teams.b.namespace])

    teams.b.kubectl("delete", "datacache", "model", "--wait=false")
    teams.b.wait_condition("datacache", "model", "Ready", "False", reason="AccountChanged")
    assert cache_id in cache_ids(cloud, B_ID)  # its deletion waits: never with team A's keys
    assert not [c for c in cloud.calls(account=A_ID) if c["action"] == "DeleteDataCache"]

    teams.account("a", [teams.a.namespace])
    teams.account("b", [teams.b.namespace])  # moved back: deleted where it lives
    wait_for(lambda: teams.b.get("datacache", "model") is None, timeout=90, what="the deletion")
    wait_for(lambda: cache_id not in cache_ids(cloud, B_ID), what="the cache gone from team B's account")
