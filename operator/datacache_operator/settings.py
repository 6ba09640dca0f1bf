"""Operator settings: environment variables first, command-line flags on top.

Every field has one exact environment variable (``validation_alias``) and one flag
(``--field-name``), see :func:`add_settings_arguments` and :func:`settings_from_args`.

Settings never hold credentials: the ECI client takes them from the Alibaba Cloud SDK's
default credential chain (``ALIBABA_CLOUD_ACCESS_KEY_ID``/``SECRET``, STS token, RRSA
OIDC, ECS RAM role), which the SDK refreshes by itself. Keeping them out of here means
``repr(settings)``, ``--help`` and a settings dump in a log line can never leak one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from datacache_operator.api.binding import Placement
from datacache_operator.api.common import DeletionPolicy

DEFAULT_ENDPOINT_TEMPLATE = "eci.{region}.aliyuncs.com"

Protocol = Literal["https", "http"]
EciPlacement = Literal["label-and-node", "label", "node", "none"]
WebhookCertificate = Literal["operator", "cert-manager"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _env(name: str) -> AliasChoices:
    """The one environment variable of a field (the field name itself stays usable for
    overrides, see ``validate_by_name``)."""
    return AliasChoices(name)


def split_scheme(endpoint: str) -> tuple[str | None, str]:
    """``"http://h:1"`` -> ``("http", "h:1")``; ``"h:1"`` -> ``(None, "h:1")``."""
    for scheme in ("http", "https"):
        prefix = f"{scheme}://"
        if endpoint.lower().startswith(prefix):
            return scheme, endpoint[len(prefix) :]
    return None, endpoint


def endpoint_host(endpoint: str) -> str:
    """The host part of ``host[:port]`` (IPv6 literals in brackets keep them)."""
    _, hostport = split_scheme(endpoint)
    if hostport.startswith("["):
        return hostport[: hostport.index("]") + 1] if "]" in hostport else hostport
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def is_loopback_endpoint(endpoint: str) -> bool:
    host = endpoint_host(endpoint).lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class OperatorSettings(BaseSettings):
    """Operator-wide configuration. Field docs become the ``--help`` of each flag."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,  # `ECI_ENDPOINT=` means "not set", not "empty host"
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
    )

    default_region: str = Field(
        default="cn-hangzhou",
        validation_alias=_env("DATACACHE_DEFAULT_REGION"),
        description="Region of objects that do not set spec.region.",
    )
    endpoint: str | None = Field(
        default=None,
        validation_alias=_env("ECI_ENDPOINT"),
        description="host[:port] that every region's ECI calls go to (e.g. the emulator, "
        "127.0.0.1:18082). Unset: one endpoint per region from the endpoint template.",
    )
    endpoint_template: str = Field(
        default=DEFAULT_ENDPOINT_TEMPLATE,
        validation_alias=_env("ECI_ENDPOINT_TEMPLATE"),
        description="Endpoint of a region, '{region}' is replaced (e.g. eci-vpc.{region}.aliyuncs.com).",
    )
    protocol: Protocol | None = Field(
        default=None,
        validation_alias=_env("ECI_PROTOCOL"),
        description="https or http. Unset: the scheme written in ECI_ENDPOINT if any, http for a "
        "loopback ECI_ENDPOINT (the emulator), otherwise https.",
    )
    sts_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("DATACACHE_STS_ENDPOINT"),
        description="STS endpoint (host[:port], always HTTPS) for EciAccounts with a RAM role. Unset: the "
        "credentials library's default (sts.aliyuncs.com, or ALIBABA_CLOUD_STS_REGION's).",
    )
    huggingface_endpoint: str = Field(
        default="https://huggingface.co",
        validation_alias=_env("DATACACHE_HUGGINGFACE_ENDPOINT"),
        description="Base URL of the Hugging Face Hub API that branches and tags of HuggingFace sources are "
        "resolved to commits with (GET <endpoint>/api/models/<repo>/revision/<revision>); a mirror that "
        "answers the same API works too (e.g. https://hf-mirror.com).",
    )
    modelscope_endpoint: str = Field(
        default="https://modelscope.cn",
        validation_alias=_env("DATACACHE_MODELSCOPE_ENDPOINT"),
        description="Base URL of the ModelScope Hub API that branches and tags of ModelScope sources are "
        "resolved to commits with (GET <endpoint>/api/v1/models/<repo>/commits?Ref=<revision>), e.g. "
        "https://www.modelscope.ai outside mainland China.",
    )
    rate_limit: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("DATACACHE_RATE_LIMIT"),
        description="ECI requests per second, per region (token bucket rate).",
    )
    rate_burst: int | None = Field(
        default=None,
        ge=1,
        validation_alias=_env("DATACACHE_RATE_BURST"),
        description="Token bucket size per region. Unset: the rate limit rounded up.",
    )
    poll_interval_loading: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("DATACACHE_POLL_INTERVAL_LOADING"),
        description="Seconds between reads while a cache is changing (Creating, Loading, Updating...).",
    )
    poll_interval_stable: float = Field(
        default=300.0,
        gt=0,
        validation_alias=_env("DATACACHE_POLL_INTERVAL_STABLE"),
        description="Seconds between drift checks of a stable cache.",
    )
    poll_jitter: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        validation_alias=_env("DATACACHE_POLL_JITTER"),
        description="Random fraction added to or taken from each poll interval.",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("DATACACHE_NAMESPACES"),
        description="Comma-separated namespaces to watch; empty: all namespaces.",
    )
    regions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("DATACACHE_REGIONS"),
        description="Comma-separated regions objects may use; empty: any, up to max_regions of them.",
    )
    max_regions: int = Field(
        default=32,
        ge=1,
        validation_alias=_env("DATACACHE_MAX_REGIONS"),
        description="At most this many regions get a client, a rate limiter and metric series: a "
        "region beyond them (a typo, or a tenant trying every name) is refused, not kept for good.",
    )
    default_deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        validation_alias=_env("DATACACHE_DEFAULT_DELETION_POLICY"),
        description="Deletion policy of objects that do not set spec.deletionPolicy.",
    )
    batching: bool = Field(
        default=True,
        validation_alias=_env("DATACACHE_BATCHING"),
        description="Coalesce reads of one region into DescribeDataCaches calls of up to 20 ids "
        "(off: one call per object, for benchmarks).",
    )
    max_concurrent_passes: int = Field(
        default=128,
        ge=1,
        validation_alias=_env("DATACACHE_MAX_CONCURRENT_PASSES"),
        description="The scheduler's workers: reconcile passes running at once across all objects "
        "(the others wait their turn, changes first); bounds memory when many objects are due together.",
    )
    describe_batch_window: float = Field(
        default=0.05,
        ge=0,
        validation_alias=_env("DATACACHE_DESCRIBE_BATCH_WINDOW"),
        description="Seconds without a new id joining a region's batch of reads before it is sent "
        "(at most four such windows after its first read; at 20 ids it goes at once).",
    )
    connect_timeout: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("DATACACHE_CONNECT_TIMEOUT"),
        description="Seconds to connect to ECI.",
    )
    read_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("DATACACHE_READ_TIMEOUT"),
        description="Seconds to wait for an ECI response.",
    )
    metrics_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        validation_alias=_env("DATACACHE_METRICS_PORT"),
        description="Port of the Prometheus metrics endpoint (0: off).",
    )
    health_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        validation_alias=_env("DATACACHE_HEALTH_PORT"),
        description="Port of the liveness/readiness endpoint (0: off).",
    )
    cluster_id: str = Field(
        default="",
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$|^$",
        validation_alias=_env("DATACACHE_CLUSTER_ID"),
        description="A stable id of this cluster, written on every cache the operator makes (the owner "
        "tags that keep other clusters' and namespaces' objects off it). Empty: the uid of the "
        "kube-system namespace. Keep it when moving to a new cluster, so re-created objects find their caches.",
    )
    tenancy: bool = Field(
        default=True,
        validation_alias=_env("DATACACHE_TENANCY"),
        description="Each namespace to its own ECI buckets: a cache without spec.bucket goes to the "
        "namespace's own (its name), and one in a bucket not assigned to the namespace is refused "
        "(BucketNotAllowed). Off (single-team clusters): spec.bucket defaults to ECI's bucket default "
        "and any bucket is allowed. The chart's admission policies hold pods to the same rule.",
    )
    rollouts: bool = Field(
        default=False,
        validation_alias=_env("DATACACHE_ROLLOUTS"),
        description="Roll Deployments and StatefulSets annotated eci.datacache.dev/rollout=true onto a "
        "cache's new revision through their own rolling update (a pod-template annotation, as kubectl "
        "rollout restart). Off unless enabled: it needs get, list and patch on the namespace's workloads.",
    )
    eci_placement: EciPlacement = Field(
        default="label-and-node",
        validation_alias=_env("DATACACHE_ECI_PLACEMENT"),
        description="What keeps a pod bound to a cache on ECI (on any other node its hostPath is the "
        "node's own directory): label-and-node (ACK's pod label alibabacloud.com/eci and the "
        "nodeSelector with the virtual node's toleration), label, node, or none.",
    )
    eci_node_selector: str = Field(
        default="type=virtual-kubelet",
        pattern=r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*$",
        validation_alias=_env("DATACACHE_ECI_NODE_SELECTOR"),
        description="The virtual node's label, key=value (ACK: type=virtual-kubelet; Alibaba's VNode: "
        "k8s.aliyun.com/vnode=true).",
    )
    eci_toleration: str = Field(
        default="virtual-kubelet.io/provider",
        validation_alias=_env("DATACACHE_ECI_TOLERATION"),
        description="The key of the virtual node's NoSchedule taint, tolerated by bound pods.",
    )
    cluster_region: str | None = Field(
        default=None,
        validation_alias=_env("DATACACHE_CLUSTER_REGION"),
        description="Region the cluster's pods run in: a DataCache elsewhere is bound through its copy "
        "in this region. Unset: the default region.",
    )
    operator_namespace: str = Field(
        default="eci-datacache-system",
        min_length=1,
        validation_alias=_env("DATACACHE_OPERATOR_NAMESPACE"),
        description="Namespace of the operator itself (the webhook certificate's Secret lives there).",
    )
    webhook_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        validation_alias=_env("DATACACHE_WEBHOOK_PORT"),
        description="Port of the pod admission webhook, served over TLS by every replica (0: off).",
    )
    webhook_certificate: WebhookCertificate = Field(
        default="operator",
        validation_alias=_env("DATACACHE_WEBHOOK_CERTIFICATE"),
        description="Who makes the webhook's certificate: operator (a CA and a certificate made once, "
        "kept in the Secret, the CA put into the webhook configuration) or cert-manager (the operator "
        "only reads the Secret).",
    )
    webhook_secret: str = Field(
        default="eci-datacache-operator-webhook-tls",
        min_length=1,
        validation_alias=_env("DATACACHE_WEBHOOK_SECRET"),
        description="Secret (in the operator's namespace) holding the webhook's ca.crt, tls.crt, tls.key.",
    )
    webhook_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("DATACACHE_WEBHOOK_HOSTS"),
        description="Comma-separated DNS names or IPs the apiserver calls the webhook by (the "
        "certificate's names). Empty: eci-datacache-operator-webhook.<namespace>.svc.",
    )
    webhook_configuration: str = Field(
        default="",
        validation_alias=_env("DATACACHE_WEBHOOK_CONFIGURATION"),
        description="MutatingWebhookConfiguration the operator puts its CA into (empty: none).",
    )
    pod_resync_interval: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("DATACACHE_POD_RESYNC_INTERVAL"),
        description="Seconds between checks of every waiting pod and of the pods using each cache.",
    )
    leader_election: bool = Field(
        default=False,
        validation_alias=_env("DATACACHE_LEADER_ELECTION"),
        description="Elect a leader on a Lease: only the holder reconciles; every replica serves the "
        "webhook, health and metrics (the chart turns it on).",
    )
    leader_election_lease_name: str = Field(
        default="eci-datacache-operator",
        min_length=1,
        validation_alias=_env("DATACACHE_LEADER_ELECTION_LEASE_NAME"),
        description="Name of the Lease, in the operator's namespace.",
    )
    leader_election_identity: str | None = Field(
        default=None,
        validation_alias=_env("POD_NAME"),
        description="Holder identity in the Lease. Unset: host name and process id.",
    )
    leader_election_lease_duration: float = Field(
        default=15.0,
        gt=0,
        validation_alias=_env("DATACACHE_LEADER_ELECTION_LEASE_DURATION"),
        description="Seconds a candidate waits, after the last renewal it saw, before taking the Lease.",
    )
    leader_election_renew_deadline: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("DATACACHE_LEADER_ELECTION_RENEW_DEADLINE"),
        description="Seconds the leader keeps acting without a successful renewal; then it exits.",
    )
    leader_election_retry_period: float = Field(
        default=2.0,
        gt=0,
        validation_alias=_env("DATACACHE_LEADER_ELECTION_RETRY_PERIOD"),
        description="Seconds between attempts to take or renew the Lease.",
    )
    log_level: LogLevel = Field(
        default="INFO",
        validation_alias=_env("DATACACHE_LOG_LEVEL"),
        description="Log level.",
    )
    log_json: bool = Field(
        default=False,
        validation_alias=_env("DATACACHE_LOG_JSON"),
        description="Log one JSON object per line.",
    )

    # ---- normalisation -------------------------------------------------------------

    @field_validator("namespaces", "webhook_hosts", "regions", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return [str(item).strip() for item in value if str(item).strip()]
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _lower_protocol(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("default_deletion_policy", mode="before")
    @classmethod
    def _capitalise_policy(cls, value: Any) -> Any:
        return value.strip().capitalize() if isinstance(value, str) else value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        _, hostport = split_scheme(value)
        if not hostport or "/" in hostport or "?" in hostport:
            # The SDK uses the endpoint verbatim as the Host header and URL authority.
            raise ValueError("ECI_ENDPOINT must be host[:port] (optionally http:// or https://), no path")
        return value

    @field_validator("huggingface_endpoint", "modelscope_endpoint")
    @classmethod
    def _check_hub_endpoint(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        scheme, rest = split_scheme(value)
        if scheme is None or not rest or "?" in rest or "#" in rest or "@" in rest.split("/", 1)[0]:
            raise ValueError("a hub endpoint must be an http:// or https:// URL, optionally with a path")
        return value

    @field_validator("endpoint_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        value = value.strip()
        if "{region}" not in value:
            raise ValueError("ECI_ENDPOINT_TEMPLATE must contain '{region}'")
        try:
            rendered = value.format(region="cn-hangzhou")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ECI_ENDPOINT_TEMPLATE is not a valid template: {exc}") from None
        _, hostport = split_scheme(rendered)
        if "/" in hostport:
            raise ValueError("ECI_ENDPOINT_TEMPLATE must render to host[:port], no path")
        return value

    @model_validator(mode="after")
    def _check_leader_election_timing(self) -> OperatorSettings:
        # client-go's rule: otherwise a healthy leader could lose the Lease between renewals.
        duration, deadline = self.leader_election_lease_duration, self.leader_election_renew_deadline
        if not duration > deadline > 1.2 * self.leader_election_retry_period:
            raise ValueError(
                "leader election needs LEASE_DURATION > RENEW_DEADLINE > 1.2 x RETRY_PERIOD, got "
                f"{duration:g} s, {deadline:g} s, {self.leader_election_retry_period:g} s"
            )
        return self

    @model_validator(mode="after")
    def _check_protocol_agrees_with_endpoint(self) -> OperatorSettings:
        scheme, _ = split_scheme(self.endpoint or "")
        if scheme and self.protocol and scheme != self.protocol:
            raise ValueError(f"ECI_ENDPOINT says {scheme}:// but ECI_PROTOCOL is {self.protocol}")
        return self

    # ---- derived values ------------------------------------------------------------

    @property
    def effective_protocol(self) -> Protocol:
        if self.protocol:
            return self.protocol
        scheme, _ = split_scheme(self.endpoint or "")
        if scheme == "http":
            return "http"
        if scheme == "https":
            return "https"
        if self.endpoint and is_loopback_endpoint(self.endpoint):
            return "http"  # the emulator (`make run`) serves plain HTTP on loopback
        return "https"

    @property
    def effective_rate_burst(self) -> int:
        return self.rate_burst if self.rate_burst is not None else max(1, math.ceil(self.rate_limit))

    @property
    def effective_cluster_region(self) -> str:
        return self.cluster_region or self.default_region

    @property
    def placement(self) -> Placement:
        node = self.eci_placement in ("label-and-node", "node")
        key, _, value = self.eci_node_selector.partition("=")
        return Placement(
            label=self.eci_placement in ("label-and-node", "label"),
            node_selector={key: value} if node else {},
            toleration_key=self.eci_toleration if node else None,
        )

    @property
    def effective_webhook_hosts(self) -> list[str]:
        return self.webhook_hosts or [f"eci-datacache-operator-webhook.{self.operator_namespace}.svc"]

    def endpoint_for(self, region: str) -> str:
        """``host[:port]`` of the ECI API of ``region`` (no scheme: the SDK wants it bare)."""
        if self.endpoint:
            return split_scheme(self.endpoint)[1]
        return split_scheme(self.endpoint_template.format(region=region))[1]


# ---- command-line flags ------------------------------------------------------------


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _case_insensitive(choices: list[str]) -> Any:
    by_lower = {c.lower(): c for c in choices}
    return lambda text: by_lower.get(text.strip().lower(), text)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (``--rate-limit``, ``--batching/--no-batching``, ...).

    Every flag defaults to None so that :func:`settings_from_args` can tell "not given"
    (keep the environment's value) from a given value.
    """
    group = parser.add_argument_group("operator settings (each also from its environment variable)")
    for name, field in OperatorSettings.model_fields.items():
        env_name = (
            field.validation_alias.choices[0] if isinstance(field.validation_alias, AliasChoices) else ""
        )
        help_text = f"{field.description} [env {env_name}]"
        annotation = field.annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        if annotation is bool:
            group.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        literal = next((a for a in [annotation, *args] if get_origin(a) is Literal), None)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if isinstance(annotation, type) and issubclass(annotation, StrEnum):
            choices = [member.value for member in annotation]
            kwargs["choices"] = choices
            kwargs["type"] = _case_insensitive(choices)
        elif literal is not None:
            choices = [str(c) for c in get_args(literal)]
            kwargs["choices"] = choices
            kwargs["type"] = _case_insensitive(choices)
        elif annotation is int or int in args:
            kwargs["type"] = int
        elif annotation is float:
            kwargs["type"] = float
        group.add_argument(_flag(name), **kwargs)


def settings_from_args(overrides: Mapping[str, Any] | argparse.Namespace | None = None) -> OperatorSettings:
    """Settings from the environment, with the non-None ``overrides`` (flags) on top.

    ``overrides`` may be an argparse namespace: keys that are not settings are ignored
    there (other flags of the same command), but rejected in a plain mapping (a typo).
    """
    if overrides is None:
        return OperatorSettings()
    if isinstance(overrides, argparse.Namespace):
        items = {k: v for k, v in vars(overrides).items() if k in OperatorSettings.model_fields}
    else:
        unknown = sorted(set(overrides) - set(OperatorSettings.model_fields))
        if unknown:
            raise ValueError(f"unknown operator settings: {', '.join(unknown)}")
        items = dict(overrides)
    # Init arguments take precedence over environment variables in pydantic-settings.
    return OperatorSettings(**{k: v for k, v in items.items() if v is not None})
