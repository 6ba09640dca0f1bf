"""A local ECI DataCache service that the unmodified Alibaba Cloud SDK talks to over HTTP.

Like LocalStack for AWS: the operator, its tests and users' CI run against it without an
Alibaba Cloud account. Point the SDK at it with
``Config(access_key_id=..., access_key_secret=..., endpoint=emu.endpoint, protocol="http")``.

Start it with ``eci-datacache-emulator --port 0`` (prints ``ECI_ENDPOINT=host:port``
first), ``async with Emulator(EmulatorConfig()) as emu:``, or ``with
Emulator(config).in_thread() as emu:`` for synchronous code.

Accounts (``accounts.py``): the configured key pair belongs to the default account
(``account_id``, default ``1000000000000001``); ``EmulatorConfig.accounts`` (CLI ``--account
ID:KEY_ID:KEY_SECRET``, repeatable) adds accounts, each with AccessKey pairs, RAM roles and
caches, client tokens, quota and container groups of its own. A key sees only its account's:
DescribeDataCaches leaves other accounts' caches out, and Update, Delete or Copy of another
account's cache id is 404 ``DataCache.NotFound``, as for an id that does not exist. Cache and
group ids are unique across accounts; the virtual clock is shared. The rate limit is ECI's flow
control: per account, all its keys and its STS keys together (STS calls are not counted). The
admin API shows every account's objects with their ``AccountId``, lists accounts and keys
(never secrets), and disables (400 ``InvalidAccessKeyId.Inactive`` "Specified access key is
disabled.", checked before the signature), enables, revokes (404
``InvalidAccessKeyId.NotFound``) or adds keys. The state file (version 2) keeps caches per
account; a version 1 file loads into the default account; caches of an account no longer
configured are dropped with a warning.

RAM roles and STS: an account's roles (``RoleConfig``, CLI ``--role
ACCOUNT:NAME[:max=S][:trust=ID,ID]``) have ARN ``acs:ram::<account>:role/<name>``; their own
account may assume them, ``trusted_accounts`` others. ``Action=AssumeRole`` with ``Version
2015-04-01`` (V1 ``HMAC-SHA1``, GET or POST, checked with the caller's key like any call)
answers ``RequestId``, ``AssumedRoleUser`` and ``Credentials {AccessKeyId "STS.…",
AccessKeySecret, SecurityToken, Expiration "%Y-%m-%dT%H:%M:%SZ"}``. The temporary key acts as
the ROLE's account, must carry its token on every call (none: ``InvalidSecurityToken.Malformed``;
another: ``.MismatchWithAccessKey``) and expires at Expiration on the virtual clock (then 400
``InvalidSecurityToken.Expired`` "Specified SecurityToken is expired."; advancing the clock
expires it). DurationSeconds 900 (``sts_min_duration_seconds``, ``--sts-min-duration``) ..
the role's ``max_session_duration`` (3600). Refusals, in STS's codes: ``EntityNotExist.Role``
(404), ``NoPermission`` (403, not trusted), ``InvalidParameter.RoleArn``,
``.RoleSessionName``, ``.DurationSeconds``, ``.PolicyGrammar``, ``.PolicySize`` (400),
``MissingRoleArn``/``MissingRoleSessionName`` (400, chosen: STS documents no code for them).
A ``Policy`` is checked for grammar but not enforced; every permanent key may assume a role
(no root-account keys here). Errors from STS carry ``HostId sts.aliyuncs.com``; faults are not
injected into STS calls.

HTTPS (``tls.py``): the credentials library calls STS over https only, so unless ``tls=False``
(``--no-tls``) the emulator serves the same API (ECI, STS, admin) on a second, TLS port
(``emu.tls_endpoint`` = ``emu.sts_endpoint``; CLI ``ECI_STS_ENDPOINT=``) with a certificate for
127.0.0.1, ::1 and localhost from a local CA whose certificate is ``emu.ca_file`` (CLI
``ECI_EMULATOR_CA_FILE=``). A second port rather than one port for both because aiohttp serves
one protocol a socket and plain-HTTP clients stay as they were. The CA lives in ``tls_dir``
(``--tls-dir``; reused when present) or a temporary directory removed at stop. Trust it with
``SSL_CERT_FILE=<ca file>`` for the credentials library (its requests session passes
``verify=True`` and loads OpenSSL's default paths, which that variable names; requests' own
``REQUESTS_CA_BUNDLE`` is not read by the ``session.send`` it uses). It caches TLS sessions
per host and port for the process, so share one ``tls_dir`` between emulators of a process.
The provider decides staleness by its wall clock (Expiration - 15 min) and asks for at least
900 s: with 3600 s it keeps keys that the emulator's advanced clock expired (ECI refuses them);
with 900 s they are stale at once and it assumes the role before every call.

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

Limits and faults (``faults.py``): a per-account rate limit answers 400 ``Throttling.User``
with ``x-acs-retry-after`` (ms); seeded faults inject 500 ``InternalError``, 503
``ServiceUnavailable``, throttling, added latency and dropped connections.

Hubs (``hubs.py``): Hugging Face's ``GET /hub/huggingface/api/{models|datasets}/{repo}/revision/
{revision}`` and ModelScope's ``GET /hub/modelscope/api/v1/{models|datasets}/{owner}/{name}/commits
?Ref=...``, in each hub's answer and error shapes, so that ``DATACACHE_HUGGINGFACE_ENDPOINT`` /
``DATACACHE_MODELSCOPE_ENDPOINT`` = ``emu.hub_endpoint("huggingface" | "modelscope")`` pin branches
to commits here. A fresh emulator answers every repository's default branch (main, master) with
a commit derived from its names; the admin API sets refs, absent, private or gated repositories,
outages, and lists the hub calls. Not in the state file; reset forgets it.

Admin API (``admin.py``, client in ``admin_client.py``): state, call log, counters, reset,
faults, rules, clock, phase durations, out-of-band deletion, accounts and keys, hubs.
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
