"""EciClient against a fake SDK client: request building, paging, batching, errors, hooks."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from alibabacloud_eci20180808 import models as eci
from alibabacloud_tea_openapi.exceptions import ClientException

from datacache_operator.cloud import (
    CloudConfigurationError,
    CopyRequest,
    CreateRequest,
    DataSource,
    EciClient,
    EciError,
    EipCreateParam,
    NetConfig,
    UpdateRequest,
)
from datacache_operator.settings import OperatorSettings

TOKEN = "hf_unit_test_secret_token"


def client_error(status: int, code: str, message: str) -> ClientException:
    return ClientException(
        status_code=status,
        code=code,
        message=f"code: {status}, {message} request id: RID-1",
        data={"Code": code, "Message": message, "RequestId": "RID-1"},
        request_id="RID-1",
    )


class FakeSdk:
    """Just enough of alibabacloud_eci20180808.client.Client's blocking surface (the one used)."""

    def __init__(self, page_size: int = 20, ignore_tag_filter: bool = False) -> None:
        self.caches: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.page_size = page_size
        self.ignore_tag_filter = ignore_tag_filter
        self.fail_next: dict[str, Exception] = {}
        self.repeat_token = False

    def add(self, data_cache_id: str, **fields: Any) -> None:
        tags = fields.pop("tags", {})
        self.caches[data_cache_id] = {
            "DataCacheId": data_cache_id,
            "Status": "Available",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            **fields,
        }

    def _maybe_fail(self, action: str, request: Any) -> None:
        self.calls.append((action, request))
        if action in self.fail_next:
            raise self.fail_next.pop(action)

    def describe_data_caches(self, request: eci.DescribeDataCachesRequest) -> Any:
        self._maybe_fail("DescribeDataCaches", request)
        matching = [
            c
            for i, c in self.caches.items()
            if (not request.data_cache_id or i in request.data_cache_id)
            and (
                self.ignore_tag_filter
                or all({"Key": t.key, "Value": t.value} in c["Tags"] for t in (request.tag or []))
            )
        ]
        start = int(request.next_token or 0)
        page = matching[start : start + min(request.limit or 20, self.page_size)]
        more = start + len(page) < len(matching)
        next_token = "0" if self.repeat_token else (str(start + len(page)) if more else "")
        body = eci.DescribeDataCachesResponseBody().from_map(
            {"DataCaches": page, "NextToken": next_token, "TotalCount": len(matching), "RequestId": "R"}
        )
        return SimpleNamespace(body=body, status_code=200)

    def create_data_cache(self, request: eci.CreateDataCacheRequest) -> Any:
        self._maybe_fail("CreateDataCache", request)
        return SimpleNamespace(body=eci.CreateDataCacheResponseBody(data_cache_id="edc-new", request_id="R"))

    def update_data_cache(self, request: eci.UpdateDataCacheRequest) -> Any:
        self._maybe_fail("UpdateDataCache", request)
        return SimpleNamespace(body=eci.UpdateDataCacheResponseBody(request_id="R"))

    def delete_data_cache(self, request: eci.DeleteDataCacheRequest) -> Any:
        self._maybe_fail("DeleteDataCache", request)
        self.caches.pop(request.data_cache_id, None)
        return SimpleNamespace(body=eci.DeleteDataCacheResponseBody(request_id="R"))

    def copy_data_cache(self, request: eci.CopyDataCacheRequest) -> Any:
        self._maybe_fail("CopyDataCache", request)
        return SimpleNamespace(body=eci.CopyDataCacheResponseBody(data_cache_id="edc-copy", request_id="R"))

    def actions(self, action: str) -> list[Any]:
        return [request for name, request in self.calls if name == action]


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.waits: list[tuple[str, float]] = []

    def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((action, region, outcome_code))

    def on_rate_limit_wait(self, region: str, seconds: float) -> None:
        self.waits.append((region, seconds))


def make_client(
    fake: FakeSdk, hooks: Hooks | None = None, environ: dict[str, str] | None = None, **settings: Any
) -> tuple[EciClient, list[str]]:
    built: list[str] = []

    def factory(region: str, endpoint: str, protocol: str) -> FakeSdk:
        built.append(region)
        return fake

    config = OperatorSettings(**{"rate_limit": 10_000, "describe_batch_window": 0.01, **settings})
    client = EciClient(config, hooks=hooks, sdk_client_factory=factory, environ=environ or {})
    return client, built


