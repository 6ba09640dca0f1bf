"""API layer: pydantic models of each kind; the CRDs in deploy/crds/ are generated from them."""

from datacache_operator.api.common import ApiModel, Condition, ConditionStatus, ConditionType, DeletionPolicy
from datacache_operator.api.conditions import (
    condition_status,
    format_time,
    get_condition,
    is_condition_true,
    set_condition,
    to_reason,
)
from datacache_operator.api.datacache import (
    DATACACHE,
    DataCache,
    DataCacheSpec,
    DataCacheStatus,
    DataSource,
    DataSourceType,
    EipCreateParam,
    InternetChargeType,
    Isp,
    MissingSecretKeyError,
    NetConfig,
    SecretKeyToOption,
    SecretOptionsRef,
)

__all__ = [
    "DATACACHE",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DataCache",
    "DataCacheSpec",
    "DataCacheStatus",
    "DataSource",
    "DataSourceType",
    "DeletionPolicy",
    "EipCreateParam",
    "InternetChargeType",
    "Isp",
    "MissingSecretKeyError",
    "NetConfig",
    "SecretKeyToOption",
    "SecretOptionsRef",
    "condition_status",
    "format_time",
    "get_condition",
    "is_condition_true",
    "set_condition",
    "to_reason",
]
