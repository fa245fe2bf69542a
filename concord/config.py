"""
Node configuration: one TOML file per node (docs/operations.md), parsed into frozen dataclasses.

Every key has a default (the section dataclasses' defaults in concord.config_schema are
the only place defaults live); relative paths resolve against the config file's folder;
an unknown key or a bad value stops start-up with a `ConfigError` whose message starts
with the key, e.g. `raft.election_ticks: must be a positive integer, got -3`.

    python -m concord.config --check FILE

validates FILE and prints the resolved configuration as TOML (exit 0), or the error on
stderr (exit 2).

Never opens a socket or creates a directory: it only reads the one file it is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os.path
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from concord.config_schema import (  # the schema's names, re-exported: their old home
    AuditSection as AuditSection,
    AuthSection as AuthSection,
    bind_address as bind_address,
    boolean as boolean,
    Checker as Checker,
    CompressionSection as CompressionSection,
    CurveSection as CurveSection,
    env_name as env_name,
    EventsSection as EventsSection,
    _fail,
    FaultsSection as FaultsSection,
    host as host,
    HttpSection as HttpSection,
    int_in as int_in,
    LimitsSection as LimitsSection,
    log_level as log_level,
    LOG_LEVELS as LOG_LEVELS,
    LoggingSection as LoggingSection,
    Member as Member,
    MetricsSection as MetricsSection,
    MiB as MiB,
    node_id as node_id,
    NodeConfig as NodeConfig,
    NodeSection as NodeSection,
    non_negative as non_negative,
    one_of as one_of,
    optional_path as optional_path,
    path as path,
    port as port,
    prefixes as prefixes,
    RaftSection as RaftSection,
    ratio as ratio,
    seconds as seconds,
    SECTIONS as SECTIONS,
    _show,
    StorageSection as StorageSection,
    SupervisorSection as SupervisorSection,
    TracingSection as TracingSection,
)
from concord.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")


def _parse_table(cls: type[S], prefix: str, table: object) -> S:
    """Check every key of `table` against `cls`'s fields; defaults fill the rest."""
    if not isinstance(table, dict):
        raise _fail(prefix, "must be a table", table)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise ConfigError(
                f"{prefix}.{key}: unknown key (known: {', '.join(fields)})"
            )
    values: dict[str, object] = {}
    for name, spec in fields.items():
        if name in table:
            checker: Checker = spec.metadata["check"]
            values[name] = checker(f"{prefix}.{name}", table[name])
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{name}: required")
    return cls(**values)


def _parse_members(cluster: object, node: NodeSection) -> tuple[Member, ...]:
    if cluster is None:
        # Default: a single-node cluster of this node, any free ports.
        return (Member(id=node.id),)
    if not isinstance(cluster, dict):
        raise _fail("cluster", "must be a table", cluster)
    for key in cluster:
        if key != "members":
            raise ConfigError(f"cluster.{key}: unknown key (known: members)")
    raw = cluster.get("members")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise _fail("cluster.members", "must be an array of tables ([[cluster.members]])", raw)
    if not raw:
        raise ConfigError("cluster.members: must list at least one member")
    members = tuple(_parse_table(Member, f"cluster.members[{i}]", m) for i, m in enumerate(raw))
    seen_ids: dict[str, int] = {}
    seen_ports: dict[tuple[str, int], str] = {}
    for i, member in enumerate(members):
        if member.id in seen_ids:
            raise ConfigError(
                f"cluster.members[{i}].id: duplicate member id {_show(member.id)} "
                f"(also cluster.members[{seen_ids[member.id]}])"
            )
        seen_ids[member.id] = i
        for kind in ("client_port", "peer_port", "events_port", "direct_port"):
            number = getattr(member, kind)
            key = f"cluster.members[{i}].{kind}"
            if number <= 0:  # 0: any free port; -1 (direct_port only): off
                if kind == "peer_port" and len(members) > 1:
                    raise ConfigError(
                        f"{key}: must be a fixed port when the cluster has more than one "
                        "member (peers dial it), got 0"
                    )
                continue
            other = seen_ports.get((member.host, number))
            if other is not None:
                raise ConfigError(f"{key}: port {number} on {member.host} is already used by {other}")
            seen_ports[(member.host, number)] = key
    if node.id not in seen_ids:
        raise ConfigError(
            f"node.id: {_show(node.id)} is not among cluster.members "
            f"({', '.join(m.id for m in members)})"
        )
    return members


