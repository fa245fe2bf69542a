"""Node configuration: defaults, errors that name the key, path resolution, shipped files."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.config import (
    SECTIONS,
    Member,
    NodeConfig,
    load_config,
    main,
    parse_config,
    to_toml,
)
from concord.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
BASE = Path("/srv/concord")

THREE = [
    {"id": "n1", "client_port": 7401, "peer_port": 7501, "events_port": 7601},
    {"id": "n2", "client_port": 7402, "peer_port": 7502, "events_port": 7602},
    {"id": "n3", "client_port": 7403, "peer_port": 7503, "events_port": 7603},
]

DEFAULTS = [
    ("node", "id", "n1"),
    ("node", "read_workers", 1),
    ("raft", "tick_ms", 100),
    ("raft", "election_ticks", 10),
    ("raft", "heartbeat_ticks", 1),
    ("raft", "max_inflight_msgs", 256),
    ("raft", "max_batch_bytes", 1024 * 1024),
    ("raft", "pre_vote", True),
    ("raft", "check_quorum", True),
    ("raft", "snapshot_chunk_bytes", 1024 * 1024),
    ("raft", "forward_to_leader", True),
    ("storage", "fsync", True),
    ("storage", "segment_bytes", 64 * 1024 * 1024),
    ("storage", "snapshot_entries", 10_000),
    ("storage", "snapshot_bytes", 16 * 1024 * 1024),
    ("storage", "keep_snapshots", 2),
    ("limits", "max_key_bytes", 1024),
    ("limits", "max_value_bytes", 1024 * 1024),
    ("limits", "max_batch_items", 500),
    ("limits", "max_request_bytes", 1024 * 1024 + 64 * 1024),
    ("compression", "enabled", True),
    ("compression", "threshold_bytes", 1024),
    ("compression", "level", 6),
    ("events", "history_entries", 10_000),
    ("events", "history_bytes", 64 * 1024 * 1024),
    ("events", "send_values", True),
    ("faults", "enabled", False),
    ("faults", "unsafe_leader_reads", False),
    ("faults", "disk_file", ""),
    ("logging", "level", "INFO"),
    ("supervisor", "max_restarts", 5),
    ("supervisor", "restart_window_s", 60.0),
    ("supervisor", "ready_timeout_s", 30.0),
    ("supervisor", "shutdown_timeout_s", 5.0),
    ("supervisor", "backoff_initial_s", 0.1),
    ("supervisor", "backoff_max_s", 5.0),
    ("supervisor", "max_rss_bytes", 0),
    ("curve", "secret_key_file", ""),
    ("curve", "peer_keys_dir", ""),
    ("curve", "client_secret_key_file", ""),
    ("audit", "enabled", False),
    ("audit", "dir", str(BASE / "data" / "n1" / "audit")),
    ("audit", "secret_file", ""),
    ("audit", "loggable_prefixes", ()),
    ("audit", "log_reads", False),
    ("audit", "max_file_bytes", 64 * 1024 * 1024),
    ("audit", "retention_days", 30.0),
    ("audit", "fsync", "interval"),
    ("audit", "fsync_interval_ms", 1000),
    ("tracing", "enabled", False),
    ("tracing", "sample_ratio", 0.01),
    ("tracing", "exporter", "file"),
    ("tracing", "file_dir", str(BASE / "data" / "n1" / "traces")),
    ("tracing", "otlp_endpoint", ""),
    ("metrics", "enabled", False),
    ("metrics", "port", 0),
    ("http", "enabled", False),
    ("http", "port", 0),
    ("http", "bind", ""),
    ("http", "request_timeout_s", 5.0),
    ("auth", "enabled", False),
    ("auth", "bootstrap_token_file", ""),
    ("auth", "bootstrap_token_env", ""),
]


#: Keys whose default "" resolves to a folder under node.data_dir.
DERIVED_DEFAULTS = {("audit", "dir"), ("tracing", "file_dir")}


@pytest.mark.parametrize("section, key, expected", DEFAULTS)
def test_key_has_its_default_when_the_file_is_empty(section: str, key: str, expected: object) -> None:
    """Every key has a default; an empty document is a valid single-node config."""
    config = parse_config({}, BASE)
    assert expected == getattr(getattr(config, section), key)


def test_every_key_is_listed_when_defaults_are_tested() -> None:
    """DEFAULTS above covers every field of every section except node.data_dir."""
    keys = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert keys - {("node", "data_dir")} == {(s, k) for s, k, _ in DEFAULTS}


def test_cluster_is_this_node_alone_on_any_free_port_when_members_are_omitted() -> None:
    """Default membership: one member, the node itself, 127.0.0.1, ports 0."""
    config = parse_config({"node": {"id": "solo"}}, BASE)
    assert (Member(id="solo"),) == config.members  # type: ignore[arg-type]
    assert ("127.0.0.1", 0, 0, 0) == (
        config.member.host,
        config.member.client_port,
        config.member.peer_port,
        config.member.events_port,
    )
    assert () == config.peers


def test_data_dir_defaults_to_data_slash_id_when_not_set() -> None:
    """node.data_dir defaults to data/<node id>, relative to the config's folder."""
    assert BASE / "data" / "solo" == parse_config({"node": {"id": "solo"}}, BASE).node.data_dir