async def test_concurrent_describes_are_batched_20_ids_a_call() -> None:
    fake = FakeSdk()
    for n in range(45):
        fake.add(f"edc-{n}")
    client, built = make_client(fake)
    ids = [f"edc-{n}" for n in range(45)] + ["edc-gone"]
    results = await asyncio.gather(*(client.describe("cn-hangzhou", i) for i in ids))
    requests = fake.actions("DescribeDataCaches")
    assert sorted(len(r.data_cache_id) for r in requests) == [6, 20, 20]
    assert all(r.limit == 20 and r.region_id == "cn-hangzhou" for r in requests)
    assert [r.data_cache_id for r in results[:45]] == ids[:45]  # type: ignore[union-attr]
    assert results[45] is None
    assert built == ["cn-hangzhou"]  # one SDK client per region, reused


async def test_batching_off_means_one_call_per_id() -> None:
    fake = FakeSdk()
    for n in range(5):
        fake.add(f"edc-{n}")
    client, _ = make_client(fake, batching=False)
    found = await asyncio.gather(*(client.describe("cn-hangzhou", f"edc-{n}") for n in range(5)))
    assert len(fake.actions("DescribeDataCaches")) == 5
    assert all(cache is not None for cache in found)


async def test_concurrent_describes_of_one_id_and_a_gone_one_share_a_call() -> None:
    fake = FakeSdk()
    fake.add("edc-a")
    client, _ = make_client(fake)
    first, gone, again = await asyncio.gather(*(client.describe("r", i) for i in ("edc-a", "edc-b", "edc-a")))
    assert first is not None and again == first and gone is None
    assert len(fake.actions("DescribeDataCaches")) == 1


async def test_describe_follows_next_token() -> None:
    fake = FakeSdk(page_size=7)
    for n in range(20):
        fake.add(f"edc-{n}")
    client, _ = make_client(fake)
    found = await asyncio.gather(*(client.describe("r", f"edc-{n}") for n in range(20)))
    assert all(found)
    assert [r.next_token for r in fake.actions("DescribeDataCaches")] == [None, "7", "14"]


async def test_find_by_tags_pages_and_double_checks_the_tags() -> None:
    fake = FakeSdk(ignore_tag_filter=True)  # a server that ignores Tag.N must not fool us
    for n in range(45):
        fake.add(f"edc-{n}", tags={"owner-uid": "u-1" if n % 2 else "u-2"})
    client, _ = make_client(fake)
    found = await client.find_by_tags("cn-hangzhou", {"owner-uid": "u-1"})
    assert sorted(c.data_cache_id for c in found) == sorted(f"edc-{n}" for n in range(45) if n % 2)
    requests = fake.actions("DescribeDataCaches")
    assert len(requests) == 3
    assert [(t.key, t.value) for t in requests[0].tag] == [("owner-uid", "u-1")]
    assert requests[0].data_cache_id is None
    with pytest.raises(ValueError):
        await client.find_by_tags("r", {})


async def test_a_repeated_next_token_ends_the_listing() -> None:
    fake = FakeSdk(page_size=1)
    fake.add("edc-1", tags={"a": "b"})
    fake.add("edc-2", tags={"a": "b"})
    fake.repeat_token = True
    client, _ = make_client(fake)
    await asyncio.wait_for(client.find_by_tags("r", {"a": "b"}), timeout=5)
    assert len(fake.actions("DescribeDataCaches")) == 2


async def test_create_sends_every_field() -> None:
    fake = FakeSdk()
    client, _ = make_client(fake)
    request = CreateRequest(
        bucket="default",
        path="/model/qwen",
        name="qwen",
        size=30,
        retention_days=7,
        data_source=DataSource(
            type="URL", options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2"}
        ),
        net_config=NetConfig(
            security_group_id="sg-1",
            v_switch_id="vsw-1",
            eip_create_param=EipCreateParam(bandwidth=5, isp="BGP"),
        ),
        tags={"eci.datacache.dev/owner-uid": "uid-1", "env": "dev"},
        resource_group_id="rg-1",
    )
    assert await client.create("cn-hangzhou", request, client_token="uid-1-create") == "edc-new"
    [sent] = fake.actions("CreateDataCache")
    query = sent.to_map()
    assert query["RegionId"] == "cn-hangzhou" and query["ClientToken"] == "uid-1-create"
    assert query["DataSource"] == {
        "Type": "URL",
        "Options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2"},
    }
    assert query["EipCreateParam"] == {"Bandwidth": 5, "ISP": "BGP"}
    assert query["Tag"] == [
        {"Key": "eci.datacache.dev/owner-uid", "Value": "uid-1"},
        {"Key": "env", "Value": "dev"},
    ]
    assert (query["SecurityGroupId"], query["VSwitchId"], query["Size"], query["RetentionDays"]) == (
        "sg-1",
        "vsw-1",
        30,
        7,
    )
    assert "EipInstanceId" not in query


