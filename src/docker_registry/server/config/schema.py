"""The configuration schema: every key, its type, default and meaning, declared once.

Keys follow CNCF Distribution's config.yml where the feature is the same, so an operator's file mostly works. The
models keep the file's shape (`http.tls.certificate`); properties give the rest of the server the flat settings it
reads (`config.http.tls_certificate`, `config.storage.delete_enabled`). Descriptions are the docs' key table.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, cast

from pydantic import ConfigDict, Field, PlainValidator, PrivateAttr, model_validator

from .notifications import NotificationsConfig
from .proxy import ProxyConfig
from .section import OURS, DriverSection, Refused, Secret, Section, Shown, Unsupported, declared, notices, section_type
from .values import (
    HTTPURL,
    AbsolutePath,
    Address,
    Bool,
    DatabaseURL,
    Directory,
    Duration,
    Headers,
    LogFormatter,
    LogLevel,
    Mapping,
    Network,
    NonNegativeInt,
    PositiveInt,
    Space,
    Text,
    TLSVersion,
    Umask,
    URLPath,
    Version,
    absolute_path,
    hide_header_values,
    hide_password,
    hide_url_secrets,
    invalid,
    problem,
    split_addr,
)

NOT_YET = Unsupported()


# --- log -----------------------------------------------------------------------------------------------------------


def _field_value(value: Any) -> str:
    """A log field's value: text, or a number or boolean as YAML read it (Distribution's fields take any value;
    `replicas: 3` refused a Distribution file), written as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str) or not value:
        raise invalid("a non-empty string or a number", value)
    return value


FieldValue = Annotated[str, PlainValidator(_field_value)]


class AccessLogSection(Section):
    disabled: Bool = Field(
        False,
        description="the access log (one line per request: request id, client, method, path, status, bytes, "
        "duration, user agent; never credentials) goes to stderr unless disabled",
    )


class LogConfig(Section):
    level: LogLevel = Field(
        "info",
        description="`error`, `warn`, `info`, `debug` (logrus' `warning`, `fatal`, `panic`, `trace` are folded onto "
        "these)",
    )
    access: AccessLogSection = Field(default_factory=AccessLogSection, alias="accesslog")
    formatter: LogFormatter = Field(
        "text",
        description="`text` (readable lines), `json` (one object a line) or `logfmt` (`key=value` pairs); applies to "
        "every log line, the access log included",
    )
    fields: Annotated[dict[str, FieldValue], Mapping] = Field(
        default_factory=dict, description="map of names to values added to every log line (e.g. `service: registry`)"
    )
    hooks: Annotated[object, NOT_YET] = Field(None, exclude=True)
    reportcaller: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @property
    def accesslog(self) -> bool:
        return not self.access.disabled


# --- storage -------------------------------------------------------------------------------------------------------


class FilesystemOptions(DriverSection):
    model_config = ConfigDict(extra="forbid")  # the built-in drivers' options are all known: a typo is an error

    rootdirectory: Directory = Field(
        "./data",
        description="blobs (and, by default, `registry.db`); a relative path is taken from the current directory; "
        "created if missing, refused if something other than a directory is there",
    )
    maxthreads: Annotated[object, Unsupported("not used by this registry; ignored")] = Field(None, exclude=True)


class InMemoryOptions(DriverSection):
    """No options of its own: the section's presence selects the driver."""