@pytest.mark.parametrize(
    "data_dir, expected",
    [
        ("data/n1", BASE / "data/n1"),
        ("./x/../state", BASE / "state"),
        ("../shared/n1", Path("/srv/shared/n1")),
        ("/var/lib/concord", Path("/var/lib/concord")),
        ("~/concord", Path.home() / "concord"),
    ],
)
def test_data_dir_resolves_against_the_base_dir_when_relative(data_dir: str, expected: Path) -> None:
    """Relative paths resolve against the config file's folder; absolute ones stay."""
    assert expected == parse_config({"node": {"data_dir": data_dir}}, BASE).node.data_dir


def test_data_dir_resolves_against_the_file_folder_when_loaded(tmp_path: Path) -> None:
    """load_config uses the file's own folder, not the working directory."""
    folder = tmp_path / "etc" / "concord"
    folder.mkdir(parents=True)
    file = folder / "n1.toml"
    file.write_text('[node]\ndata_dir = "data"\n')
    config = load_config(file)
    assert folder / "data" == config.node.data_dir
    assert file == config.source


def test_three_members_give_peers_and_endpoints_when_parsed() -> None:
    """members keep file order; peers are the others; endpoints are tcp URLs."""
    config = parse_config({"node": {"id": "n2"}, "cluster": {"members": THREE}}, BASE)
    assert ["n1", "n3"] == [m.id for m in config.peers]
    assert "tcp://127.0.0.1:7402" == config.member.client_endpoint
    assert "tcp://127.0.0.1:7502" == config.member.peer_endpoint
    assert "tcp://127.0.0.1:7602" == config.member.events_endpoint


def test_ipv6_host_is_bracketed_when_building_an_endpoint() -> None:
    """tcp://[::1]:7400."""
    assert "tcp://[::1]:7400" == Member(id="n1", host="::1").endpoint(7400)  # type: ignore[arg-type]


def test_log_level_is_upper_cased_when_given_in_lower_case() -> None:
    """logging.level accepts any case."""
    assert "DEBUG" == parse_config({"logging": {"level": "debug"}}, BASE).logging.level


def test_seconds_accept_integers_when_given_as_toml_integers() -> None:
    """A duration may be written 2 or 2.5."""
    assert 2.0 == parse_config({"supervisor": {"ready_timeout_s": 2}}, BASE).supervisor.ready_timeout_s


