"""concord.telemetry: attach/detach, failing handlers, client-call and embedded-node events."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import concord
from concord import telemetry
from concord.embedded import _StatusWatcher
from concord.errors import NotFoundError
from tests.helpers import wait_until

Record = tuple[str, dict[str, float], dict[str, object]]


@pytest.fixture
def recorded() -> Iterator[list[Record]]:
    """Detaches every handler a test attached."""
    records: list[Record] = []
    yield records
    for name in telemetry.handlers():
        telemetry.detach(name)


def recorder(records: list[Record]) -> telemetry.Handler:
    def handler(event: str, measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
        records.append((event, dict(measurements), dict(metadata)))
    return handler


def test_handler_runs_until_detached_when_attached(recorded: list[Record]) -> None:
    """A handler sees its event only, in attach order, and no more once detached."""
    telemetry.attach("a", "concord.node.status", recorder(recorded))
    telemetry.attach("b", "concord.node.status", lambda e, m, md: recorded.append(("b", {}, {})))
    telemetry.emit("concord.node.status", {"term": 2.0}, {"node": "n1"})
    telemetry.emit("concord.node.snapshot", {"index": 5.0}, {"node": "n1"})
    assert [("concord.node.status", {"term": 2.0}, {"node": "n1"}), ("b", {}, {})] == recorded
    assert ["a", "b"] == telemetry.handlers("concord.node.status")
    assert telemetry.detach("a") and telemetry.detach("b")
    assert not telemetry.detach("a")
    assert not telemetry.listening("concord.node.status")


def test_attach_refuses_when_the_event_name_or_handler_is_bad(recorded: list[Record]) -> None:
    """Unknown events, a name in use and non-callables are errors naming the problem."""
    with pytest.raises(ValueError, match="unknown telemetry event 'concord.client.cal'"):
        telemetry.attach("x", "concord.client.cal", recorder(recorded))
    telemetry.attach("x", "concord.client.call", recorder(recorded))
    with pytest.raises(ValueError, match="'x' is already attached"):
        telemetry.attach("x", "concord.node.status", recorder(recorded))
    with pytest.raises(TypeError, match="must be callable"):
        telemetry.attach("y", "concord.node.status", 3)  # type: ignore[arg-type]
    assert ["x"] == telemetry.handlers()


def test_raising_handler_is_detached_with_a_warning_when_it_fails(
        recorded: list[Record], caplog: pytest.LogCaptureFixture) -> None:
    """The emitter never sees the exception; the other handlers still run; one warning."""
    def broken(event: str, measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
        raise RuntimeError("boom")

    telemetry.attach("broken", "concord.node.status", broken)
    telemetry.attach("ok", "concord.node.status", recorder(recorded))
    with caplog.at_level(logging.WARNING, logger="concord.telemetry"):
        telemetry.emit("concord.node.status", {}, {})
        telemetry.emit("concord.node.status", {}, {})
    assert 2 == len(recorded)
    assert ["ok"] == telemetry.handlers()
    warnings = [r for r in caplog.records if "detached name=broken" in r.getMessage()]
    assert 1 == len(warnings) and warnings[0].exc_info is not None


def test_watcher_emits_state_change_and_snapshot_when_the_status_differs(
        recorded: list[Record]) -> None:
    """Each status is an event; role/leader/term and snapshot_index changes are too."""
    for event in telemetry.EVENTS:
        if event.startswith("concord.node."):
            telemetry.attach(event, event, recorder(recorded))
    watcher = _StatusWatcher("tcp://127.0.0.1:1", 5.0)
    base = {"node": "n1", "role": "follower", "leader": "n2", "term": 3, "commit": 10,
            "applied": 9, "keys": 4, "db_bytes": 100, "members": [{}, {}, {}],
            "snapshot_index": 0, "cluster_id": None}
    watcher.observe(base)
    watcher.observe({**base, "applied": 10})
    watcher.observe({**base, "role": "leader", "leader": "n1", "term": 4, "snapshot_index": 8})
    events = [e for e, _, _ in recorded]
    assert ["concord.node.status", "concord.node.status", "concord.node.status",
            "concord.node.state_change", "concord.node.snapshot"] == events
    assert {"term": 3.0, "commit": 10.0, "applied": 9.0, "keys": 4.0, "db_bytes": 100.0,
            "members": 3.0} == recorded[0][1]
    assert ({"term": 4.0}, {"node": "n1", "role": "leader", "leader": "n1",
                            "previous_role": "follower", "previous_leader": "n2",
                            "previous_term": 3}) == recorded[3][1:]
    assert ({"index": 8.0}, {"node": "n1", "previous_index": 0}) == recorded[4][1:]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_client_and_node_events_arrive_when_an_embedded_node_works(
        tmp_path: Path, recorded: list[Record]) -> None:
    """Calls over the wire and from shm carry op, consistency, result; node events follow."""
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nid = "emb"\ndata_dir = "{tmp_path / "data"}"\nread_workers = 1\n'
                      '[storage]\nsnapshot_entries = 20\n')
    calls = recorder(recorded)
    telemetry.attach("calls", "concord.client.call", calls)
    telemetry.attach("snap", "concord.node.snapshot", calls)
    telemetry.attach("status", "concord.node.status", calls)
    telemetry.attach("raises", "concord.client.call",
                     lambda e, m, md: (_ for _ in ()).throw(ValueError("handler bug")))
    with concord.start(config, set_default=False, status_interval_s=0.2) as node:
        c = node.client
        for i in range(40):
            c.put(f"k{i}", i)
        assert 1 == c.get("k1", consistency="strong")
        with pytest.raises(NotFoundError):
            c.get("absent", consistency="strong")
        wait_until(lambda: c.get("k2", consistency="eventual") == 2 and c.local_store is not None,
                   20, "no same-host store attached")
        assert 3 == c.get("k3", consistency="eventual")
        wait_until(lambda: any(e == "concord.node.snapshot" for e, _, _ in recorded), 30,
                   lambda: f"events={sorted({e for e, _, _ in recorded})}")
    assert "raises" not in telemetry.handlers()
    calls_seen = [(md["op"], md["consistency"], md["result"], md["served"])
                  for e, _, md in recorded if e == "concord.client.call"]
    assert ("put", None, "ok", "wire") in calls_seen
    assert ("get", "strong", "ok", "wire") in calls_seen
    assert ("get", "strong", "not_found", "wire") in calls_seen
    assert ("get", "eventual", "ok", "shm") in calls_seen
    assert all(m["duration_s"] >= 0 for e, m, _ in recorded if e == "concord.client.call")
    status = [md for e, _, md in recorded if e == "concord.node.status"][-1]
    assert {"node": "emb", "role": "leader", "leader": "emb"} == {
        k: status[k] for k in ("node", "role", "leader")}