def parse_config(data: Mapping[str, object], base_dir: Path, source: Path | None = None) -> NodeConfig:
    """
    Validate a decoded TOML document and build the node's configuration.

    Args:
        data: the document (e.g. from `tomllib.load`).
        base_dir: folder that relative paths resolve against (the config file's folder).
        source: the file it came from, kept for messages.

    Raises:
        ConfigError: the first unknown key or bad value, message starting with the key.
    """
    for key in data:
        if key not in SECTIONS and key != "cluster":
            raise ConfigError(
                f"{key}: unknown key (known sections: {', '.join([*SECTIONS, 'cluster'])})"
            )
    raw_node = data.get("node", {})
    node = _parse_table(NodeSection, "node", raw_node)
    raw_dir = raw_node.get("data_dir") if isinstance(raw_node, dict) else None
    relative = (
        Path(os.path.expanduser(str(raw_dir))) if raw_dir is not None else Path("data") / node.id
    )
    data_dir = (relative if relative.is_absolute() else base_dir / relative).absolute()
    node = dataclasses.replace(node, data_dir=Path(_normalize(data_dir)))
    members = _parse_members(data.get("cluster"), node)
    config = NodeConfig(
        node=node,
        members=members,
        raft=_parse_table(RaftSection, "raft", data.get("raft", {})),
        storage=_parse_table(StorageSection, "storage", data.get("storage", {})),
        limits=_parse_table(LimitsSection, "limits", data.get("limits", {})),
        compression=_parse_table(CompressionSection, "compression", data.get("compression", {})),
        events=_parse_table(EventsSection, "events", data.get("events", {})),
        faults=_resolve_disk_file(_parse_table(FaultsSection, "faults", data.get("faults", {})), base_dir),
        logging=_parse_table(LoggingSection, "logging", data.get("logging", {})),
        supervisor=_parse_table(SupervisorSection, "supervisor", data.get("supervisor", {})),
        curve=_resolve_paths(_parse_table(CurveSection, "curve", data.get("curve", {})), base_dir),
        audit=_resolve_audit(_parse_table(AuditSection, "audit", data.get("audit", {})),
                             base_dir, node.data_dir),
        tracing=_resolve_tracing(_parse_table(TracingSection, "tracing", data.get("tracing", {})),
                                 base_dir, node.data_dir),
        metrics=_parse_table(MetricsSection, "metrics", data.get("metrics", {})),
        http=_parse_table(HttpSection, "http", data.get("http", {})),
        auth=_resolve_token_file(_parse_table(AuthSection, "auth", data.get("auth", {})), base_dir),
        source=source,
    )
    _check_relations(config)
    return config


def _resolve_disk_file(faults: FaultsSection, base_dir: Path) -> FaultsSection:
    if not faults.disk_file or os.path.isabs(faults.disk_file):
        return faults
    return dataclasses.replace(faults, disk_file=_normalize((base_dir / faults.disk_file).absolute()))


def _resolve_paths(section: S, base_dir: Path) -> S:
    """Every non-empty path field of `section` made absolute against `base_dir`."""
    changes = {
        f.name: _resolve(value, base_dir)
        for f in dataclasses.fields(section)
        if f.metadata["check"] is optional_path and (value := getattr(section, f.name))
    }
    return dataclasses.replace(section, **changes)


def _resolve(value: str, base_dir: Path) -> str:
    """A path from the config made absolute against the file's folder ("" stays "")."""
    if not value:
        return value
    expanded = Path(os.path.expanduser(value))
    return _normalize(expanded if expanded.is_absolute() else (base_dir / expanded).absolute())


def _resolve_audit(audit: AuditSection, base_dir: Path, data_dir: Path) -> AuditSection:
    return dataclasses.replace(
        audit,
        dir=_resolve(audit.dir, base_dir) or _normalize(data_dir / "audit"),
        secret_file=_resolve(audit.secret_file, base_dir),
    )


def _resolve_tracing(tracing: TracingSection, base_dir: Path, data_dir: Path) -> TracingSection:
    return dataclasses.replace(
        tracing, file_dir=_resolve(tracing.file_dir, base_dir) or _normalize(data_dir / "traces"))


def _resolve_token_file(auth: AuthSection, base_dir: Path) -> AuthSection:
    return dataclasses.replace(auth, bootstrap_token_file=_resolve(auth.bootstrap_token_file, base_dir))


def _normalize(p: Path) -> str:
    # NB: normpath, not resolve(): keep symlinks as the operator wrote them.
    return os.path.normpath(str(p))