ERRORS = [
    ({"raft": {"tick_ms": -3}}, "raft.tick_ms: must be an integer from 1 to 60000, got -3"),
    ({"raft": {"election_ticks": 0}}, "raft.election_ticks: must be a positive integer, got 0"),
    ({"raft": {"election_ticks": "10"}}, 'raft.election_ticks: must be a positive integer, got "10"'),
    ({"raft": {"election_ticks": True}}, "raft.election_ticks: must be a positive integer, got true"),
    ({"raft": {"election_ticks": 10.0}}, "raft.election_ticks: must be a positive integer, got 10.0"),
    ({"raft": {"pre_vote": 1}}, "raft.pre_vote: must be true or false, got 1"),
    ({"raft": {"forward_to_leader": "yes"}}, 'raft.forward_to_leader: must be true or false, got "yes"'),
    ({"raft": {"election_ms": 100}}, "raft.election_ms: unknown key"),
    (
        {"raft": {"heartbeat_ticks": 10}},
        "raft.heartbeat_ticks: must be less than raft.election_ticks (10), got 10",
    ),
    ({"raft": 3}, "raft: must be a table, got 3"),
    ({"storage": {"fsync": "yes"}}, 'storage.fsync: must be true or false, got "yes"'),
    ({"storage": {"segment_bytes": 100}}, "storage.segment_bytes: must be an integer >= 4096, got 100"),
    ({"storage": {"keep_snapshots": 0}}, "storage.keep_snapshots: must be a positive integer, got 0"),
    ({"limits": {"max_key_bytes": 0}}, "limits.max_key_bytes: must be a positive integer, got 0"),
    (
        {"limits": {"max_value_bytes": 2 * 1024 * 1024}},
        "limits.max_request_bytes: must be at least limits.max_key_bytes + limits.max_value_bytes "
        "(2098176), got 1114112",
    ),
    ({"compression": {"level": 10}}, "compression.level: must be an integer from 0 to 9, got 10"),
    (
        {"compression": {"threshold_bytes": -1}},
        "compression.threshold_bytes: must be a non-negative integer, got -1",
    ),
    ({"events": {"send_values": "no"}}, 'events.send_values: must be true or false, got "no"'),
    ({"faults": {"enabled": "false"}}, 'faults.enabled: must be true or false, got "false"'),
    ({"logging": {"level": "LOUD"}}, 'logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got "LOUD"'),
    ({"logging": {"format": "json"}}, "logging.format: unknown key"),
    ({"colour": {}}, "colour: unknown key"),
    ({"metrics": {"enabled": 1}}, "metrics.enabled: must be true or false, got 1"),
    ({"metrics": {"port": 70000}}, "metrics.port: must be"),
    ({"metrics": {"enabled": True, "port": 7400},
      "cluster": {"members": [{"id": "n1", "client_port": 7400}]}},
     "metrics.port: port 7400 is already used by this node's member entry"),
    ({"node": {"id": "has space"}}, "node.id: must be 1-64 characters, each a letter or digit (any script), '_', '.' or '-', at most 128 bytes in UTF-8, got \"has space\""),
    ({"node": {"id": "n" * 65}}, "node.id: must be 1-64 characters"),
    ({"node": {"id": "\U00020000" * 33}}, "node.id: must be 1-64 characters"),
    ({"node": {"read_workers": 0}}, "node.read_workers: must be an integer from 1 to 64, got 0"),
    ({"node": {"data_dir": ""}}, 'node.data_dir: must be a non-empty path, got ""'),
    ({"node": {"data_dir": 5}}, "node.data_dir: must be a non-empty path, got 5"),
    (
        {"supervisor": {"restart_window_s": 0}},
        "supervisor.restart_window_s: must be a positive number of seconds, got 0",
    ),
    (
        {"supervisor": {"shutdown_timeout_s": float("inf")}},
        "supervisor.shutdown_timeout_s: must be a positive number of seconds, got inf",
    ),
    (
        {"supervisor": {"backoff_initial_s": 2.0, "backoff_max_s": 1.0}},
        "supervisor.backoff_max_s: must be at least supervisor.backoff_initial_s (2), got 1",
    ),
    (
        {"curve": {"secret_key_file": "keys/n1.key"}},
        'curve.peer_keys_dir: must be set together with curve.secret_key_file (both or neither), got ""',
    ),
    ({"curve": {"peer_keys_dir": 3}}, "curve.peer_keys_dir: must be a path or an empty string, got 3"),
    ({"supervisor": {"max_restarts": -1}}, "supervisor.max_restarts: must be a non-negative integer, got -1"),
    ({"cluster": {"members": []}}, "cluster.members: must list at least one member"),
    ({"cluster": {"members": {"id": "n1"}}}, "cluster.members: must be an array of tables ([[cluster.members]]), got a table"),
    ({"cluster": {"voters": []}}, "cluster.voters: unknown key"),
    ({"cluster": {"members": [{"host": "127.0.0.1"}]}}, "cluster.members[0].id: required"),
    ({"cluster": {"members": [{"id": "n1", "zone": "a"}]}}, "cluster.members[0].zone: unknown key"),
    (
        {"cluster": {"members": [{"id": "n1", "client_port": 70000}]}},
        "cluster.members[0].client_port: must be a port number from 0 (any free port) to 65535, got 70000",
    ),
    (
        {"cluster": {"members": [{"id": "n1", "host": "bad host"}]}},
        'cluster.members[0].host: must be an IP address or host name, got "bad host"',
    ),
    (
        {"cluster": {"members": [{"id": "n1", "host": "-x.example"}]}},
        'cluster.members[0].host: must be an IP address or host name, got "-x.example"',
    ),
    (
        {"cluster": {"members": [{"id": "n1", "host": "127.0.0.01"}]}},
        'cluster.members[0].host: must be an IP address or host name, got "127.0.0.01"',
    ),
    (
        {"cluster": {"members": [{"id": "n1", "host": "0.0.0.0"}]}},
        'cluster.members[0].host: must be an address others can connect to, not a wildcard, got "0.0.0.0"',
    ),
    (
        {"cluster": {"members": [THREE[0], {**THREE[1], "id": "n1"}]}},
        'cluster.members[1].id: duplicate member id "n1" (also cluster.members[0])',
    ),
    (
        {"cluster": {"members": [THREE[0], {**THREE[1], "events_port": 7501}]}},
        "cluster.members[1].events_port: port 7501 on 127.0.0.1 is already used by "
        "cluster.members[0].peer_port",
    ),
    (
        {"cluster": {"members": [{**THREE[0], "client_port": 7501}]}},
        "cluster.members[0].peer_port: port 7501 on 127.0.0.1 is already used by "
        "cluster.members[0].client_port",
    ),
    (
        {"cluster": {"members": [THREE[0], {**THREE[1], "peer_port": 0}]}},
        "cluster.members[1].peer_port: must be a fixed port when the cluster has more than one "
        "member (peers dial it), got 0",
    ),
    (
        {"node": {"id": "n4"}, "cluster": {"members": THREE}},
        'node.id: "n4" is not among cluster.members (n1, n2, n3)',
    ),
]