@pytest.mark.parametrize("token", ["", "x" * 65, "tökén"])
async def test_bad_client_tokens_are_refused_before_any_call(token: str) -> None:
    fake = FakeSdk()
    client, _ = make_client(fake)
    with pytest.raises(ValueError):
        await client.create("r", CreateRequest(path="/p"), client_token=token)
    assert fake.calls == []


async def test_update_sends_only_what_is_set() -> None:
    fake = FakeSdk()
    client, _ = make_client(fake)
    await client.update("r", "edc-1", UpdateRequest())
    assert fake.calls == []
    await client.update("r", "edc-1", UpdateRequest(retention_days=3, name="n"))
    [sent] = fake.actions("UpdateDataCache")
    assert sent.tag is None  # unset: the SDK sends no Tag.N (to_map() would show an empty list)
    sent_fields = {k: v for k, v in sent.to_map().items() if v != []}
    assert sent_fields == {"RegionId": "r", "DataCacheId": "edc-1", "RetentionDays": 3, "Name": "n"}


async def test_delete_and_already_gone() -> None:
    fake = FakeSdk()
    fake.add("edc-1")
    client, _ = make_client(fake)
    assert await client.delete("r", "edc-1") is True
    fake.fail_next["DeleteDataCache"] = client_error(404, "DataCache.NotFound", "no such cache")
    assert await client.delete("r", "edc-1") is False


async def test_delete_with_an_unknown_404_code_checks_by_reading() -> None:
    fake = FakeSdk()
    fake.add("edc-here")
    client, _ = make_client(fake)
    fake.fail_next["DeleteDataCache"] = client_error(404, "Resource.Missing", "not here")
    assert await client.delete("r", "edc-gone") is False
    fake.fail_next["DeleteDataCache"] = client_error(404, "Resource.Missing", "odd")
    with pytest.raises(EciError, match="Resource.Missing"):
        await client.delete("r", "edc-here")  # the read still lists it: not gone


async def test_delete_does_not_swallow_real_errors() -> None:
    fake = FakeSdk()
    client, _ = make_client(fake)
    fake.fail_next["DeleteDataCache"] = client_error(404, "InvalidAccessKeyId.NotFound", "key not found")
    with pytest.raises(EciError) as raised:
        await client.delete("r", "edc-1")
    assert raised.value.code == "InvalidAccessKeyId.NotFound" and not raised.value.retryable
    assert fake.actions("DescribeDataCaches") == []


async def test_an_accounts_client_retries_refused_credentials_instead_of_stalling() -> None:
    """An EciAccount's keys are fixed by an administrator, outside the objects using them."""
    fake = FakeSdk()

    def factory(region: str, endpoint: str, protocol: str) -> FakeSdk:
        return fake

    client = EciClient(
        OperatorSettings(rate_limit=10_000),
        sdk_client_factory=factory,
        environ={},
        credential_errors_retryable=True,
    )
    fake.fail_next["DeleteDataCache"] = client_error(400, "InvalidAccessKeyId.Inactive", "key disabled")
    with pytest.raises(EciError) as raised:
        await client.delete("r", "edc-1")
    assert raised.value.code == "InvalidAccessKeyId.Inactive" and raised.value.retryable
    fake.fail_next["DeleteDataCache"] = client_error(400, "InvalidParameter", "bad")
    with pytest.raises(EciError) as raised:
        await client.delete("r", "edc-1")
    assert not raised.value.retryable  # only credentials


async def test_copy() -> None:
    fake = FakeSdk()
    client, _ = make_client(fake)
    request = CopyRequest(
        destination_region="cn-beijing", bucket="b", path="/p", name="n", retention_days=2, tags={"k": "v"}
    )
    assert await client.copy("cn-hongkong", "edc-src", request, client_token="tok") == "edc-copy"
    [sent] = fake.actions("CopyDataCache")
    assert sent.to_map() == {
        "Bucket": "b",
        "ClientToken": "tok",
        "DataCacheId": "edc-src",
        "DestinationRegionId": "cn-beijing",
        "Name": "n",
        "Path": "/p",
        "RegionId": "cn-hongkong",
        "RetentionDays": 2,
        "Tag": [{"Key": "k", "Value": "v"}],
    }


