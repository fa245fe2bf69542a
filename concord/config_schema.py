"""
The node configuration's schema: every section dataclass with its fields, defaults
(the only place defaults live) and value checkers, and `SECTIONS`, the table of them in
file order. A checker takes (key, raw value) and returns the typed value or raises a
ConfigError whose message starts with the key.

Parsing, path resolution, cross-field checks and the `--check` command are in
concord.config, which re-exports every public name here. Pure: no IO.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from concord.errors import ConfigError
from concord.ids import NODE_ID_RULE, NodeId, is_node_id

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MiB = 1024 * 1024

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --------------------------------------------------------------------------- checkers
#
# A checker takes (key, raw value) and returns the typed value or raises ConfigError
# naming the key. `field(metadata={"check": ...})` attaches one to each dataclass field.

Checker = Callable[[str, object], object]


def _show(value: object) -> str:
    """A value as it would be written in TOML (true, "text", 3, [...])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _fail(key: str, requirement: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: {requirement}, got {_show(value)}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def int_in(low: int, high: int | None = None) -> Checker:
    """An integer in low..high (high None = unbounded)."""
    if high is None:
        requirement = {0: "must be a non-negative integer", 1: "must be a positive integer"}.get(
            low, f"must be an integer >= {low}"
        )
    else:
        requirement = f"must be an integer from {low} to {high}"

    def check(key: str, value: object) -> object:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise _fail(key, requirement, value)
        return value

    return check


def seconds(low_exclusive: float = 0.0) -> Checker:
    """A finite number of seconds > low_exclusive (TOML integer or float)."""

    def check(key: str, value: object) -> object:
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= low_exclusive
        ):
            raise _fail(key, "must be a positive number of seconds", value)
        return float(value)

    return check


def boolean(key: str, value: object) -> object:
    """true or false."""
    if not isinstance(value, bool):
        raise _fail(key, "must be true or false", value)
    return value


def node_id(key: str, value: object) -> object:
    """A member id (concord.ids.NODE_ID_RULE)."""
    if not isinstance(value, str) or not is_node_id(value):
        raise _fail(key, f"must be {NODE_ID_RULE}", value)
    return NodeId(value)