def _check_relations(config: NodeConfig) -> None:
    raft = config.raft
    if raft.heartbeat_ticks >= raft.election_ticks:
        raise ConfigError(
            f"raft.heartbeat_ticks: must be less than raft.election_ticks "
            f"({raft.election_ticks}), got {raft.heartbeat_ticks}"
        )
    limits = config.limits
    needed = limits.max_key_bytes + limits.max_value_bytes
    if limits.max_request_bytes < needed:
        raise ConfigError(
            f"limits.max_request_bytes: must be at least limits.max_key_bytes + "
            f"limits.max_value_bytes ({needed}), got {limits.max_request_bytes}"
        )
    curve = config.curve
    if bool(curve.secret_key_file) != bool(curve.peer_keys_dir):
        raise ConfigError(
            "curve.peer_keys_dir: must be set together with curve.secret_key_file "
            f"(both or neither), got {_show(curve.peer_keys_dir)}"
        )
    if config.audit.enabled and not config.audit.secret_file:
        raise ConfigError(
            "audit.secret_file: required when audit.enabled is true (the cluster's secret "
            "for key HMACs, the same file on every node), got \"\""
        )
    http = config.http
    me = config.member
    if http.enabled and me.client_port == 0:
        raise ConfigError(
            f"http.enabled: the gateway connects to this node's client port, which must then be "
            f"fixed: set cluster.members[{me.id}].client_port, got true with client_port 0")
    if http.enabled and http.port and (http.bind or me.host) == me.host and http.port in (
            me.client_port, me.peer_port, me.events_port):
        raise ConfigError(f"http.port: port {http.port} is already used by this node's "
                          f"[[cluster.members]] entry, got {http.port}")
    sup = config.supervisor
    if sup.backoff_max_s < sup.backoff_initial_s:
        raise ConfigError(
            f"supervisor.backoff_max_s: must be at least supervisor.backoff_initial_s "
            f"({sup.backoff_initial_s:g}), got {sup.backoff_max_s:g}"
        )
    me, port = config.member, config.metrics.port
    if config.metrics.enabled and port and port in (me.client_port, me.peer_port, me.events_port):
        raise ConfigError(f"metrics.port: port {port} is already used by this node's member entry")
    if (config.metrics.enabled and http.enabled and port and port == http.port
            and (http.bind or me.host) == me.host):
        raise ConfigError(f"http.port: port {port} is already metrics.port, got {http.port}")


def load_config(file: str | Path) -> NodeConfig:
    """
    Read and validate a node's TOML config file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has a bad key or value;
            the message is `<file>: <key>: <what is wrong>, got <value>`.
    """
    source = Path(file)
    try:
        with source.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return parse_config(data, source.absolute().parent, source=source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def read_bootstrap_token(auth: AuthSection) -> tuple[str | None, str]:
    """
    The text of the configured first admin token ([auth] bootstrap_token_file, else
    bootstrap_token_env) and where it came from, or (None, "") when neither is set. Read
    by the node (to bootstrap) and by tools that act as the cluster's operator with the
    node configs at hand (`python -m concord.cluster status`).

    Raises:
        ConfigError: the file cannot be read, or the variable is not set.
    """
    if auth.bootstrap_token_file:
        where = f"auth.bootstrap_token_file {auth.bootstrap_token_file}"
        try:
            with open(auth.bootstrap_token_file, encoding="ascii") as f:
                return f.read().strip(), where
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read it: {exc}") from exc
    if auth.bootstrap_token_env:
        where = f"auth.bootstrap_token_env {auth.bootstrap_token_env}"
        text = os.environ.get(auth.bootstrap_token_env)
        if text is None:
            raise ConfigError(f"{where}: the variable is not set")
        return text.strip(), where
    return None, ""


# --------------------------------------------------------------------------- output


def _toml_value(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def to_toml(config: NodeConfig) -> str:
    """
    The resolved configuration as TOML: every key, defaults included, paths absolute.

    `parse_config(tomllib.loads(to_toml(c)), any_dir) == c`.
    """
    lines: list[str] = []

    def table(header: str, section: DataclassInstance) -> None:
        lines.append(header)
        for f in dataclasses.fields(section):
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")

    table("[node]", config.node)
    for member in config.members:
        table("[[cluster.members]]", member)
    for name in SECTIONS:
        if name != "node":
            table(f"[{name}]", getattr(config, name))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m concord.config --check FILE`: exit 0 and print it, or exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m concord.config", description="Validate a Concord node config file."
    )
    parser.add_argument("--check", metavar="FILE", required=True, help="config file to validate")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.check)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"# {args.check}: valid; resolved configuration (defaults included)")
    print(to_toml(config), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