class S3Options(DriverSection):
    """CNCF Distribution's `storage.s3` keys (docs/s3.md); the driver checks ranges and combinations itself."""

    model_config = ConfigDict(extra="forbid")

    bucket: Text | None = Field(None, description="the bucket (required); must exist: the registry does not create it")
    region: Text | None = Field(
        None, description="the AWS region; default from `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`"
    )
    regionendpoint: Text | None = Field(
        None, description="the S3 endpoint of a compatible service (MinIO, Ceph RGW), e.g. `http://minio:9000`"
    )
    accesskey: Annotated[Text | None, Secret()] = Field(
        None,
        description="with `secretkey`; neither means credentials from the environment (`AWS_ACCESS_KEY_ID`...), a "
        "shared credentials file or the instance profile",
    )
    secretkey: Annotated[Text | None, Secret()] = Field(None, description="the secret of `accesskey`")
    sessiontoken: Annotated[Text | None, Secret()] = Field(None, description="a temporary session's token")
    rootdirectory: Text | None = Field(None, description="a key prefix under which everything is stored")
    secure: Bool = Field(True, description="HTTPS to a `regionendpoint` given without a scheme")
    skipverify: Bool = Field(False, description="do not verify the endpoint's TLS certificate")
    encrypt: Bool = Field(False, description="server-side encryption of every object (SSE-S3, or SSE-KMS with `keyid`)")
    keyid: Text | None = Field(None, description="the KMS key for `encrypt`")
    chunksize: PositiveInt = Field(
        10 * 1024 * 1024,
        description="bytes of a multipart upload's parts (at least 5 MiB): what a writing request holds in memory",
    )
    forcepathstyle: Bool = Field(False, description="path-style URLs (`endpoint/bucket/key`), as MinIO needs")
    storageclass: Text = Field(
        "STANDARD", description="the storage class of new objects (`STANDARD`, `STANDARD_IA`, ..., or `NONE`)"
    )
    objectacl: Text | None = Field(None, description="a canned ACL for new objects (e.g. `private`)")
    multipartcopythresholdsize: PositiveInt = Field(
        32 * 1024 * 1024, description="objects above this size are copied in parts (a completed upload to its blob)"
    )
    multipartcopychunksize: PositiveInt = Field(32 * 1024 * 1024, description="the size of those parts")
    multipartcopymaxconcurrency: PositiveInt = Field(100, description="parts copied at once")
    v4auth: Annotated[object, Unsupported("signature version 4 is always used; ignored")] = Field(None, exclude=True)
    useragent: Annotated[object, NOT_YET] = Field(None, exclude=True)
    usedualstack: Annotated[object, NOT_YET] = Field(None, exclude=True)
    accelerate: Annotated[object, NOT_YET] = Field(None, exclude=True)
    loglevel: Annotated[object, Unsupported("use `log.level`; ignored")] = Field(None, exclude=True)


class DeleteSection(Section):
    enabled: Bool = Field(False, description="allow DELETE of manifests, tags and blobs")


class ReadOnlySection(Section):
    enabled: Bool = Field(False, description="refuse every write (405 UNSUPPORTED, as Distribution answers)")


class UploadPurgingSection(Section):
    enabled: Bool = Field(True, description="end abandoned upload sessions and delete their data")
    age: Duration = Field(168 * 3600.0, description="sessions begun longer ago than this are abandoned")
    interval: Duration = Field(24 * 3600.0, description="how often one process of the registry looks for them")
    dryrun: Bool = Field(False, description="only log what would be purged")


class MaintenanceSection(Section):
    readonly: ReadOnlySection = Field(default_factory=ReadOnlySection)
    uploadpurging: UploadPurgingSection = Field(default_factory=UploadPurgingSection)


class RedirectSection(Section):
    disable: Bool = Field(False, description="do not redirect blob downloads to the driver's URLs")


def _is_driver(section: type[Section] | None) -> bool:
    return section is not None and issubclass(section, DriverSection)