@pytest.mark.parametrize("data, message", ERRORS)
def test_config_error_names_the_key_when_a_value_is_bad(data: dict[str, object], message: str) -> None:
    """Unknown keys, wrong types, out-of-range values and inconsistencies stop start-up."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, BASE)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("host", ["localhost", "node-1.example.com", "10.0.0.7", "::1", "db1."])
def test_host_is_accepted_when_it_is_an_address_or_dns_name(host: str) -> None:
    """IPv4, IPv6 and RFC 1123 host names are valid member hosts."""
    members = [{"id": "n1", "host": host}]
    assert host == parse_config({"cluster": {"members": members}}, BASE).member.host


@pytest.mark.parametrize("node_id", ["db-east.1", "nœud-2", "節點3", "x" * 64, "ü" * 64])
def test_node_id_is_accepted_when_it_follows_the_rule(node_id: str) -> None:
    """Letters and digits of any script, '_', '.', '-': 64 characters, 128 bytes at most."""
    data = {"node": {"id": node_id}, "cluster": {"members": [{"id": node_id}]}}
    assert node_id == parse_config(data, BASE).node.id


def test_same_port_is_allowed_when_hosts_differ() -> None:
    """Three hosts may all use 7400: ports are unique per host."""
    members = [
        {"id": f"n{i}", "host": f"10.0.0.{i}", "client_port": 7400, "peer_port": 7500, "events_port": 7600}
        for i in (1, 2, 3)
    ]
    config = parse_config({"cluster": {"members": members}}, BASE)
    assert 3 == len(config.members)


def test_curve_paths_resolve_against_the_base_dir_when_relative() -> None:
    """[curve] key paths resolve like data_dir; "" stays off."""
    config = parse_config({"curve": {"secret_key_file": "keys/n1.key", "peer_keys_dir": "/etc/peers"}},
                          BASE)
    assert ("/srv/concord/keys/n1.key", "/etc/peers", "") == (
        config.curve.secret_key_file, config.curve.peer_keys_dir, config.curve.client_secret_key_file)


def test_config_error_is_a_value_error_when_caught_generically() -> None:
    """ConfigError subclasses ValueError (it resembles one)."""
    with pytest.raises(ValueError):
        parse_config({"raft": {"tick_ms": 0}}, BASE)


def test_load_error_names_file_and_key_when_a_value_is_bad(tmp_path: Path) -> None:
    """The message from a file is `<file>: <key>: ...`."""
    file = tmp_path / "n1.toml"
    file.write_text("[raft]\nelection_ticks = -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert f"{file}: raft.election_ticks: must be a positive integer, got -3" == str(info.value)


def test_load_error_names_the_file_when_it_is_not_toml(tmp_path: Path) -> None:
    """A TOML syntax error names the file and tomllib's line and column."""
    file = tmp_path / "broken.toml"
    file.write_text("[node\nid = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{file}: not valid TOML: ") + ".*line 1"):
        load_config(file)


