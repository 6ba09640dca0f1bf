"""Which cloud account a namespace's objects use (pure: EciAccounts and a namespace's labels
in, a choice out).

A namespace selected by no EciAccount uses the operator's own credentials (the account ""); by
exactly one, that account; by two or more, none: the objects are refused and nothing is
called, because either choice could build or delete a cache in the wrong account. An object
that already holds a cache keeps the account it was built in: a namespace moved to another
account is refused for it until the object is re-created.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OWN_ACCOUNT = ""  # the operator's own credentials


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression hold; an
    empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown to this operator: select nothing rather than too much
    return True


@dataclass(frozen=True)
class AccountChoice:
    """The account of a namespace: `name` ("" for the operator's own), or `conflict` naming
    every account that selects it when more than one does."""

    name: str = OWN_ACCOUNT
    conflict: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.conflict

    def shown(self) -> str:
        return f"EciAccount {self.name}" if self.name else "the operator's own credentials"


def account_for(namespace_labels: Mapping[str, str], accounts: Iterable[Mapping[str, Any]]) -> AccountChoice:
    """The choice for a namespace with these labels (`kubernetes.io/metadata.name` among them)
    among the EciAccounts (objects as the apiserver gives them; one being deleted is not chosen)."""
    matched = sorted(
        str(account["metadata"]["name"])
        for account in accounts
        if not (account.get("metadata") or {}).get("deletionTimestamp")
        # A missing selector selects nothing (the schema requires one; `{}` is every namespace).
        and "namespaceSelector" in (account.get("spec") or {})
        and selector_matches(account["spec"]["namespaceSelector"] or {}, namespace_labels)
    )
    if len(matched) > 1:
        return AccountChoice(conflict=tuple(matched))
    return AccountChoice(name=matched[0] if matched else OWN_ACCOUNT)


def served_namespaces(
    account: str, namespaces: Iterable[Mapping[str, Any]], accounts: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The namespaces (Namespace objects) whose choice is exactly `account`, sorted."""
    return sorted(
        str(ns["metadata"]["name"])
        for ns in namespaces
        if account_for((ns.get("metadata") or {}).get("labels") or {}, accounts)
        == AccountChoice(name=account)
    )


def conflict_message(namespace: str, choice: AccountChoice) -> str:
    named = " and ".join(choice.conflict)
    return (
        f"namespace {namespace} is selected by EciAccounts {named}; nothing is called until an "
        "administrator makes exactly one select it"
    )


def moved_message(held_in: str, choice: AccountChoice, cache_id: str) -> str:
    """Why an object whose cache was built in account `held_in` is refused now."""
    before = f"EciAccount {held_in}" if held_in else "the operator's own credentials"
    return (
        f"cache {cache_id} lives in the account of {before}, but this namespace now uses "
        f"{choice.shown()}: it is neither looked up, changed nor deleted with other credentials. "
        "Move the namespace back, or re-create the object to build its cache in the new account"
    )


def account_refusal(
    namespace: str, choice: AccountChoice, recorded: str | None, cache_id: str | None
) -> tuple[str, str] | None:
    """(reason, message) when the object may make no call with `choice`: the namespace is
    selected twice, or the object's cache (`cache_id`, built with the account `recorded` in its
    status) lives in another account. None when it may go on."""
    if not choice.usable:
        return "AccountConflict", conflict_message(namespace, choice)
    # A cache recorded with no account was built before accounts were: with the operator's own.
    held_in = recorded if recorded is not None else OWN_ACCOUNT
    if cache_id and held_in != choice.name:
        return "AccountChanged", moved_message(held_in, choice, cache_id)
    return None
