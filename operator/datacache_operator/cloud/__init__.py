"""cloud layer: every ECI call of the operator goes through :class:`EciClient`.

Importing this package does not import ``alibabacloud_credentials`` (it reads its
environment at import time); building an :class:`EciClient` does.
"""

from datacache_operator.cloud.batcher import MAX_IDS_PER_DESCRIBE, DescribeBatcher
from datacache_operator.cloud.client import (
    OUTCOME_OK,
    CloudConfigurationError,
    CloudHooks,
    EciClient,
    NoHooks,
)
from datacache_operator.cloud.errors import EciError, ErrorCategory, classify, is_data_cache_not_found
from datacache_operator.cloud.models import (
    BUSY_STATUSES,
    TERMINAL_FAILURE_STATUSES,
    CacheEvent,
    CopyRequest,
    CreateRequest,
    DataSource,
    EipCreateParam,
    NetConfig,
    ObservedCache,
    UpdateRequest,
    redacted_options,
)
from datacache_operator.cloud.ratelimit import CallPriority, RegionRateLimiter, TokenBucket

__all__ = [
    "BUSY_STATUSES",
    "MAX_IDS_PER_DESCRIBE",
    "OUTCOME_OK",
    "TERMINAL_FAILURE_STATUSES",
    "CacheEvent",
    "CloudConfigurationError",
    "CloudHooks",
    "CopyRequest",
    "CallPriority",
    "CreateRequest",
    "DataSource",
    "DescribeBatcher",
    "EciClient",
    "EciError",
    "EipCreateParam",
    "ErrorCategory",
    "NetConfig",
    "NoHooks",
    "ObservedCache",
    "RegionRateLimiter",
    "TokenBucket",
    "UpdateRequest",
    "classify",
    "is_data_cache_not_found",
    "redacted_options",
]