class StorageConfig(Section):
    """Exactly one driver section (`filesystem`, `inmemory`, or any installed driver's name) beside the settings
    every driver shares; none means `filesystem` with its defaults."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, DriverSection] = Field(init=False)
    EXTRA_KEYS = (
        "<driver>",
        "any other installed driver, with its own options (e.g. `storage.s3.bucket`); exactly one driver",
    )

    filesystem: FilesystemOptions | None = None
    inmemory: InMemoryOptions | None = Field(None, description="blobs in memory (tests); forces one worker")
    s3: S3Options | None = Field(None, description="blobs in an S3-compatible bucket (docs/s3.md)")
    delete: DeleteSection = Field(default_factory=DeleteSection)
    maintenance: MaintenanceSection = Field(default_factory=MaintenanceSection)
    redirects: RedirectSection = Field(default_factory=RedirectSection, alias="redirect")
    umask: Annotated[Umask, OURS] = Field(
        cast(Any, "0022"),  # as a file writes it, and read as one (validate_default): the mask 0o022
        description="the file mode mask the registry sets at start, whatever its parent had, in octal digits as the "
        'shell\'s `umask` takes them, with a leading zero or quoted (`0022` or `"22"`: blobs 0644, directories 0755; '
        "`0027` keeps other users out); a bare number from 8 up is refused, as it could be meant either way "
        "(`umask: 77` by a person, `umask: 23` by a tool that wrote the mask 0o027)",
    )
    minfree: Annotated[Space | None, OURS] = Field(
        None,
        description="free space the filesystem driver keeps: below it, new uploads and chunks answer 507 at once "
        "(a size such as `2GiB` or a percentage such as `5%`)",
    )
    cache: Annotated[object, Unsupported("ignored; this registry keeps its own caches in each process")] = Field(
        None, exclude=True
    )
    tag: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @classmethod
    def shared_keys(cls) -> set[str]:
        """The keys that are not a driver's section."""
        return {key for _, key, field in declared(cls) if not _is_driver(section_type(field.annotation))}

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        drivers = [key for key in data if key not in cls.shared_keys()]
        if len(drivers) > 1:
            raise problem(f"exactly one storage driver may be configured, got {', '.join(drivers)}")
        driver = drivers[0] if drivers else "filesystem"
        return {**data, driver: {} if data.get(driver) is None else data[driver]}  # `inmemory:` alone selects it

    def _driver_section(self) -> tuple[str, DriverSection]:
        """`prepare` left exactly one driver section."""
        if self.filesystem is not None:
            return "filesystem", self.filesystem
        if self.inmemory is not None:
            return "inmemory", self.inmemory
        if self.s3 is not None:
            return "s3", self.s3
        return next(iter((self.model_extra or {}).items()))

    @property
    def driver(self) -> str:
        """The name given to `docker_registry.core.driver.fetch` ("filesystem", "inmemory", "s3", ...)."""
        return self._driver_section()[0]

    @property
    def options(self) -> dict[str, Any]:
        """The driver's own section as the driver takes it, e.g. storage.filesystem -> {"rootdirectory": "/data"}."""
        return self._driver_section()[1].model_dump()

    @property
    def delete_enabled(self) -> bool:
        return self.delete.enabled

    @property
    def readonly(self) -> bool:
        return self.maintenance.readonly.enabled

    @property
    def redirect(self) -> bool:
        """Use the driver's content_redirect_url for blob GETs when it has one."""
        return not self.redirects.disable

    def describe(self) -> str:
        """For the start-up log line."""
        if self.filesystem is not None:
            return f"filesystem ({self.filesystem.rootdirectory})"
        if self.s3 is not None:
            return f"s3 (bucket {self.s3.bucket}{', ' + self.s3.regionendpoint if self.s3.regionendpoint else ''})"
        return self.driver


# --- http ----------------------------------------------------------------------------------------------------------


class TLSSection(Section):
    certificate: AbsolutePath | None = Field(
        None, description="serve HTTPS in-process (this disables sendfile: for speed, terminate TLS in front)"
    )
    key: AbsolutePath | None = Field(None, description="the certificate's private key; give both or neither")
    minimum: TLSVersion = Field("tls1.2", alias="minimumtls", description="`tls1.2` or `tls1.3`")
    clientcas: list[AbsolutePath] | None = Field(
        None,
        description="CA certificates (PEM files) that client certificates must chain to: a connection without such a "
        "certificate is refused during the TLS handshake (mTLS)",
    )
    # Ignoring letsencrypt would serve plain HTTP where HTTPS is expected: refuse to start instead.
    letsencrypt: Annotated[object, Refused("not supported yet; give http.tls.certificate and key")] = Field(
        None, exclude=True, validate_default=False
    )
    ciphersuites: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _pair(self) -> TLSSection:
        if bool(self.certificate) != bool(self.key):
            raise problem("certificate and key must be given together")
        if self.clientcas is not None and not self.certificate:
            raise problem("clientcas needs certificate and key: client certificates are checked in TLS only")
        return self


class TimeoutSection(Section):
    header: Annotated[Duration, OURS] = Field(
        10.0,
        description="a connection that has not sent a whole request head this long after it was accepted is "
        "closed (silent sockets, slowloris)",
    )
    idle: Annotated[Duration, OURS] = Field(
        60.0, description="a keep-alive connection idle this long between requests is closed"
    )
    minrate: Annotated[NonNegativeInt, OURS] = Field(
        1024,
        description="bytes per second a request body must average over each `ratewindow`, else the request ends "
        "(408); 0 turns the check off",
    )
    ratewindow: Annotated[Duration, OURS] = Field(60.0, description="the window `minrate` is averaged over")


