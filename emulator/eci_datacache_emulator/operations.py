"""The five DataCache operations: validation, idempotency, quota and the state changes.

Choices where ECI documents nothing, so that clients can rely on them:

* Unknown ``DataCacheId`` on Update, Delete and Copy: 404 ``DataCache.NotFound``.
  DescribeDataCaches simply leaves unknown ids out, as public client code expects.
* Update is allowed from Available and UpdateFailed, Delete from Available, Failed and
  UpdateFailed; Delete of a cache already Deleting succeeds and changes nothing; anything
  else is 400 ``IncorrectStatus`` (retry later).
* Update rebuilds (Updating) when ``Size`` or the data source changes, or when it names
  them on an UpdateFailed cache; Name, tags, resource group, retention and network apply
  at once. ``RetentionDays`` on Update counts from the update ("renew"). Given tags replace
  all tags. ``Bucket`` is the cache's identity: a different one is ``InvalidParameter``.
* Create requires ``Path`` (pods mount the cache by it). Describe without ``Bucket`` lists
  every bucket. At most 20 ``DataCacheId.N`` per Describe (the batch size clients use).
* Delete by ``Bucket`` + ``Path`` deletes every cache at that address.
* Copy: Bucket, Path and Name default to the source's; retention, tags and resource group
  are the copy's own. The destination must be another region.
* ``Size`` 20-65536 GiB (the build disk is an ESSD PL1, whose range that is),
  ``RetentionDays`` 1-3650, at most 20 tags (key up to 128, value up to 128 characters,
  keys not starting with ``aliyun`` or ``acs:``, neither keys nor values containing
  ``http://`` or ``https://``, all in any case), ``Name`` up to 128 characters.
* A ClientToken is scoped to (region, action). The same token with the same parameters
  returns the first answer (same ``DataCacheId``); with different ones it is 400
  ``IdempotentParameterMismatch``. Tokens of Create, Copy and Update are forgotten when
  their cache is gone, so a create after an out-of-band deletion makes a new cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .containers import ContainerGroupService
from .errors import ApiError, data_cache_not_found, incorrect_status, invalid_parameter, missing_parameter
from .outcomes import SourceAssessment, assess_source
from .state import (
    DELETABLE_STATUSES,
    DELETING,
    UPDATABLE_STATUSES,
    UPDATE_FAILED,
    CloudState,
    DataCache,
    TokenRecord,
    source_fingerprint,
)
from .wire import Parameters

DEFAULT_BUCKET = "default"
RESERVED_BUCKET = "eci-system"
DEFAULT_SIZE_GIB = 20
SIZE_RANGE_GIB = (20, 65536)
RETENTION_RANGE_DAYS = (1, 3650)
DESCRIBE_LIMIT_RANGE = (1, 20)
MAX_IDS_PER_DESCRIBE = 20
MAX_TAGS = 20
MAX_TAG_LENGTH = 128
MAX_NAME_LENGTH = 128
MAX_PATH_LENGTH = 1024
MAX_CLIENT_TOKEN_LENGTH = 64
DATA_SOURCE_TYPES = ("URL", "NAS", "OSS", "SNAPSHOT")
EIP_FIELDS = ("Bandwidth", "CommonBandwidthPackage", "InternetChargeType", "PublicIpAddressPoolId", "ISP")
_REGION = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ID_PREFIXES = {
    "SecurityGroupId": "sg-",
    "VSwitchId": "vsw-",
    "EipInstanceId": "eip-",
    "ResourceGroupId": "rg-",
    "EipCreateParam.CommonBandwidthPackage": "cbwp-",
    "EipCreateParam.PublicIpAddressPoolId": "pippool-",
}


@dataclass(frozen=True)
class Limits:
    quota: int  # caches per region, 0 = unlimited


class DataCacheService:
    def __init__(self, state: CloudState, limits: Limits) -> None:
        self.state = state
        self.limits = limits
        self._actions: dict[str, Callable[[Parameters], dict[str, Any]]] = {
            "CreateDataCache": self.create,
            "DescribeDataCaches": self.describe,
            "UpdateDataCache": self.update,
            "DeleteDataCache": self.delete,
            "CopyDataCache": self.copy,
        }
        self.containers = ContainerGroupService(state, self._once)
        self._actions.update(self.containers.actions)

    def handles(self, action: str) -> bool:
        return action in self._actions

    def call(self, action: str, params: Parameters) -> dict[str, Any]:
        self.state.settle()
        return self._actions[action](params)

    # ---- operations ----------------------------------------------------------------------

    def create(self, params: Parameters) -> dict[str, Any]:
        region = _region(params, "RegionId")
        token = _client_token(params)
        bucket = _bucket(params)
        path = _path(params, required=True)
        name = params.text("Name", max_length=MAX_NAME_LENGTH)
        size = params.integer("Size", minimum=SIZE_RANGE_GIB[0], maximum=SIZE_RANGE_GIB[1])
        retention = params.integer(
            "RetentionDays", minimum=RETENTION_RANGE_DAYS[0], maximum=RETENTION_RANGE_DAYS[1]
        )
        source_type, options = _data_source(params)
        network = _network(params)
        tags = _tags(params)
        resource_group = _prefixed_id(params, "ResourceGroupId")

        def perform() -> tuple[dict[str, Any], str]:
            self._check_quota(region)
            cache = self.state.new_cache(
                region_id=region,
                bucket=bucket,
                path=path,
                size=size or DEFAULT_SIZE_GIB,
                operation="create",
                source_type=source_type,
                options=options,
                assessment=assess_source(source_type, options),
            )
            cache.name = name
            cache.tags = tags
            cache.resource_group_id = resource_group
            cache.network = network
            if retention is not None:
                self.state.set_retention(cache, retention, cache.creation_time)
            return {"DataCacheId": cache.data_cache_id}, cache.data_cache_id

        return self._once(region, "CreateDataCache", token, params, perform)

    def describe(self, params: Parameters) -> dict[str, Any]:
        region = _region(params, "RegionId")
        limit = params.integer("Limit", minimum=DESCRIBE_LIMIT_RANGE[0], maximum=DESCRIBE_LIMIT_RANGE[1])
        limit = limit or DESCRIBE_LIMIT_RANGE[1]
        ids = params.text_list("DataCacheId")
        if len(ids) > MAX_IDS_PER_DESCRIBE:
            raise invalid_parameter("DataCacheId", f"At most {MAX_IDS_PER_DESCRIBE} ids per call.")
        bucket = params.text("Bucket")
        path = params.text("Path")
        resource_group = params.text("ResourceGroupId")
        wanted_tags = params.tags()
        after_seq = _decode_next_token(params.text("NextToken"))

        wanted_ids = set(ids)

        def selected(cache: DataCache) -> bool:
            if wanted_ids and cache.data_cache_id not in wanted_ids:
                return False
            if bucket is not None and cache.bucket != bucket:
                return False
            if path is not None and cache.path != path:
                return False
            if resource_group is not None and cache.resource_group_id != resource_group:
                return False
            cache_tags = dict(cache.tags)
            # A tag filter without a value matches any value of that key.
            return all(
                key in cache_tags and (not value or cache_tags[key] == value) for key, value in wanted_tags
            )

        matching = [cache for cache in self.state.caches(region) if selected(cache)]
        remaining = [cache for cache in matching if cache.seq > after_seq]
        page = remaining[:limit]
        more = len(remaining) > limit
        return {
            "TotalCount": len(matching),
            "NextToken": _encode_next_token(page[-1].seq) if more else "",
            "DataCaches": [self.state.api_view(cache) for cache in page],
        }

    def update(self, params: Parameters) -> dict[str, Any]:
        region = _region(params, "RegionId")
        data_cache_id = params.text("DataCacheId", required=True)
        token = _client_token(params)
        bucket = params.text("Bucket")
        name = params.text("Name", max_length=MAX_NAME_LENGTH)
        size = params.integer("Size", minimum=SIZE_RANGE_GIB[0], maximum=SIZE_RANGE_GIB[1])
        retention = params.integer(
            "RetentionDays", minimum=RETENTION_RANGE_DAYS[0], maximum=RETENTION_RANGE_DAYS[1]
        )
        source_given = any(key.startswith("DataSource.") for key in params.raw)
        source_type, options = _data_source(params) if source_given else (None, {})
        network = _network(params)
        tags = _tags(params)
        resource_group = _prefixed_id(params, "ResourceGroupId")

        def perform() -> tuple[dict[str, Any], str]:
            cache = self._existing(region, data_cache_id)
            if bucket is not None and bucket != cache.bucket:
                raise invalid_parameter("Bucket", "The bucket of a data cache cannot be changed.")
            if cache.status not in UPDATABLE_STATUSES:
                raise incorrect_status(cache.data_cache_id, cache.status, "UpdateDataCache")
            source_changed = source_given and (
                source_fingerprint(source_type, options) != cache.data_source_fingerprint
            )
            size_changed = size is not None and size != cache.size
            retry_failed = cache.status == UPDATE_FAILED and (source_given or size is not None)
            if name is not None:
                cache.name = name
            if tags:
                cache.tags = tags
            if resource_group is not None:
                cache.resource_group_id = resource_group
            if network:
                cache.network = {**cache.network, **network}
            if retention is not None:
                self.state.set_retention(cache, retention, self.state.clock.now())
            if size is not None:
                cache.size = size
            if source_given:
                self.state.set_source(cache, source_type, options, assess_source(source_type, options))
            if source_changed or size_changed or retry_failed:
                self.state.begin_update(cache)
            self.state.touch()
            return {}, cache.data_cache_id

        return self._once(region, "UpdateDataCache", token, params, perform)

    def delete(self, params: Parameters) -> dict[str, Any]:
        region = _region(params, "RegionId")
        data_cache_id = params.text("DataCacheId")
        token = _client_token(params)
        bucket = params.text("Bucket")
        path = _path(params, required=False)
        if data_cache_id is None and path is None:
            raise missing_parameter("DataCacheId")

        def perform() -> tuple[dict[str, Any], str | None]:
            if data_cache_id is not None:
                cache = self._existing(region, data_cache_id)
                if (bucket is not None and cache.bucket != bucket) or (
                    path is not None and cache.path != path
                ):
                    raise data_cache_not_found(data_cache_id, region)
                targets = [cache]
            else:
                address_bucket = bucket or DEFAULT_BUCKET
                targets = [
                    cache
                    for cache in self.state.caches(region)
                    if cache.bucket == address_bucket and cache.path == path
                ]
                if not targets:
                    raise ApiError(
                        404,
                        "DataCache.NotFound",
                        f"No data cache in bucket {address_bucket} with path {path} exists in region {region}.",
                    )
            for cache in targets:
                if cache.status != DELETING and cache.status not in DELETABLE_STATUSES:
                    raise incorrect_status(cache.data_cache_id, cache.status, "DeleteDataCache")
            for cache in targets:
                if cache.status != DELETING:
                    self.state.begin_delete(cache)
            return {}, targets[0].data_cache_id

        return self._once(region, "DeleteDataCache", token, params, perform)

    def copy(self, params: Parameters) -> dict[str, Any]:
        region = _region(params, "RegionId")
        data_cache_id = params.text("DataCacheId", required=True)
        destination = _region(params, "DestinationRegionId")
        if destination == region:
            raise invalid_parameter("DestinationRegionId", "A copy must go to another region.")
        token = _client_token(params)
        bucket = params.text("Bucket")
        if bucket is not None:
            bucket = _bucket(params)
        path = _path(params, required=False)
        name = params.text("Name", max_length=MAX_NAME_LENGTH)
        retention = params.integer(
            "RetentionDays", minimum=RETENTION_RANGE_DAYS[0], maximum=RETENTION_RANGE_DAYS[1]
        )
        tags = _tags(params)
        resource_group = _prefixed_id(params, "ResourceGroupId")

        def perform() -> tuple[dict[str, Any], str]:
            source = self._existing(region, data_cache_id)
            if source.status != "Available":
                raise incorrect_status(source.data_cache_id, source.status, "CopyDataCache")
            self._check_quota(destination)
            copy = self.state.new_cache(
                region_id=destination,
                bucket=bucket or source.bucket,
                path=path or source.path,
                size=source.size,
                operation="copy",
                source_type=source.data_source_type,
                options={},
                assessment=SourceAssessment(source.source_description, source.data_size_gib),
            )
            # The copy carries the source's data source as it is shown (secrets already masked).
            copy.data_source_options = dict(source.data_source_options)
            copy.data_source_fingerprint = source.data_source_fingerprint
            copy.name = name if name is not None else source.name
            copy.tags = tags
            copy.resource_group_id = resource_group
            copy.copied_from = {"DataCacheId": source.data_cache_id, "RegionId": source.region_id}
            if retention is not None:
                self.state.set_retention(copy, retention, copy.creation_time)
            return {"DataCacheId": copy.data_cache_id}, copy.data_cache_id

        return self._once(region, "CopyDataCache", token, params, perform)

    # ---- shared rules --------------------------------------------------------------------

    def _existing(self, region: str, data_cache_id: str) -> DataCache:
        cache = self.state.find(region, data_cache_id)
        if cache is None:
            raise data_cache_not_found(data_cache_id, region)
        return cache

    def _check_quota(self, region: str) -> None:
        quota = self.limits.quota
        if quota and self.state.count(region) >= quota:
            raise ApiError(
                403,
                "QuotaExceeded",
                f"DataCache quota exceeded. Region {region} allows at most {quota} data caches "
                "(MaxDataCacheCount).",
            )

    def _once(
        self,
        region: str,
        action: str,
        token: str | None,
        params: Parameters,
        perform: Callable[[], tuple[dict[str, Any], str | None]],
    ) -> dict[str, Any]:
        """Run `perform` unless this ClientToken already did; then answer as the first time."""
        if token is None:
            return perform()[0]
        fingerprint = hashlib.sha256(
            json.dumps(sorted(params.without("ClientToken").items())).encode()
        ).hexdigest()
        key = (region, action, token)
        record = self.state.tokens.get(key)
        if record is not None:
            if record.fingerprint != fingerprint:
                raise ApiError(
                    400,
                    "IdempotentParameterMismatch",
                    "The request uses the same client token as a previous, but non-identical request.",
                )
            return dict(record.response)
        response, data_cache_id = perform()
        self.state.tokens[key] = TokenRecord(
            region, action, token, fingerprint, dict(response), data_cache_id
        )
        self.state.touch()
        return response


# ---- parameter rules ---------------------------------------------------------------------


def _region(params: Parameters, name: str) -> str:
    region = params.text(name, required=True)
    assert region is not None
    if not _REGION.match(region):
        raise ApiError(400, "InvalidRegionId", f"The specified region {region!r} does not exist.")
    return region


def _client_token(params: Parameters) -> str | None:
    token = params.text("ClientToken")
    if token is not None and (
        len(token) > MAX_CLIENT_TOKEN_LENGTH or not token.isascii() or not token.isprintable()
    ):
        raise invalid_parameter("ClientToken", "It must be at most 64 printable ASCII characters.")
    return token


def _bucket(params: Parameters) -> str:
    bucket = params.text("Bucket") or DEFAULT_BUCKET
    if bucket == RESERVED_BUCKET:
        raise invalid_parameter("Bucket", f"The bucket {RESERVED_BUCKET} is reserved by the system.")
    if not _BUCKET.match(bucket):
        raise invalid_parameter("Bucket", "Use up to 63 letters, digits, '.', '_' or '-'.")
    return bucket


def _path(params: Parameters, *, required: bool) -> str | None:
    path = params.text("Path", required=required, max_length=MAX_PATH_LENGTH)
    if path is not None and (not path.startswith("/") or "/../" in f"{path}/"):
        raise invalid_parameter("Path", "It must be an absolute path without '..'.")
    return path


def _data_source(params: Parameters) -> tuple[str | None, dict[str, str]]:
    source_type = params.text("DataSource.Type")
    options = params.options()
    if source_type is None and options:
        raise missing_parameter("DataSource.Type")
    if source_type is not None and source_type not in DATA_SOURCE_TYPES:
        raise invalid_parameter("DataSource.Type", f"Use one of {', '.join(DATA_SOURCE_TYPES)}.")
    return source_type, options


def _prefixed_id(params: Parameters, name: str) -> str | None:
    value = params.text(name)
    prefix = _ID_PREFIXES[name]
    if value is not None and not value.startswith(prefix):
        raise invalid_parameter(name, f"It must start with {prefix!r}.")
    return value


def _network(params: Parameters) -> dict[str, Any]:
    network: dict[str, Any] = {}
    for name in ("SecurityGroupId", "VSwitchId", "EipInstanceId"):
        value = _prefixed_id(params, name)
        if value is not None:
            network[name] = value
    eip = params.object("EipCreateParam")
    unknown = set(eip) - set(EIP_FIELDS)
    if unknown:
        raise invalid_parameter(f"EipCreateParam.{sorted(unknown)[0]}", "Unknown EIP parameter.")
    if eip:
        if "EipInstanceId" in network:
            raise invalid_parameter(
                "EipCreateParam", "Give either EipInstanceId or EipCreateParam, not both."
            )
        bandwidth = params.integer("EipCreateParam.Bandwidth", minimum=1, maximum=1000)
        isp = eip.get("ISP") or "BGP"
        if isp not in ("BGP", "BGP_PRO"):
            raise invalid_parameter("EipCreateParam.ISP", "Use BGP or BGP_PRO.")
        charge = eip.get("InternetChargeType")
        if charge is not None and charge not in ("PayByBandwidth", "PayByTraffic"):
            raise invalid_parameter(
                "EipCreateParam.InternetChargeType", "Use PayByBandwidth or PayByTraffic."
            )
        for name in ("CommonBandwidthPackage", "PublicIpAddressPoolId"):
            _prefixed_id(params, f"EipCreateParam.{name}")
        network["EipCreateParam"] = {**eip, "Bandwidth": bandwidth or 5, "ISP": isp}
    return network


def _tags(params: Parameters) -> list[tuple[str, str]]:
    tags = params.tags()
    if len(tags) > MAX_TAGS:
        raise invalid_parameter("Tag", f"At most {MAX_TAGS} tags.")
    seen: set[str] = set()
    for index, (key, value) in enumerate(tags, start=1):
        if len(key) > MAX_TAG_LENGTH or len(value) > MAX_TAG_LENGTH:
            raise invalid_parameter(
                f"Tag.{index}", f"Keys and values are at most {MAX_TAG_LENGTH} characters."
            )
        if key.lower().startswith(("aliyun", "acs:")):
            raise invalid_parameter(f"Tag.{index}.Key", "Keys must not start with 'aliyun' or 'acs:'.")
        for field, text in (("Key", key), ("Value", value)):
            if any(scheme in text.lower() for scheme in ("http://", "https://")):
                raise invalid_parameter(
                    f"Tag.{index}.{field}", "Tags must not contain 'http://' or 'https://'."
                )
        if key in seen:
            raise invalid_parameter(f"Tag.{index}.Key", f"The tag key {key!r} is given twice.")
        seen.add(key)
    return tags


def _encode_next_token(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode().rstrip("=")


def _decode_next_token(token: str | None) -> int:
    if token is None:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded))["after"]
        if not isinstance(after, int):
            raise ValueError(after)
        return after
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid_parameter("NextToken", "Pass the NextToken of the previous page unchanged.") from None