def host(key: str, value: object) -> object:
    """An IP address or DNS name that peers and clients can connect to."""
    if not isinstance(value, str) or not value:
        raise _fail(key, "must be an IP address or host name", value)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        labels = value.rstrip(".").split(".")
        # RFC 1123: the top label is not all digits (so "127.0.0.01" is no host name).
        if (
            len(value) > 253
            or not all(_HOST_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()
        ):
            raise _fail(key, "must be an IP address or host name", value) from None
        return value
    if address.is_unspecified:
        raise _fail(key, "must be an address others can connect to, not a wildcard", value)
    return value


def port(key: str, value: object) -> object:
    """A TCP port, 0 meaning any free port."""
    if not _is_int(value) or not 0 <= value <= 65535:
        raise _fail(key, "must be a port number from 0 (any free port) to 65535", value)
    return value


def port_or_off(key: str, value: object) -> object:
    """A TCP port, 0 meaning any free port, -1 meaning none (the endpoint is off)."""
    if not _is_int(value) or not -1 <= value <= 65535:
        raise _fail(key, "must be -1 (off), 0 (any free port) or a port number up to 65535", value)
    return value


def path(key: str, value: object) -> object:
    """A non-empty path; `~` expands; relative ones resolve against the file's folder later."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _fail(key, "must be a non-empty path", value)
    return value


def optional_path(key: str, value: object) -> object:
    """A path or "" (off); relative ones resolve against the file's folder later."""
    if not isinstance(value, str) or "\x00" in value:
        raise _fail(key, "must be a path or an empty string", value)
    return value


def bind_address(key: str, value: object) -> object:
    """"" (the member's host), or an IP address or host name to listen on (wildcards allowed)."""
    if value == "":
        return value
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            return host(key, value)
    raise _fail(key, "must be \"\" (the member's host), an IP address or a host name", value)


def log_level(key: str, value: object) -> object:
    """A logging level name, any case."""
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise _fail(key, f"must be one of {', '.join(LOG_LEVELS)}", value)
    return value.upper()


def one_of(*choices: str) -> Checker:
    """One of the given strings."""

    def check(key: str, value: object) -> object:
        if not isinstance(value, str) or value not in choices:
            raise _fail(key, f"must be one of {', '.join(choices)}", value)
        return value

    return check


def non_negative(key: str, value: object) -> object:
    """A finite number >= 0 (TOML integer or float)."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value < 0):
        raise _fail(key, "must be a number >= 0", value)
    return float(value)


def ratio(key: str, value: object) -> object:
    """A number from 0 to 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise _fail(key, "must be a number from 0 to 1", value)
    return float(value)


def prefixes(key: str, value: object) -> object:
    """An array of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, "must be an array of non-empty strings", value)
    return tuple(value)


def _check(checker: Checker, doc: str) -> dict[str, object]:
    return {"check": checker, "doc": doc}


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class NodeSection:
    """[node]: this node's identity, storage folder and process count."""

    id: NodeId = field(
        default=NodeId("n1"), metadata=_check(node_id, "must match one [[cluster.members]] id")
    )
    data_dir: Path = field(
        default=Path("data/n1"),
        metadata=_check(path, "WAL and snapshots; relative to the config file; default data/<id>"),
    )
    read_workers: int = field(
        default=1, metadata=_check(int_in(1, 64), "read worker processes serving from shm")
    )


@dataclass(frozen=True, slots=True)
class Member:
    """One [[cluster.members]] entry: an initial voter."""

    id: NodeId = field(metadata=_check(node_id, "member id (required)"))
    host: str = field(default="127.0.0.1", metadata=_check(host, "address to bind and advertise"))
    client_port: int = field(default=0, metadata=_check(port, "ROUTER for clients; 0 = any"))
    peer_port: int = field(default=0, metadata=_check(port, "ROUTER for Raft traffic; 0 = any"))
    events_port: int = field(default=0, metadata=_check(port, "PUB change stream; 0 = any"))
    direct_port: int = field(
        default=0, metadata=_check(port_or_off, "ROUTER of the raft worker for writes and strong "
                                   "reads (docs/protocol.md \"Direct endpoint\"); 0 = any, -1 = off"))

    def endpoint(self, port_number: int) -> str:
        """`tcp://host:port`, with IPv6 hosts in brackets."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{shown}:{port_number}"

    @property
    def client_endpoint(self) -> str:
        """Where clients connect (port 0: the real port is known only once bound)."""
        return self.endpoint(self.client_port)

    @property
    def peer_endpoint(self) -> str:
        """Where peers send Raft traffic."""
        return self.endpoint(self.peer_port)

    @property
    def events_endpoint(self) -> str:
        """Where subscribers read the change stream."""
        return self.endpoint(self.events_port)


@dataclass(frozen=True, slots=True)
class RaftSection:
    """[raft]: timing and flow control; durations in ticks of tick_ms."""

    tick_ms: int = field(default=100, metadata=_check(int_in(1, 60_000), "one logical tick"))
    election_ticks: int = field(
        default=10, metadata=_check(int_in(1), "election timeout base, in ticks")
    )
    heartbeat_ticks: int = field(
        default=1, metadata=_check(int_in(1), "heartbeat interval; < election_ticks")
    )
    max_inflight_msgs: int = field(
        default=256, metadata=_check(int_in(1), "AppendEntries in flight per follower")
    )
    max_batch_bytes: int = field(
        default=MiB, metadata=_check(int_in(1), "entry bytes per AppendEntries")
    )
    pre_vote: bool = field(default=True, metadata=_check(boolean, "Raft §9.6 pre-vote"))
    check_quorum: bool = field(
        default=True, metadata=_check(boolean, "leader steps down without a quorum")
    )
    snapshot_chunk_bytes: int = field(
        default=MiB, metadata=_check(int_in(1), "InstallSnapshot chunk size")
    )
    forward_to_leader: bool = field(
        default=True,
        metadata=_check(boolean, "a follower relays writes and other leader-only requests "
                        "to the leader (else it answers not_leader with a hint)"),
    )


@dataclass(frozen=True, slots=True)
class StorageSection:
    """[storage]: write-ahead log and snapshots."""

    fsync: bool = field(
        default=True, metadata=_check(boolean, "fdatasync before acknowledging (never off in production)")
    )
    segment_bytes: int = field(
        default=64 * MiB, metadata=_check(int_in(4096), "WAL segment size before rotation")
    )
    snapshot_entries: int = field(
        default=10_000, metadata=_check(int_in(1), "entries applied between snapshots")
    )
    snapshot_bytes: int = field(
        default=16 * MiB,
        metadata=_check(int_in(0), "bytes of log applied between snapshots (0: no size trigger)"),
    )
    keep_snapshots: int = field(
        default=2, metadata=_check(int_in(1), "snapshot files kept on disk")
    )


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """[limits]: request and value sizes (the same on every node)."""

    max_key_bytes: int = field(default=1024, metadata=_check(int_in(1), "UTF-8 bytes per key"))
    max_value_bytes: int = field(
        default=MiB, metadata=_check(int_in(1), "msgpack bytes per value")
    )
    max_batch_items: int = field(
        default=500, metadata=_check(int_in(1), "items per bulk operation")
    )
    max_request_bytes: int = field(
        default=MiB + 64 * 1024,
        metadata=_check(int_in(1), "bytes per wire request; >= max_key_bytes + max_value_bytes"),
    )


@dataclass(frozen=True, slots=True)
class CompressionSection:
    """[compression]: zlib compression of large values."""

    enabled: bool = field(default=True, metadata=_check(boolean, "compress large values"))
    threshold_bytes: int = field(
        default=1024, metadata=_check(int_in(0), "values longer than this are compressed")
    )
    level: int = field(default=6, metadata=_check(int_in(0, 9), "zlib level"))


@dataclass(frozen=True, slots=True)
class EventsSection:
    """[events]: the PUB change stream and its retained history."""

    history_entries: int = field(
        default=10_000, metadata=_check(int_in(0), "events kept for the `events` op")
    )
    history_bytes: int = field(
        default=64 * MiB, metadata=_check(int_in(0), "bytes of history kept")
    )
    send_values: bool = field(default=True, metadata=_check(boolean, "events carry values"))


@dataclass(frozen=True, slots=True)
class FaultsSection:
    """[faults]: the test-only peer fault filter; never enable in production."""

    enabled: bool = field(default=False, metadata=_check(boolean, "test-only peer fault filter"))
    unsafe_leader_reads: bool = field(
        default=False,
        metadata=_check(boolean, "chaos self-test only: serve leader reads without the leader check "
                        "(a deliberately broken build; honoured only when faults.enabled)"),
    )
    disk_file: str = field(
        default="",
        metadata=_check(optional_path, "test-only disk fault file (concord/storage/faults.py); "
                        "\"\" = off; honoured only when faults.enabled"),
    )


@dataclass(frozen=True, slots=True)
class LoggingSection:
    """[logging]."""

    level: str = field(default="INFO", metadata=_check(log_level, "root log level"))


@dataclass(frozen=True, slots=True)
class SupervisorSection:
    """[supervisor]: restart policy and deadlines of the node's process tree."""

    max_restarts: int = field(
        default=5, metadata=_check(int_in(0), "restarts allowed within restart_window_s")
    )
    restart_window_s: float = field(default=60.0, metadata=_check(seconds(), "intensity window"))
    ready_timeout_s: float = field(
        default=30.0, metadata=_check(seconds(), "start-up deadline for every READY")
    )
    shutdown_timeout_s: float = field(
        default=5.0, metadata=_check(seconds(), "SIGTERM to SIGKILL, per child")
    )
    backoff_initial_s: float = field(
        default=0.1, metadata=_check(seconds(), "first restart delay (then doubles)")
    )
    backoff_max_s: float = field(
        default=5.0, metadata=_check(seconds(), "longest restart delay; >= backoff_initial_s")
    )
    max_rss_bytes: int = field(
        default=0, metadata=_check(int_in(0), "RSS reported unhealthy above it; 0 = none")
    )


def env_name(key: str, value: object) -> object:
    """An environment variable name or "" (off)."""
    if not isinstance(value, str) or (value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is None):
        raise _fail(key, "must be an environment variable name or an empty string", value)
    return value


@dataclass(frozen=True, slots=True)
class AuthSection:
    """[auth]: tokens, roles and tenants (docs/security.md)."""

    enabled: bool = field(
        default=False,
        metadata=_check(boolean, "require a valid token on every request (auth state, once "
                        "bootstrapped, is enforced whatever this says)"),
    )
    bootstrap_token_file: str = field(
        default="",
        metadata=_check(optional_path, "file holding the first admin token (sk_concord_...), "
                        "written through Raft by the first leader; \"\" = none"),
    )
    bootstrap_token_env: str = field(
        default="",
        metadata=_check(env_name, "environment variable holding the first admin token; \"\" = none"),
    )


@dataclass(frozen=True, slots=True)
class CurveSection:
    """[curve]: CURVE encryption and authentication of links (docs/encryption.md)."""

    secret_key_file: str = field(
        default="",
        metadata=_check(optional_path, "this node's peer secret key (`concord keys generate`); "
                        "\"\" = peer links in plaintext"),
    )
    peer_keys_dir: str = field(
        default="",
        metadata=_check(optional_path, "the peer allow-list: a folder of <node-id>.pub files; "
                        "required with secret_key_file; re-read when it changes"),
    )
    client_secret_key_file: str = field(
        default="",
        metadata=_check(optional_path, "server secret key of the client and events endpoints "
                        "(one pair for every node); \"\" = those endpoints in plaintext"),
    )

    @property
    def peers_enabled(self) -> bool:
        """CURVE on the Raft peer links."""
        return bool(self.secret_key_file)


@dataclass(frozen=True, slots=True)
class AuditSection:
    """[audit]: the per-node audit log of writes and admin ops (docs/observability-audit.md)."""

    enabled: bool = field(default=False, metadata=_check(boolean, "write the audit log"))
    dir: str = field(
        default="", metadata=_check(optional_path, "log folder; \"\" = <data_dir>/audit")
    )
    secret_file: str = field(
        default="", metadata=_check(optional_path, "file holding the cluster's key-HMAC secret")
    )
    loggable_prefixes: tuple[str, ...] = field(
        default=(), metadata=_check(prefixes, "keys under these prefixes are logged in clear")
    )
    log_reads: bool = field(default=False, metadata=_check(boolean, "also log read ops"))
    max_file_bytes: int = field(
        default=64 * MiB, metadata=_check(int_in(4096), "rotate the file above this size")
    )
    retention_days: float = field(
        default=30.0, metadata=_check(non_negative, "delete rotated files older (days); 0 = keep all")
    )
    fsync: str = field(
        default="interval", metadata=_check(one_of("always", "interval", "never"), "when to fsync")
    )
    fsync_interval_ms: int = field(
        default=1000, metadata=_check(int_in(1), "fsync period of fsync = \"interval\"")
    )


@dataclass(frozen=True, slots=True)
class TracingSection:
    """[tracing]: OpenTelemetry spans of sampled requests (docs/observability-tracing.md)."""

    enabled: bool = field(default=False, metadata=_check(boolean, "record spans"))
    sample_ratio: float = field(
        default=0.01, metadata=_check(ratio, "share of requests without a sampled parent traced")
    )
    exporter: str = field(
        default="file", metadata=_check(one_of("file", "otlp"), "where spans go")
    )
    file_dir: str = field(
        default="", metadata=_check(optional_path, "file exporter's folder; \"\" = <data_dir>/traces")
    )
    otlp_endpoint: str = field(
        default="", metadata=_check(optional_path, "OTLP/gRPC collector; \"\" = the SDK default")
    )


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """[metrics]: the Prometheus endpoint (docs/observability.md)."""

    enabled: bool = field(
        default=False, metadata=_check(boolean, "serve /metrics (a `metrics` process)")
    )
    port: int = field(
        default=0, metadata=_check(port, "HTTP port on the member's host; 0 = any")
    )


@dataclass(frozen=True, slots=True)
class HttpSection:
    """[http]: the HTTP/JSON gateway process (docs/http.md); off unless enabled."""

    enabled: bool = field(default=False, metadata=_check(boolean, "serve the HTTP gateway"))
    port: int = field(default=0, metadata=_check(port, "HTTP port; 0 = any free port"))
    bind: str = field(
        default="", metadata=_check(bind_address, "address to listen on; \"\" = the member's host")
    )
    request_timeout_s: float = field(
        default=5.0, metadata=_check(seconds(), "deadline of each wire request the gateway makes")
    )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """
    The whole configuration of one node, validated.

    `members` are the initial voters in file order; `node.id` is one of them.
    `source` is the file it came from (None when parsed from a dict).
    """

    node: NodeSection
    members: tuple[Member, ...]
    raft: RaftSection = field(default_factory=RaftSection)
    storage: StorageSection = field(default_factory=StorageSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    compression: CompressionSection = field(default_factory=CompressionSection)
    events: EventsSection = field(default_factory=EventsSection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    curve: CurveSection = field(default_factory=CurveSection)
    audit: AuditSection = field(default_factory=AuditSection)
    tracing: TracingSection = field(default_factory=TracingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    http: HttpSection = field(default_factory=HttpSection)
    auth: AuthSection = field(default_factory=AuthSection)
    source: Path | None = field(default=None, compare=False)

    @property
    def member(self) -> Member:
        """This node's own [[cluster.members]] entry."""
        for member in self.members:
            if member.id == self.node.id:
                return member
        raise AssertionError("validated config lost its own member")  # pragma: no cover

    @property
    def peers(self) -> tuple[Member, ...]:
        """Every other member."""
        return tuple(m for m in self.members if m.id != self.node.id)


#: Section name -> dataclass, in file order (members are handled apart).
SECTIONS: dict[str, type[DataclassInstance]] = {
    "node": NodeSection,
    "raft": RaftSection,
    "storage": StorageSection,
    "limits": LimitsSection,
    "compression": CompressionSection,
    "events": EventsSection,
    "faults": FaultsSection,
    "logging": LoggingSection,
    "supervisor": SupervisorSection,
    "curve": CurveSection,
    "audit": AuditSection,
    "tracing": TracingSection,
    "metrics": MetricsSection,
    "http": HttpSection,
    "auth": AuthSection,
}
