"""Which account a namespace's objects use (reconcile/accounts.py)."""

from __future__ import annotations

from typing import Any

import pytest

from datacache_operator.reconcile.accounts import (
    OWN_ACCOUNT,
    AccountChoice,
    account_for,
    account_refusal,
    selector_matches,
    served_namespaces,
)


def account(name: str, selector: dict[str, Any], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return {"metadata": meta, "spec": {"namespaceSelector": selector}}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


@pytest.mark.parametrize(
    ("selector", "labels", "matched"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "b"}}, {"team": "b"}, True),
        ({"matchLabels": {"team": "b"}}, {"team": "a"}, False),
        (
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
            {"team": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": ""}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {"team": "x"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "Gt", "values": ["1"]}]}, {"team": "2"}, False),
        (
            {"matchLabels": {"env": "prod"}, "matchExpressions": [{"key": "team", "operator": "Exists"}]},
            {"env": "prod"},
            False,
        ),
    ],
)
def test_label_selectors_as_kubernetes_reads_them(selector: dict, labels: dict, matched: bool) -> None:
    assert selector_matches(selector, labels) is matched


def test_a_namespace_uses_the_one_account_that_selects_it_or_the_operators_own() -> None:
    accounts = [
        account("team-a", {"matchLabels": {"team": "a"}}),
        account("team-b", {"matchLabels": {"team": "b"}}),
    ]
    assert account_for({"team": "b"}, accounts) == AccountChoice(name="team-b")
    assert account_for({"team": "c"}, accounts) == AccountChoice(name=OWN_ACCOUNT)
    assert account_for({"team": "c"}, []).shown() == "the operator's own credentials"


def test_a_namespace_selected_twice_uses_neither_and_says_which() -> None:
    accounts = [
        account("team-b", {"matchLabels": {"team": "b"}}),
        account("everyone", {}),
        account("leaving", {}, deleting=True),  # being deleted: not chosen
    ]
    choice = account_for({"kubernetes.io/metadata.name": "ml", "team": "b"}, accounts)
    assert choice.conflict == ("everyone", "team-b") and not choice.usable
    reason, message = account_refusal("ml", choice, None, None)  # type: ignore[misc]
    assert reason == "AccountConflict"
    assert "EciAccounts everyone and team-b" in message


def test_a_cache_built_in_one_account_is_not_touched_from_another() -> None:
    moved = AccountChoice(name="team-b")
    reason, message = account_refusal("ml", moved, OWN_ACCOUNT, "edc-123")  # type: ignore[misc]
    assert reason == "AccountChanged"
    assert "edc-123 lives in the account of the operator's own credentials" in message
    assert "EciAccount team-b" in message and "re-create the object" in message
    assert account_refusal("ml", moved, "team-b", "edc-123") is None  # where it was built
    assert account_refusal("ml", moved, OWN_ACCOUNT, None) is None  # nothing built yet
    # Built before accounts were recorded: with the operator's own credentials.
    assert account_refusal("ml", moved, None, "edc-123")[0] == "AccountChanged"  # type: ignore[index]
    assert account_refusal("ml", AccountChoice(), None, "edc-123") is None


def test_an_account_serves_the_namespaces_it_alone_selects() -> None:
    accounts = [
        account("team-b", {"matchLabels": {"team": "b"}}),
        account("prod", {"matchLabels": {"env": "prod"}}),
    ]
    namespaces = [
        namespace("b-dev", team="b"),
        namespace("b-prod", team="b", env="prod"),
        namespace("a", team="a"),
    ]
    assert served_namespaces("team-b", namespaces, accounts) == ["b-dev"]
    assert served_namespaces(OWN_ACCOUNT, namespaces, accounts) == ["a"]


def test_an_account_without_a_selector_selects_nothing() -> None:
    broken = {"metadata": {"name": "broken"}, "spec": {}}
    assert account_for({"team": "b"}, [broken]) == AccountChoice(name=OWN_ACCOUNT)