class PrometheusSection(Section):
    enabled: Bool = Field(False, description="serve Prometheus metrics on the debug listener (`http.debug.addr`)")
    path: URLPath = Field("/metrics", description="the path of the metrics on the debug listener")


class DebugSection(Section):
    addr: Address | None = Field(
        None,
        description="a second listener, meant to stay private, serving `/debug/health` and the metrics; bound once "
        "(by the first worker), whatever the number of workers",
    )
    prometheus: PrometheusSection = Field(default_factory=PrometheusSection)

    @model_validator(mode="after")
    def _needs_addr(self) -> DebugSection:
        if self.prometheus.enabled and self.addr is None:
            raise problem("prometheus.enabled needs addr: the metrics are served on the debug listener")
        return self

    def host_port(self) -> tuple[str | None, int]:
        assert self.addr is not None
        return split_addr(self.addr)


def _overlap(host: str | None, other: str | None) -> bool:
    """Whether two listeners' hosts share addresses on one port: the same host, every interface (None), or the
    wildcard of the other's family (IPv6 listeners are bound v6-only, so "[::]" and "127.0.0.1" do not meet)."""
    if host is None or other is None or host == other:
        return True
    wildcards = {"0.0.0.0": False, "::": True}  # the wildcard -> whether it is IPv6
    return (host in wildcards and wildcards[host] == (":" in other)) or (
        other in wildcards and wildcards[other] == (":" in host)
    )


class HTTPConfig(Section):
    addr: Address = Field("127.0.0.1:5000", description="`host:port`, `[v6]:port`, or `:port` for every interface")
    net: Network = Field("tcp", description="`tcp` only (unix sockets are not supported yet)")
    secret: Annotated[Text | None, Secret()] = Field(
        None,
        description="accepted for compatibility with Distribution's configuration files and masked by `config`; it "
        "does nothing yet (Distribution signs upload state with it: our upload sessions live in the database instead)",
    )
    headers: Headers = Field(
        default_factory=dict, description="map of header name to a list of values, added to every response"
    )
    workers: Annotated[PositiveInt | None, OURS, Shown("one per usable core")] = Field(
        None,
        description="worker processes sharing the port (SO_REUSEPORT); always 1 with the inmemory driver; by default "
        "one per core the process may use: its CPU affinity (`taskset`, `--cpuset-cpus`) and a cgroup CPU limit "
        "(`docker run --cpus`, a Kubernetes CPU limit, rounded up) count, not the host's cores",
    )
    draintimeout: Duration = Field(
        30.0,
        description="on SIGTERM/SIGINT, how long requests in flight may take to finish (seconds or `1m30s`)",
    )
    tls: TLSSection = Field(default_factory=TLSSection)
    timeout: TimeoutSection = Field(default_factory=TimeoutSection)
    maxconnections: Annotated[PositiveInt | None, OURS, Shown("the descriptor limit less 256")] = Field(
        None,
        description="open connections per worker; one beyond is closed as it is accepted (the descriptor limit is "
        "raised to the hard limit at start)",
    )
    prefix: Annotated[object, NOT_YET] = Field(None, exclude=True)
    host: Annotated[object, NOT_YET] = Field(None, exclude=True)
    relativeurls: Annotated[object, NOT_YET] = Field(None, exclude=True)
    debug: DebugSection = Field(default_factory=DebugSection)
    http2: Annotated[object, NOT_YET] = Field(None, exclude=True)
    h2c: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _debug_apart(self) -> HTTPConfig:
        """The debug listener on the main port: each worker binds the main port first, then the first worker found
        its debug port taken (by itself or another worker) and the registry stopped, after a traceback."""
        if self.debug.addr is None:
            return self
        (host, port), (debug_host, debug_port) = self.host_port(), self.debug.host_port()
        if port == debug_port and _overlap(host, debug_host):
            raise problem(
                f"debug.addr {self.debug.addr!r} is the port http.addr {self.addr!r} listens on: the debug listener "
                "needs a port of its own"
            )
        return self

    @property
    def tls_certificate(self) -> str | None:
        return self.tls.certificate

    @property
    def tls_key(self) -> str | None:
        return self.tls.key

    @property
    def tls_minimum(self) -> str:
        return self.tls.minimum

    def host_port(self) -> tuple[str | None, int]:
        """The address to bind; host None means every interface (Distribution's ":5000")."""
        return split_addr(self.addr)

    @property
    def worker_count(self) -> int:
        """The worker processes `serve` runs: `workers`, else one per core the process may use."""
        return self.workers or usable_cores()