async def test_sdk_errors_become_eci_errors_without_the_sdk_exception_attached() -> None:
    fake = FakeSdk()
    hooks = Hooks()
    client, _ = make_client(fake, hooks=hooks)
    fake.fail_next["CreateDataCache"] = client_error(
        400, "InvalidParameter", f'DataSource.Options.accessToken "{TOKEN}" is malformed'
    )
    source = DataSource(type="URL", options={"repoId": "a/b", "accessToken": TOKEN})
    with pytest.raises(EciError) as raised:
        await client.create("cn-hangzhou", CreateRequest(path="/p", data_source=source), client_token="t")
    error = raised.value
    assert (error.code, error.retryable, error.request_id) == ("InvalidParameter", False, "RID-1")
    assert error.__cause__ is None and error.__suppress_context__
    assert TOKEN not in str(error) and TOKEN not in error.message
    assert hooks.calls == [("CreateDataCache", "cn-hangzhou", "InvalidParameter")]


async def test_hooks_see_every_call_and_rate_limit_waits() -> None:
    fake = FakeSdk()
    fake.add("edc-1")
    hooks = Hooks()
    client, _ = make_client(fake, hooks=hooks, rate_limit=50, rate_burst=1, batching=False)
    for _ in range(3):
        await client.describe("cn-hangzhou", "edc-1")
    assert hooks.calls == [("DescribeDataCaches", "cn-hangzhou", "OK")] * 3
    assert len(hooks.waits) == 2 and all(region == "cn-hangzhou" and s > 0 for region, s in hooks.waits)


async def test_a_failing_hook_does_not_break_calls() -> None:
    class BrokenHooks(Hooks):
        def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
            raise RuntimeError("metrics are down")

    fake = FakeSdk()
    fake.add("edc-1")
    client, _ = make_client(fake, hooks=BrokenHooks())
    assert await client.describe("r", "edc-1") is not None


def test_refuses_a_proxy_for_a_loopback_endpoint() -> None:
    with pytest.raises(CloudConfigurationError, match="HTTP_PROXY"):
        make_client(FakeSdk(), environ={"HTTP_PROXY": "http://proxy:3128"}, endpoint="127.0.0.1:18082")
    # https proxy variables do not matter for a plain-http emulator, nor proxies for real endpoints
    make_client(FakeSdk(), environ={"HTTPS_PROXY": "http://proxy:3128"}, endpoint="127.0.0.1:18082")
    make_client(FakeSdk(), environ={"HTTPS_PROXY": "http://proxy:3128"})


def test_real_sdk_client_configuration() -> None:
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.models import Config as CredentialConfig

    credential = CredentialClient(
        CredentialConfig(type="access_key", access_key_id="AK", access_key_secret="SK")
    )
    settings = OperatorSettings(connect_timeout=2, read_timeout=3.5)
    client = EciClient(settings, credential=credential, environ={})
    sdk = client.sdk_client("cn-shanghai")
    assert sdk is client.sdk_client("cn-shanghai")
    assert (sdk._endpoint, sdk._protocol) == ("eci.cn-shanghai.aliyuncs.com", "https")
    assert (sdk._connect_timeout, sdk._read_timeout) == (2000, 3500)
    assert sdk._credential is credential
    other = client.sdk_client("cn-beijing")
    assert other._endpoint == "eci.cn-beijing.aliyuncs.com" and other._credential is credential


