"""A local ECI DataCache service that the unmodified Alibaba Cloud SDK talks to over HTTP.

Like LocalStack for AWS: the operator, its tests and users' CI run against it without an
Alibaba Cloud account. Point the SDK at it with
``Config(access_key_id=..., access_key_secret=..., endpoint=emu.endpoint, protocol="http")``.

Start it with ``eci-datacache-emulator --port 0`` (prints ``ECI_ENDPOINT=host:port``
first), ``async with Emulator(EmulatorConfig()) as emu:``, or ``with
Emulator(config).in_thread() as emu:`` for synchronous code.

Wire (``signature.py``, ``wire.py``): ``POST /`` with the parameters in the query string,
the action from ``x-acs-action`` or ``Action``; V3 ``ACS3-HMAC-SHA256`` and V1 ``HMAC-SHA1``
signatures checked against the configured key pair (and STS token), with the gateway's
codes: ``IncompleteSignature``, ``SignatureDoesNotMatch``, ``InvalidAccessKeyId.NotFound``
(404), ``InvalidTimeStamp.Expired`` (±15 min), ``SignatureNonceUsed``,
``InvalidSecurityToken.*``, ``InvalidAction.NotFound`` (404), ``UnsupportedHTTPMethod``
(403). A ``SignatureDoesNotMatch`` message ends, as the gateway's does, with ``server
string to sign is:`` and the string the server signed (V3: a hash of the request; V1: the
sorted query itself, which clients compare with their own). Every answer is JSON; errors
carry ``RequestId``, ``HostId``, ``Code``, ``Message`` and ``Recommend``.

Operations (``operations.py``): CreateDataCache, DescribeDataCaches, UpdateDataCache,
DeleteDataCache, CopyDataCache with all their parameters, in any number of regions. The
module docstring there lists the choices the reference leaves open, notably unknown ids on
Update/Delete/Copy: 404 ``DataCache.NotFound``; wrong status: 400 ``IncorrectStatus``;
quota: 403 ``QuotaExceeded``; token reuse with other parameters: 400
``IdempotentParameterMismatch``. DescribeDataCaches returns ``DataSource.Options`` as a JSON
string with secret option values (token, secret, password, akId, ...) masked as ``******``;
secrets are never stored or logged, and echoed only to the caller that sent them, in the
V1 string to sign of a ``SignatureDoesNotMatch``.

Lifecycle (``state.py``): Creating -> Loading -> Available (or Failed); Update -> Updating ->
Available (or UpdateFailed); Delete -> Deleting -> gone; retention expiry -> gone. Phases
last their cloud duration (create 30 s + 90 s, copy 20 s + 60 s, update 60 s, delete 10 s)
times ``time_scale`` (default 0.02) on a virtual clock that the admin API can advance.

Failure rules (``outcomes.py``), deterministic:

* no data source, or a required option missing (URL: url or repoId; NAS: server;
  OSS: bucket; SNAPSHOT: snapshotId), or an unknown repoSource: Failed;
* an option value containing ``fail``: Failed, "the source returned an error";
* an option value containing ``unreachable`` or a host ending in ``.invalid``: Failed,
  "network is unreachable";
* data larger than ``Size``: Failed / UpdateFailed naming both sizes. The data size is the
  first ``<N>GiB``/``<N>GB`` in an option value, else 1-16 GiB from a hash of the source
  (so the minimum Size of 20 fits);
* admin rules (``POST /_emulator/rules``) come first and can force ``fail``, ``succeed``
  or ``stall`` per cache id, name, path, bucket or region.

Limits and faults (``faults.py``): a per-key rate limit answers 400 ``Throttling.User``
with ``x-acs-retry-after`` (ms); seeded faults inject 500 ``InternalError``, 503
``ServiceUnavailable``, throttling, added latency and dropped connections.

Admin API (``admin.py``, client in ``admin_client.py``): state, call log, counters, reset,
faults, rules, clock, out-of-band deletion.
"""

from .config import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_ACCOUNT_ID,
    AccountConfig,
    CloudDurations,
    EmulatorConfig,
    RoleConfig,
)
from .server import Emulator

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_ACCOUNT_ID",
    "AccountConfig",
    "CloudDurations",
    "Emulator",
    "EmulatorConfig",
    "RoleConfig",
]