CGROUP_CPU_LIMIT = "/sys/fs/cgroup/cpu.max"
"""cgroup v2's CPU bandwidth limit of the process's group ("max 100000", or "200000 100000" for two cores), which a
container's `--cpus` or a Kubernetes CPU limit sets."""


def usable_cores() -> int:
    """The cores this process may run on: those its CPU affinity allows (`taskset`, `docker run --cpuset-cpus`),
    fewer when a cgroup CPU limit allows less time (`docker run --cpus 2`), rounded up. `os.cpu_count()` counts the
    host's cores, so a container limited to 2 of a 64-core host started 64 workers, 64 times the memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_LIMIT, encoding="ascii") as limit:
            quota, period = limit.read().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(cores, 1)


# --- health -------------------------------------------------------------------------------------------------------


class CheckSection(Section):
    enabled: Bool = Field(True, description="run this check (readiness and `/debug/health` report it)")
    interval: Duration = Field(10.0, description="time between two runs of the check, in the background")
    threshold: PositiveInt = Field(
        1, description="failures in a row after which the check makes the registry unhealthy (one success heals it)"
    )

    @model_validator(mode="after")
    def _interval(self) -> CheckSection:
        if self.interval <= 0:
            raise problem("interval must be above zero")
        return self


class _ListedCheck(Section):
    """What Distribution's `health.file`, `health.http` and `health.tcp` entries share (its defaults: 10 s, and a
    threshold of 0, which fails at the first failure as 1 does)."""

    interval: Duration = Field(10.0, description="time between two runs of the check, in the background")
    threshold: NonNegativeInt = Field(
        0, description="failures in a row after which the check makes the registry unhealthy (0 and 1: the first)"
    )

    @model_validator(mode="after")
    def _interval(self) -> _ListedCheck:
        if self.interval <= 0:
            raise problem("interval must be above zero")
        return self


class FileCheckSection(_ListedCheck):
    file: Text = Field(description="the path checked: unhealthy while a file (or anything) exists there")


class HTTPCheckSection(_ListedCheck):
    uri: Annotated[HTTPURL, Secret(hide_url_secrets)] = Field(description="the URL sent a HEAD request")
    headers: Annotated[Headers, Secret(hide_header_values)] = Field(
        default_factory=dict, description="map of header name to a list of values, sent with it"
    )
    statuscode: PositiveInt = Field(200, description="the status the answer must have")
    timeout: Duration = Field(0.0, description="the most one request may take (0: the check's own limit)")


class TCPCheckSection(_ListedCheck):
    addr: Address = Field(description="`host:port` that must accept a connection")
    timeout: Duration = Field(0.0, description="the most connecting may take (0: the check's own limit)")


class HealthConfig(Section):
    storagedriver: CheckSection = Field(
        default_factory=CheckSection,
        description="storage writable (a small file written and removed), and free space above `storage.minfree`",
    )
    database: Annotated[CheckSection, OURS] = Field(
        default_factory=CheckSection, description="the metadata database answers and its schema is current"
    )
    unavailable: Annotated[Bool, OURS] = Field(
        False,
        description="while a check fails, answer 503 UNAVAILABLE to API requests too (Distribution's behaviour), "
        "not only to `/readyz` and `/debug/health`",
    )
    file: list[FileCheckSection] = Field(
        default_factory=list,
        description="files whose presence makes the registry unhealthy (`{file, interval: 10s, threshold: 0}`), "
        "e.g. a maintenance flag an operator creates to take a node out of a load balancer",
    )
    http: list[HTTPCheckSection] = Field(
        default_factory=list,
        description="URLs that must answer `statuscode` to a HEAD request (`{uri, headers, statuscode: 200, "
        "timeout: 0s, interval: 10s, threshold: 0}`; a timeout of 0 leaves the check's own limit, the larger of its "
        "interval and 10 s)",
    )
    tcp: list[TCPCheckSection] = Field(
        default_factory=list,
        description="addresses that must accept a TCP connection (`{addr, timeout: 0s, interval: 10s, threshold: 0}`)",
    )


# --- ours: database, validation ------------------------------------------------------------------------------------


class DatabaseConfig(Section):
    url: Annotated[DatabaseURL | None, OURS, Secret(hide_password), Shown("SQLite in the root directory")] = Field(
        None,
        description="SQLAlchemy URL, e.g. `postgresql://user:pw@host/registry` (psycopg 3, the `postgres` extra); "
        "several nodes share one PostgreSQL database (docs/deployment.md)",
    )
    locktimeout: Annotated[Duration, OURS] = Field(
        5.0,
        description="how long a write waits for a lock held elsewhere before it answers 503 UNAVAILABLE with "
        "`Retry-After` (at most about twice this, counting the writes queued ahead; reads never wait for writes)",
    )
    readthreads: Annotated[PositiveInt, OURS] = Field(8, description="threads per worker running database reads")


class ManifestsSection(Section):
    maxbytes: Annotated[PositiveInt, OURS] = Field(
        4 * 1024 * 1024, description="largest manifest accepted (larger PUTs get 413 MANIFEST_INVALID)"
    )
    urls: Annotated[object, NOT_YET] = Field(None, exclude=True)
    indexes: Annotated[object, NOT_YET] = Field(None, exclude=True)


class ValidationConfig(Section):
    manifests: ManifestsSection = Field(default_factory=ManifestsSection)
    enabled: Annotated[object, NOT_YET] = Field(None, exclude=True)
    disabled: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @property
    def manifest_max_bytes(self) -> int:
        return self.manifests.maxbytes


# --- auth, access ---------------------------------------------------------------------------------------------------


def _readable_file(value: Any) -> str:
    """The htpasswd file must be there and readable when the registry starts (its content is checked by `serve`)."""
    path = absolute_path(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise problem(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return path


ReadableFile = Annotated[str, PlainValidator(_readable_file)]
ACTIONS = ("pull", "push", "delete")
GroupMembers = Annotated[dict[str, list[Text]], Mapping]


class HtpasswdSection(Section):
    realm: Text = Field("docker-registry", description="the realm of the `WWW-Authenticate: Basic` challenge")
    path: ReadableFile = Field(
        description="an htpasswd file of bcrypt entries (`htpasswd -B`); re-read when it changes (checked at most "
        "once a second); missing or unreadable at start is a configuration error",
    )
    groups: Annotated[GroupMembers, OURS] = Field(
        default_factory=dict,
        description="map of group name to a list of users of the file, for `access` rules with `who: group:<name>`",
    )


SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Public-key algorithms only: `none` and the HMAC family (HS256...) would let anyone holding the public key, or
nobody at all, sign a token."""


