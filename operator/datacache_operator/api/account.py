"""The EciAccount kind (cluster-scoped, administrators only): which Alibaba Cloud credentials
the DataCaches and DataCacheReplications of which namespaces use.

A namespace matched by no EciAccount uses the operator's own credentials; one matched by two
is refused (no call). The credentials are an AccessKey pair in a Secret of a namespace the
administrator chooses (never read from a tenant's namespace unless the administrator names
it), or a RAM role the operator's own identity assumes with STS AssumeRole.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from datacache_operator import GROUP, VERSION
from datacache_operator.api.common import (
    ApiModel,
    Condition,
    ConditionType,
    conditions_schema_extra,
    duration_seconds,
)
from datacache_operator.api.schema import (
    AGE_COLUMN,
    FORBIDDEN,
    REQUIRED,
    PrinterColumn,
    ResourceDefinition,
    cel_rule,
    cel_rules,
    condition_column,
)

KIND = "EciAccount"
PLURAL = "eciaccounts"
# The key names of the operator's own credentials Secret (the chart's `credentials`).
ACCESS_KEY_ID_KEY = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ACCESS_KEY_SECRET_KEY = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a key name, not a secret
RAM_ROLE_ARN_PATTERN = r"^acs:ram::[0-9]+:role/[A-Za-z0-9.@_/-]+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_SESSION_SECONDS = 3600


def session_seconds(duration: str | None) -> int:
    """`sessionDuration` in whole seconds; unset: an hour, as STS's default."""
    return int(duration_seconds(duration)) if duration else DEFAULT_SESSION_SECONDS


class SecretReference(ApiModel):
    """An AccessKey pair in a Secret."""

    namespace: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Namespace of the Secret: one of the administrator's (the operator may read Secrets "
        "only where the chart lets it).",
    )
    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    access_key_id_key: str = Field(
        default=ACCESS_KEY_ID_KEY, min_length=1, description="Key of the AccessKey ID in the Secret."
    )
    access_key_secret_key: str = Field(
        default=ACCESS_KEY_SECRET_KEY, min_length=1, description="Key of the AccessKey secret in the Secret."
    )


class AccountCredentials(ApiModel):
    """Where the account's credentials come from: exactly one of secretRef and ramRoleArn."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "has(self.secretRef) || has(self.ramRoleArn)",
                "set one of secretRef (an AccessKey pair) and ramRoleArn (a role to assume)",
                reason=REQUIRED,
            ),
            cel_rule(
                "!(has(self.secretRef) && has(self.ramRoleArn))",
                "set secretRef or ramRoleArn, not both",
                reason=FORBIDDEN,
            ),
            cel_rule(
                "!has(self.sessionDuration) || has(self.ramRoleArn)",
                "sessionDuration applies to ramRoleArn only",
                field_path=".sessionDuration",
                reason=FORBIDDEN,
            ),
        )
    )

    secret_ref: SecretReference | None = Field(default=None, description="An AccessKey pair in a Secret.")
    ram_role_arn: str | None = Field(
        default=None,
        max_length=256,
        pattern=RAM_ROLE_ARN_PATTERN,
        description="A RAM role (acs:ram::ACCOUNT:role/NAME) the operator's own identity assumes with STS "
        "AssumeRole; its temporary keys are refreshed before they expire.",
    )
    session_duration: str | None = Field(
        default=None,
        description="Lifetime of the role's temporary keys, 15m to 12h (STS DurationSeconds; the role's "
        "own maximum applies). Default 1h.",
        json_schema_extra=cel_rules(
            cel_rule(
                "duration(self) >= duration('15m') && duration(self) <= duration('12h')",
                "sessionDuration must be a duration from 15m to 12h, e.g. 1h",
            )
        ),
    )


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector, as in metav1.LabelSelectorRequirement."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                "values must be set for In and NotIn, and only for them",
                field_path=".values",
            )
        )
    )

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] | None = Field(default=None, description="The values, for In and NotIn.")


class LabelSelector(ApiModel):
    """Namespaces by their labels, as in metav1.LabelSelector; {} selects every namespace."""

    match_labels: dict[str, str] | None = Field(default=None, description="Labels a namespace must have.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, description="Requirements a namespace's labels must meet (all of them)."
    )


class EciAccountSpec(ApiModel):
    """Which namespaces use which credentials."""

    namespace_selector: LabelSelector = Field(
        description="The namespaces whose DataCaches and DataCacheReplications use this account "
        "(kubernetes.io/metadata.name selects one by name)."
    )
    credentials: AccountCredentials = Field(description="The account's credentials.")
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="ECI calls a second with this account, all regions together (ECI's flow control is "
        "per account). Default: the operator's DATACACHE_RATE_LIMIT.",
    )


class EciAccountStatus(ApiModel):
    """What the operator found, written by it."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready: a harmless call with the credentials succeeded (the ECI or STS error code as "
        "the reason otherwise).",
        json_schema_extra=conditions_schema_extra(),
    )
    namespaces: list[str] | None = Field(
        default=None, description="The namespaces this account serves (those matched by it alone)."
    )


ECI_ACCOUNT = ResourceDefinition(
    group=GROUP,
    version=VERSION,
    kind=KIND,
    plural=PLURAL,
    singular="eciaccount",
    short_names=("eciacct",),
    categories=("eci",),
    description="Alibaba Cloud credentials (an AccessKey pair in a Secret, or a RAM role) for the "
    "DataCaches and DataCacheReplications of the namespaces it selects. Cluster-scoped: for "
    "administrators.",
    spec_model=EciAccountSpec,
    status_model=EciAccountStatus,
    scope="Cluster",
    printer_columns=(
        condition_column("Ready", ConditionType.READY, description="Whether the credentials work."),
        PrinterColumn(
            "Role", ".spec.credentials.ramRoleArn", description="The RAM role assumed, if any.", priority=1
        ),
        condition_column(
            "Reason", ConditionType.READY, "reason", description="Reason of the Ready condition.", priority=1
        ),
        AGE_COLUMN,
    ),
    labels={"app.kubernetes.io/part-of": "eci-datacache-operator"},
)