def test_load_error_names_the_file_when_it_is_missing(tmp_path: Path) -> None:
    """A missing file is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="missing.toml: cannot read config file"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["node.toml", "cluster/n1.toml", "cluster/n2.toml", "cluster/n3.toml"])
def test_shipped_config_loads_when_checked(name: str) -> None:
    """Every file in conf/ is valid as shipped."""
    config = load_config(CONF / name)
    assert isinstance(config, NodeConfig)


def test_single_node_config_uses_well_known_ports_when_shipped() -> None:
    """conf/node.toml: one member on 7379/7380/7381 (the CLI's default), data under conf/data/node."""
    config = load_config(CONF / "node.toml")
    assert ["node"] == [m.id for m in config.members]
    assert (7379, 7380, 7381) == (config.member.client_port, config.member.peer_port,
                                  config.member.events_port)
    assert CONF / "data" / "node" == config.node.data_dir


@pytest.mark.parametrize("i", [1, 2, 3])
def test_cluster_configs_agree_on_members_when_shipped(i: int) -> None:
    """n1..n3 list the same members on fixed distinct ports, each its own data dir."""
    config = load_config(CONF / "cluster" / f"n{i}.toml")
    expected = tuple(Member(**m) for m in THREE)  # type: ignore[arg-type]
    assert expected == config.members
    assert f"n{i}" == config.node.id
    assert CONF / "cluster" / "data" / f"n{i}" == config.node.data_dir


def test_commented_defaults_in_node_toml_match_the_code_when_uncommented() -> None:
    """conf/node.toml shows every key; each `# key = value` line is the real default."""
    text = (CONF / "node.toml").read_text()
    section = ""
    shown: dict[tuple[str, str], object] = {}
    chosen: set[tuple[str, str]] = set()
    for line in text.splitlines():
        header = re.match(r"^\[+([a-z.]+)\]+", line)
        if header:
            section = header.group(1)
            continue
        entry = re.match(r"^(#? ?)([a-z_]+) = (\S+)", line)
        if entry and section:
            shown[(section, entry.group(2))] = tomllib.loads(f"v = {entry.group(3)}")["v"]
            if not entry.group(1):
                chosen.add((section, entry.group(2)))
    defaults = parse_config({}, BASE)
    for (name, key), value in shown.items():
        if (name, key) in DERIVED_DEFAULTS:
            assert "" == value  # shown as "", resolved under node.data_dir
        elif name in SECTIONS and (name, key) not in chosen:
            value = tuple(value) if isinstance(value, list) else value
            assert (name, key, getattr(getattr(defaults, name), key)) == (name, key, value)
    every = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set() == every - set(shown)


def test_resolved_config_round_trips_when_dumped_as_toml() -> None:
    """to_toml(c) parses back to c (what --check prints is a valid, equivalent config)."""
    for name in ("node.toml", "cluster/n2.toml"):
        config = load_config(CONF / name)
        assert config == parse_config(tomllib.loads(to_toml(config)), Path("/elsewhere"))


def test_check_prints_the_resolved_config_when_the_file_is_valid(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """python -m concord.config --check FILE: exit 0, the resolved TOML on stdout."""
    assert 0 == main(["--check", str(CONF / "cluster" / "n1.toml")])
    out = capsys.readouterr().out
    assert "valid; resolved configuration" in out
    assert f'data_dir = "{CONF / "cluster" / "data" / "n1"}"' in out
    assert "election_ticks = 10" in out


def test_check_exits_2_with_the_error_when_the_file_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad file: exit 2, `config error: <file>: <key>: ...` on stderr, nothing on stdout."""
    file = tmp_path / "bad.toml"
    file.write_text("[compression]\nlevel = 11\n")
    assert 2 == main(["--check", str(file)])
    captured = capsys.readouterr()
    assert "" == captured.out
    assert f"config error: {file}: compression.level: must be an integer from 0 to 9, got 11\n" == captured.err


@pytest.mark.slow
def test_module_entry_point_exits_2_when_run_on_a_bad_file(tmp_path: Path) -> None:
    """The real command line, as an operator types it."""
    import subprocess
    import sys

    file = tmp_path / "bad.toml"
    file.write_text("[node]\nid = 7\n")
    result = subprocess.run(
        [sys.executable, "-m", "concord.config", "--check", str(file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (2, "") == (result.returncode, result.stdout)
    assert f"config error: {file}: node.id: must be 1-64 characters" in result.stderr


def _valid_sections() -> st.SearchStrategy[dict[str, object]]:
    """Random valid documents: any subset of keys with in-range values."""
    positive = st.integers(min_value=1, max_value=2**40)
    raft = st.fixed_dictionaries(
        {},
        optional={
            "tick_ms": st.integers(1, 60_000),
            "max_inflight_msgs": positive,
            "max_batch_bytes": positive,
            "pre_vote": st.booleans(),
            "check_quorum": st.booleans(),
            "snapshot_chunk_bytes": positive,
        },
    )
    storage = st.fixed_dictionaries(
        {},
        optional={
            "fsync": st.booleans(),
            "segment_bytes": st.integers(4096, 2**40),
            "snapshot_entries": positive,
            "snapshot_bytes": st.integers(0, 2**40),
            "keep_snapshots": st.integers(1, 100),
        },
    )
    compression = st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans(),
            "threshold_bytes": st.integers(0, 2**30),
            "level": st.integers(0, 9),
        },
    )
    supervisor = st.fixed_dictionaries(
        {},
        optional={
            "max_restarts": st.integers(0, 1000),
            "restart_window_s": st.floats(0.001, 1e6),
            "ready_timeout_s": st.floats(0.001, 1e6),
            "backoff_initial_s": st.floats(0.001, 0.1),
        },
    )
    logging_ = st.fixed_dictionaries(
        {}, optional={"level": st.sampled_from(["debug", "Info", "WARNING", "error"])}
    )
    ports = st.lists(st.integers(1, 65535), min_size=9, max_size=9, unique=True)
    members = ports.map(
        lambda p: {
            "members": [
                {"id": f"n{i}", "client_port": p[3 * i], "peer_port": p[3 * i + 1], "events_port": p[3 * i + 2]}
                for i in range(3)
            ]
        }
    )
    return st.fixed_dictionaries(
        {"node": st.just({"id": "n1"})},
        optional={
            "raft": raft,
            "storage": storage,
            "compression": compression,
            "supervisor": supervisor,
            "logging": logging_,
            "cluster": members,
        },
    )


@pytest.mark.slow
@settings(derandomize=True, max_examples=60, deadline=None)
@given(_valid_sections())
def test_valid_document_round_trips_when_dumped_and_parsed_again(data: dict[str, object]) -> None:
    """Any valid document parses, and its resolved dump parses back to the same config."""
    config = parse_config(data, BASE)
    assert config == parse_config(tomllib.loads(to_toml(config)), Path("/elsewhere"))
    for section, table in data.items():
        if section in SECTIONS and isinstance(table, dict):
            for key, value in table.items():
                shown = getattr(getattr(config, section), key)
                expected = value.upper() if (section, key) == ("logging", "level") else value
                assert (section, key, expected) == (section, key, shown)


def test_config_pickles_when_sent_to_another_process() -> None:
    """NodeConfig crosses process boundaries (spawned workers, error reports) intact."""
    import pickle

    config = load_config(CONF / "cluster" / "n3.toml")
    assert config == pickle.loads(pickle.dumps(config))


def test_audit_needs_a_secret_file_when_enabled() -> None:
    """[audit] enabled without secret_file stops start-up naming the key; paths resolve."""
    with pytest.raises(ConfigError, match=r"^audit\.secret_file: required when audit\.enabled"):
        parse_config({"audit": {"enabled": True}}, BASE)
    config = parse_config({"audit": {"enabled": True, "secret_file": "s", "dir": "logs",
                                     "loggable_prefixes": ["config/"]}}, BASE)
    assert (str(BASE / "s"), str(BASE / "logs"), ("config/",)) == (
        config.audit.secret_file, config.audit.dir, config.audit.loggable_prefixes)


@pytest.mark.parametrize("section, key, value, message", [
    ("audit", "fsync", "sometimes", "must be one of always, interval, never"),
    ("audit", "loggable_prefixes", ["ok", ""], "must be an array of non-empty strings"),
    ("audit", "retention_days", -1, "must be a number >= 0"),
    ("tracing", "sample_ratio", 1.5, "must be a number from 0 to 1"),
    ("tracing", "exporter", "zipkin", "must be one of file, otlp"),
])
def test_observability_keys_are_refused_when_bad(section: str, key: str, value: object, message: str) -> None:
    """Each bad [audit] / [tracing] value names its key and the rule."""
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: {message}"):
        parse_config({section: {key: value}}, BASE)


@pytest.mark.parametrize("value, message", [
    (-2, "cluster.members[0].direct_port: must be -1 (off), 0 (any free port) or a port number"),
    (7400, "cluster.members[0].direct_port: port 7400 on 127.0.0.1 is already used by "
           "cluster.members[0].client_port"),
])
def test_direct_port_is_refused_when_out_of_range_or_taken(value: int, message: str) -> None:
    """The direct endpoint's port: -1..65535, unique per host like the other ports."""
    members = [{"id": "n1", "client_port": 7400, "direct_port": value}]
    with pytest.raises(ConfigError) as info:
        parse_config({"cluster": {"members": members}}, BASE)
    assert str(info.value).startswith(message), str(info.value)


def test_direct_port_defaults_to_any_free_port_and_minus_one_turns_it_off() -> None:
    assert 0 == parse_config({}, BASE).member.direct_port
    members = [{"id": "n1", "direct_port": -1, "peer_port": 7501},
               {"id": "n2", "direct_port": -1, "peer_port": 7502}]
    config = parse_config({"cluster": {"members": members}}, BASE)
    assert [-1, -1] == [m.direct_port for m in config.members]