def _signing_algorithms(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise invalid("a non-empty list of algorithms", value)
    for algorithm in value:
        if algorithm not in SIGNING_ALGORITHMS:
            raise problem(f"{algorithm!r} is not accepted; choose among {', '.join(SIGNING_ALGORITHMS)}")
    return list(dict.fromkeys(value))


def _token_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise invalid("a path such as /auth/token", value)
    path = value
    if not path.startswith("/") or path.rstrip("/") in ("", "/v2") or path.startswith("/v2/") or "?" in path:
        raise problem(f"{path!r} must be an absolute path outside /v2, such as /auth/token")
    return path


SigningAlgorithms = Annotated[list[str], PlainValidator(_signing_algorithms)]
TokenPath = Annotated[str, PlainValidator(_token_path)]


class TokenIssueSection(Section):
    path: Annotated[TokenPath, OURS] = Field(
        "/auth/token", description="where the built-in token service answers (outside /v2)"
    )
    key: Annotated[ReadableFile, OURS] = Field(
        description="PEM private key the tokens are signed with (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA); "
        "the registry trusts it without `rootcertbundle`",
    )
    lifetime: Annotated[Duration, OURS] = Field(300.0, description="how long an access token is valid (`5m`)")
    refreshlifetime: Annotated[Duration, OURS] = Field(
        7 * 86400.0,
        description="how long a refresh token (asked with `offline_token=true` or `access_type=offline`) is valid; "
        "a changed password or a removed user ends it at once",
    )
    htpasswd: Annotated[ReadableFile | None, OURS] = Field(
        None, description="the users (an htpasswd file of bcrypt entries); without it only anonymous tokens exist"
    )
    groups: Annotated[GroupMembers, OURS] = Field(
        default_factory=dict,
        description="map of group name to a list of users, for `access` rules with `who: group:<name>`",
    )


class TokenSection(Section):
    realm: Text | None = Field(
        None,
        description="the token service's URL clients are sent to in the `Bearer` challenge; with `issue`, by default "
        "the registry's own service at the address the client used",
    )
    service: Text = Field(description="the `service` of the challenge, and the audience every token must name")
    issuer: Text = Field(description="the `iss` every token must carry (and the built-in service signs with)")
    rootcertbundle: ReadableFile | None = Field(
        None,
        description="PEM certificates trusted to sign tokens: a token's `x5c` chain must end at one of them, or its "
        "`kid` name one of their keys (the libtrust key id Distribution uses)",
    )
    jwks: ReadableFile | None = Field(
        None, description="a JSON Web Key Set file: a token whose `kid` names one of its keys is checked with it"
    )
    signingalgorithms: SigningAlgorithms = Field(
        list(SIGNING_ALGORITHMS),
        description="the algorithms a token may be signed with; never `none` nor HMAC (the list, not the token's "
        "header, decides)",
    )
    issue: Annotated[TokenIssueSection | None, OURS] = Field(
        None, description="the built-in token service, so token authentication needs no other server"
    )
    autoredirect: Annotated[object, NOT_YET] = Field(None, exclude=True)
    autoredirectpath: Annotated[object, NOT_YET] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _keys(self) -> TokenSection:
        if self.rootcertbundle is None and self.jwks is None and self.issue is None:
            raise problem("no key to check tokens with: give rootcertbundle, jwks, or issue (the built-in service)")
        if self.realm is None and self.issue is None:
            raise problem("realm is required (the URL of the token service clients are sent to)")
        return self

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.issue.groups if self.issue is not None else {}


class AuthConfig(Section):
    htpasswd: HtpasswdSection | None = Field(
        None, description="Basic authentication against an htpasswd file; without `auth` the registry is open"
    )
    token: TokenSection | None = Field(
        None, description="bearer tokens (Docker's token authentication), from an external or the built-in service"
    )
    # Ignoring this would serve everyone what the operator meant to protect: refuse to start instead.
    silly: Annotated[object, Refused("not supported; use auth.htpasswd")] = Field(
        None, exclude=True, validate_default=False
    )

    @model_validator(mode="after")
    def _one(self) -> AuthConfig:
        if (self.htpasswd is None) == (self.token is None):
            raise problem("an auth section needs exactly one backend: auth.htpasswd or auth.token")
        return self

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.htpasswd.groups if self.htpasswd is not None else self.token.groups if self.token else {}


class AccessRule(Section):
    who: Text = Field(description="a user, `group:<name>`, `anonymous` or `authenticated`")
    repositories: list[Text] = Field(description="globs over repository names (`team-a/*`, `*`); `*` spans `/`")
    actions: list[Text] = Field(description="`pull`, `push`, `delete`, or `*` for all three")

    @model_validator(mode="after")
    def _check(self) -> AccessRule:
        if not self.who.strip():
            raise problem("who must name a user, group:<name>, anonymous or authenticated")
        if not self.repositories:
            raise problem("repositories must list at least one glob")
        for action in self.actions:
            if action != "*" and action not in ACTIONS:
                raise problem(f"unknown action {action!r}: pull, push, delete or *")
        if not self.actions:
            raise problem("actions must list at least one action")
        return self


# --- v1 ----------------------------------------------------------------------------------------------------------


class V1Config(Section):
    enabled: Annotated[Bool, OURS] = Field(
        True,
        description="serve the legacy v1 API of the original docker-registry (`/v1/...`, `/_ping`; see docs/v1.md); "
        "off with `auth.token`, which docker 1.x engines cannot use",
    )


class UIConfig(Section):
    enabled: Annotated[Bool, OURS] = Field(
        True, description="serve the web UI at `/ui/` (browse, inspect, delete; see docs/ui.md)"
    )
    secret: Annotated[Text | None, OURS, Secret(), Shown("random, new at each start")] = Field(
        None,
        description="the key that signs UI session cookies and CSRF tokens; set the same one on every node behind "
        "a load balancer, or logins last only until the registry restarts",
    )
    sessionlifetime: Annotated[Duration, OURS] = Field(
        43200.0, description="how long a UI login lasts (`12h`); the cookie then expires and the form asks again"
    )


# --- ours: garbage collection --------------------------------------------------------------------------------------


class GCConfig(Section):
    enabled: Annotated[Bool, OURS] = Field(
        True,
        description="collect garbage online, in one process of the registry at a time (on several nodes too): "
        "unreferenced links and blobs, untagged manifests with `deleteuntagged`, temporary files, empty "
        "repositories",
    )
    interval: Annotated[Duration, OURS] = Field(
        3600.0, description="time between two collections, all workers and nodes together (at least 1s)"
    )
    delay: Annotated[Duration, OURS] = Field(
        24 * 3600.0,
        description="grace period: something unreferenced is deleted only once it has stayed so this long (a push, "
        "a mount, a re-upload or a client's HEAD meanwhile saves it); temporary files older than this are deleted",
    )
    deleteuntagged: Annotated[Bool, OURS] = Field(
        False, description="also delete manifests no tag reaches (as `garbage-collect --delete-untagged` does)"
    )


# --- the whole file ------------------------------------------------------------------------------------------------


class Config(Section):
    """The effective configuration; `load()` makes one from the file and the environment."""

    version: Version = Field("0.1", description="the only version there is")
    log: LogConfig = Field(default_factory=LogConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    http: HTTPConfig = Field(default_factory=HTTPConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    # Distribution's sections (and our plans) that are accepted but do nothing yet.
    auth: AuthConfig | None = Field(
        None, description="authentication; without it every request is served (see Authentication below)"
    )
    access: Annotated[list[AccessRule], OURS] = Field(
        default_factory=list,
        description="access rules `{who, repositories, actions}` (see Authentication below); with `auth`, what no "
        "rule grants is refused, and with no rules every authenticated user may do everything",
    )
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    redis: Annotated[object, Unsupported("not supported yet; ignored (caches are per process)")] = Field(
        None, exclude=True
    )
    health: HealthConfig = Field(default_factory=HealthConfig)
    proxy: ProxyConfig | None = Field(
        None, description="the pull-through cache (see docs/proxy.md); without it every repository is local"
    )
    middleware: Annotated[object, NOT_YET] = Field(None, exclude=True)
    reporting: Annotated[object, NOT_YET] = Field(None, exclude=True)
    compatibility: Annotated[object, NOT_YET] = Field(None, exclude=True)
    catalog: Annotated[object, NOT_YET] = Field(None, exclude=True)
    policy: Annotated[object, NOT_YET] = Field(None, exclude=True)
    loglevel: Annotated[object, Unsupported("deprecated in Distribution and ignored; use log.level")] = Field(
        None, exclude=True
    )
    gc: Annotated[GCConfig, OURS] = Field(default_factory=GCConfig)
    ui: Annotated[UIConfig, OURS] = Field(default_factory=UIConfig)
    v1: Annotated[V1Config, OURS] = Field(default_factory=V1Config)

    _notices: list[str] = PrivateAttr(default_factory=list)

    @property
    def notices(self) -> list[str]:
        """Accepted-but-ignored settings (Distribution features we do not have yet); `serve` logs them as warnings."""
        return self._notices

    @model_validator(mode="after")
    def _settle(self) -> Config:
        if self.storage.driver == "inmemory":
            # In-memory blobs live in one process: a second worker would not see what the first one stored.
            if self.http.workers is not None and self.http.workers > 1:
                raise problem(f"http.workers: the inmemory storage driver needs 1 worker, got {self.http.workers}")
            self.http.workers = 1
        if "auth" in self.model_fields_set and self.auth is None:  # `auth:` alone: asked for, but for nothing
            raise problem("auth: an auth section needs a backend: auth.htpasswd or auth.token")
        if self.access and self.auth is None:
            raise problem("access: rules need an auth section (auth.htpasswd, or auth.token.issue)")
        if self.access and self.auth is not None and self.auth.token is not None and self.auth.token.issue is None:
            raise problem("access: with an external token service the rules are its business; remove them")
        groups = self.auth.groups if self.auth is not None else {}
        for number, rule in enumerate(self.access):
            if rule.who.startswith("group:") and rule.who.removeprefix("group:") not in groups:
                raise problem(
                    f"access[{number}].who: no group {rule.who.removeprefix('group:')!r} in the auth section's groups"
                )
        self._notices = list(notices(self))
        return self


SECTIONS = {key for _, key, _ in declared(Config)}
"""Every top-level key, in effect or accepted and ignored: a REGISTRY_* variable naming none of them is no key."""