class SlowSdk(FakeSdk):
    """A create that blocks on I/O like the real SDK's blocking call, until answered."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.threads: set[int] = set()
        self.started, self.answer = threading.Event(), threading.Event()

    def create_data_cache(self, request: eci.CreateDataCacheRequest) -> Any:
        self.threads.add(threading.get_ident())
        self.started.set()
        self.answer.wait(self.seconds)
        return super().create_data_cache(request)


async def test_a_call_finishes_and_frees_its_slot_while_the_operators_loop_is_busy() -> None:
    # The limiter counts a call until its answer is processed: on a busy operator loop that
    # was 100+ ms late per call, which held creates under the rate (callthread.py).
    class AnsweredHooks(Hooks):
        answered = threading.Event()

        def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
            super().on_call(action, region, outcome_code, seconds)
            self.answered.set()  # the slot is freed right after this

    fake, hooks = SlowSdk(seconds=0.01), AnsweredHooks()
    client, _ = make_client(fake, hooks=hooks)
    creating = asyncio.ensure_future(client.create("cn-hangzhou", CreateRequest(path="/a"), client_token="t"))
    await asyncio.sleep(0)  # the call is handed over
    # This loop is blocked while it waits: only another loop can answer the call.
    assert hooks.answered.wait(timeout=10)
    assert hooks.calls == [("CreateDataCache", "cn-hangzhou", "OK")]
    assert await creating == "edc-new"
    assert threading.get_ident() not in fake.threads
    await client.aclose()


async def test_a_cancelled_caller_returns_at_once_and_its_sent_call_keeps_its_slot_until_answered() -> None:
    # A call on the wire cannot be recalled: ECI may still receive it, so the rate limiter
    # must count it until its answer, not until its caller gave up.
    class AnsweredHooks(Hooks):
        answered = threading.Event()

        def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
            super().on_call(action, region, outcome_code, seconds)
            self.answered.set()  # inside the slot: it is freed right after this

    fake, hooks = SlowSdk(seconds=3600), AnsweredHooks()
    client, _ = make_client(fake, hooks=hooks)
    creating = asyncio.ensure_future(client.create("cn-hangzhou", CreateRequest(path="/a"), client_token="t"))
    assert await asyncio.to_thread(fake.started.wait, 10)
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    assert not hooks.answered.is_set()
    fake.answer.set()
    assert await asyncio.to_thread(hooks.answered.wait, 10)
    assert hooks.calls == [("CreateDataCache", "cn-hangzhou", "OK")]

    threads = [t for t in threading.enumerate() if t.ident in fake.threads]
    await client.aclose()
    assert threads and all(t.name.startswith("eci-sdk") for t in threads)


class OrderedSdk(FakeSdk):
    """Notes when each create starts and ends. The first one lasts until another starts
    (0.3 s at most); every later one waits at a barrier for another, so they can only finish
    by running at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.another_started = threading.Event()
        self.together = threading.Barrier(2, timeout=10)

    def create_data_cache(self, request: eci.CreateDataCacheRequest) -> Any:
        first = request.client_token == "t0"
        with self.lock:
            self.log.append(("start", request.client_token))
        if first:
            self.another_started.wait(0.3)
        else:
            self.another_started.set()
            self.together.wait()
        with self.lock:
            self.log.append(("end", request.client_token))
        return super().create_data_cache(request)


async def test_the_first_call_to_a_region_goes_alone_and_later_ones_at_once() -> None:
    # The SDK builds an endpoint's HTTP session (and an SSL context) on its first call,
    # unlocked: first calls at once built one each, 20 ms of CPU apiece.
    fake = OrderedSdk()
    client, _ = make_client(fake)
    first = asyncio.ensure_future(client.create("cn-hangzhou", CreateRequest(path="/0"), client_token="t0"))
    await asyncio.sleep(0)  # the first call is handed over before the others
    others = [client.create("cn-hangzhou", CreateRequest(path=f"/{n}"), client_token=f"t{n}") for n in (1, 2)]
    assert await asyncio.gather(first, *others) == ["edc-new"] * 3
    assert fake.log[:2] == [("start", "t0"), ("end", "t0")]
    assert {token for event, token in fake.log[2:] if event == "start"} == {"t1", "t2"}
    await client.aclose()


async def test_regions_are_bounded_so_per_region_state_cannot_grow_without_end() -> None:
    """A tenant trying region after region gets a refusal, not a client, a rate limiter and
    metric series kept for good."""
    hooks = Hooks()
    client, built = make_client(FakeSdk(), hooks=hooks, max_regions=2)
    async with client:
        await client.delete("cn-hangzhou", "edc-1")
        await client.delete("cn-beijing", "edc-1")
        with pytest.raises(EciError) as refused:
            await client.delete("cn-nowhere-1", "edc-1")
        assert (refused.value.code, refused.value.retryable) == ("RegionNotAllowed", False)
        assert "DATACACHE_MAX_REGIONS" in refused.value.message
        await client.delete("cn-beijing", "edc-2")  # the regions in use keep working
    assert set(built) == {"cn-hangzhou", "cn-beijing"}
    assert "cn-nowhere-1" not in {region for _, region, *_ in hooks.calls}

    only, built = make_client(FakeSdk(), regions="cn-hangzhou")
    async with only:
        with pytest.raises(EciError, match="not one of DATACACHE_REGIONS"):
            await only.describe("cn-beijing", "edc-1")
    assert built == []
