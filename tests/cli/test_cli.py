"""`concord` run as a subprocess against a real 3-node cluster (docs/cli.md)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import zmq

from tests.cli.conftest import Run, run_cli
from tests.integration.cluster import Cluster, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Concord = Callable[..., Run]


def ok(run: Run) -> Run:
    assert 0 == run.code, run.err
    return run


@pytest.mark.timeout(180)
def test_data_commands_work_in_every_format_when_cluster_runs(three: tuple[Cluster, Concord]) -> None:
    """put/get/del/touch/ttl/query/count in simple, json and table output."""
    _, concord = three
    revision = int(ok(concord("put", "user/1", '{"name": "ann", "age": 30}', "--json")).out)
    assert revision > 0
    ok(concord("put", "user/2", '{"name": "bob", "age": 15}', "--json", "--ttl", "60"))
    assert "plain text\n" == ok(concord("put", "note", "plain text") and concord("get", "note")).out
    meta = ok(concord("-w", "json", "get", "user/1", "--meta")).json()
    assert isinstance(meta, dict)
    assert ({"name": "ann", "age": 30}, revision, 1) == (meta["value"], meta["revision"], meta["version"])
    table = ok(concord("-w", "table", "get", "user/", "--prefix")).out
    assert "KEY" in table and "user/1" in table and "user/2" in table
    listing = ok(concord("-w", "json", "query", "--prefix", "user/", "--where", '["ge", "age", 18]')).json()
    assert {"items": [{"key": "user/1", "value": {"name": "ann", "age": 30}}], "more": False} == listing
    assert "2\n" == ok(concord("count", "--prefix", "user/")).out
    page = ok(concord("-w", "json", "get", "user/", "--prefix", "--limit", "1", "--keys-only")).json()
    assert {"items": [{"key": "user/1"}], "more": True} == page
    every = ok(concord("-w", "json", "get", "user/", "--prefix", "--limit", "1", "--all")).json()
    assert ["user/1", "user/2"] == [i["key"] for i in every["items"]]  # type: ignore[index]
    ttl = float(ok(concord("ttl", "user/2")).out)
    assert 0 < ttl <= 60
    ok(concord("touch", "user/2", "none"))
    assert "\n" == ok(concord("ttl", "user/2")).out
    assert "true" in ok(concord("del", "note")).out
    refused = concord("get", "note")
    assert (1, "concord: error: key 'note' not found\n") == (refused.code, refused.err)
    deleted = ok(concord("-w", "json", "del", "user/", "--prefix")).json()
    assert 2 == deleted["deleted"]  # type: ignore[index]


@pytest.mark.timeout(180)
def test_conditional_puts_refuse_with_exit_1_when_condition_fails(three: tuple[Cluster, Concord]) -> None:
    """--if-absent, --if-version, --if-value: the first holds, the repeat exits 1 and changes nothing."""
    _, concord = three
    ok(concord("put", "lock", "a", "--if-absent"))
    again = concord("put", "lock", "b", "--if-absent")
    assert 1 == again.code and again.err.startswith("concord: error: ") and again.err.count("\n") == 1
    ok(concord("put", "lock", "c", "--if-version", "1"))
    assert 1 == concord("put", "lock", "d", "--if-version", "1").code
    ok(concord("put", "lock", "e", "--if-value", "c"))
    assert 1 == concord("put", "lock", "f", "--if-value", "c").code
    assert 1 == concord("del", "lock", "--if-value", "zzz").code
    assert "e\n" == ok(concord("get", "lock", "-c", "strong")).out
    # A token is sent only when given, and the node (no auth yet) refuses it by name.
    for refused in (concord("--token", "t", "put", "lock", "g"),
                    concord("put", "lock", "g", env={"CONCORD_TOKEN": "t"})):
        assert refused.code != 0
        assert "request carries 'token' but authentication is not enabled on this node" in refused.err
    assert "e\n" == ok(concord("get", "lock", "-c", "strong")).out


@pytest.mark.timeout(180)
def test_bulk_and_watch_round_trip_when_given_json_lines(three: tuple[Cluster, Concord]) -> None:
    """bulk put from stdin, bulk get, watch from revision 0 replays them, bulk del."""
    _, concord = three
    lines = "".join(json.dumps({"key": f"b/{i:04d}", "value": i}) + "\n" for i in range(1200))
    put = ok(concord("-w", "json", "bulk", "put", stdin=lines)).json()
    assert 1200 == put["put"]  # type: ignore[index]
    got = ok(concord("-w", "json", "bulk", "get", stdin='"b/0001"\n{"key": "b/1199"}\n"missing"\n')).json()
    assert [{"key": "b/0001", "value": 1}, {"key": "b/1199", "value": 1199}] == got
    watched = ok(concord("-w", "json", "watch", "b/", "--rev", "0", "--max-events", "3"))
    events = [json.loads(line) for line in watched.out.splitlines()]
    assert [("put", "b/0000", 0), ("put", "b/0001", 1), ("put", "b/0002", 2)] == [
        (e["type"], e["key"], e["value"]) for e in events]
    bad = concord("bulk", "put", stdin='{"key": "x"}\n')
    assert (2, "concord: error: <stdin>:1: a put line needs a \"value\"\n") == (bad.code, bad.err)
    deleted = ok(concord("-w", "json", "bulk", "del", stdin=lines)).json()
    assert 1200 == deleted["deleted"]  # type: ignore[index]


@pytest.mark.timeout(180)
def test_cluster_commands_report_every_node_when_cluster_runs(three: tuple[Cluster, Concord]) -> None:
    """status, members list, endpoint health, check hash, move-leader, in all formats."""
    c, concord = three
    status = ok(concord("-w", "json", "status")).json()
    assert isinstance(status, list)
    assert ["n1", "n2", "n3"] == sorted(s["node"] for s in status)
    assert 1 == sum(s["role"] == "leader" for s in status)
    assert all(s["health"] == "ok" and isinstance(s["db_bytes"], int) for s in status)
    assert 3 == len(ok(concord("status")).out.splitlines())
    assert "ROLE" in ok(concord("-w", "table", "status")).out
    members = ok(concord("-w", "json", "members", "list")).rows()
    assert ["n1", "n2", "n3"] == sorted(str(m["id"]) for m in members)
    health = ok(concord("-w", "json", "endpoint", "health", "--cluster")).rows()
    assert [True, True, True] == [h["health"] for h in health]
    ok(concord("put", "h", "1"))
    check = ok(concord("-w", "json", "check", "hash")).json()
    assert isinstance(check, dict) and [] == check["diverged"]
    assert 1 == len({m["hash"] for m in check["members"]})
    assert "VERDICT" in ok(concord("-w", "table", "check", "hash")).out
    leader = c.wait_leader()
    target = next(n for n in c.ids if n != leader)
    assert f"{target}\n" == ok(concord("move-leader", target)).out
    assert target == c.wait_leader()


@pytest.mark.timeout(180)
def test_check_hash_fails_when_members_cannot_be_compared_at_the_index(
        three: tuple[Cluster, Concord]) -> None:
    """An index no member has applied: nothing to compare is a failed check (exit 5); the
    applied index compares equal. (Naming a DIVERGED node: test_main.py, judge.)"""
    c, concord = three
    ok(concord("put", "k", "v"))
    c.wait_converged()
    statuses = ok(concord("-w", "json", "status")).json()
    assert isinstance(statuses, list)
    index = min(s["applied"] for s in statuses)
    ahead = concord("--timeout", "1", "-w", "json", "check", "hash", "--index", str(index + 10_000))
    assert 5 == ahead.code
    assert "no member could report a state hash" in ahead.err
    same = ok(concord("-w", "json", "check", "hash", "--index", str(index))).json()
    assert isinstance(same, dict) and [] == same["diverged"]


@pytest.mark.timeout(60)
def test_errors_are_one_line_with_exit_codes_when_arguments_are_bad() -> None:
    """Bad arguments exit 2 with one line; nothing is sent."""
    for args, fragment in [
        (("get",), "get needs a KEY"),
        (("put", "k"), "the following arguments are required: VALUE"),
        (("put", "k", "v", "--ttl", "-1"), "must be > 0"),
        (("put", "k", "{bad", "--json"), "value is not valid JSON"),
        (("put", "k", "v", "--if-absent", "--if-version", "1"), "not allowed with argument"),
        (("get", "k", "--prefix", "--meta"), "--meta works with a single key"),
        (("-w", "xml", "get", "k"), "invalid choice: 'xml'"),
        (("nosuch",), "invalid choice: 'nosuch'"),
        (("query", "--where", "[1"), "--where is not valid JSON"),
    ]:
        run = run_cli(*args, endpoints="tcp://127.0.0.1:1")
        assert 2 == run.code, (args, run.err)
        assert run.err.startswith("concord: error: ") and run.err.count("\n") == 1, (args, run.err)
        assert fragment in run.err, (args, run.err)


@pytest.mark.timeout(60)
def test_unreachable_endpoint_exits_3_with_one_line_when_nothing_listens() -> None:
    """No node at the endpoint: exit 3, a write too (its connection was refused, so it was
    never sent), one line naming the endpoint; the endpoint from the flag or from
    CONCORD_ENDPOINTS."""
    [port] = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    for run, code, start in (
        (run_cli("--timeout", "1", "get", "k", endpoints=f"127.0.0.1:{port}"), 3, "cannot reach the cluster"),
        (run_cli("--timeout", "1", "-w", "json", "members", "list", env={"CONCORD_ENDPOINTS": endpoint}),
         3, "cannot reach the cluster"),
        (run_cli("--timeout", "1", "put", "k", "v", endpoints=endpoint), 3, "cannot reach the cluster"),
    ):
        assert code == run.code, run.err
        assert run.err.startswith(f"concord: error: {start}"), run.err
        assert endpoint in run.err and 1 == run.err.count("\n"), run.err
    status = run_cli("--timeout", "1", "-w", "json", "status", endpoints=endpoint)
    assert 5 == status.code
    assert "unreachable" in status.out


@pytest.mark.timeout(60)
def test_write_exits_4_when_endpoint_accepts_but_never_answers() -> None:
    """A write sent to an endpoint that never answers (a ROUTER that reads and drops):
    exit 4, its outcome unknown, one line naming the endpoint."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)
    try:
        silent.setsockopt(zmq.LINGER, 0)
        endpoint = f"tcp://127.0.0.1:{silent.bind_to_random_port('tcp://127.0.0.1')}"
        run = run_cli("--timeout", "1", "put", "k", "v", endpoints=endpoint)
        assert 4 == run.code, run.err
        assert run.err.startswith("concord: error: outcome unknown"), run.err
        assert endpoint in run.err and 1 == run.err.count("\n"), run.err
    finally:
        silent.close(linger=0)
        ctx.term()


@pytest.mark.timeout(120)
def test_check_perf_gives_a_verdict_when_run_briefly(three: tuple[Cluster, Concord]) -> None:
    """A 2-second small load: a PASS/FAIL verdict in JSON, and the scratch keys are gone."""
    _, concord = three
    run = concord("-w", "json", "check", "perf", "--duration", "2")
    result = run.json()
    assert isinstance(result, dict) and result["verdict"] in ("PASS", "FAIL")
    assert (0 if result["verdict"] == "PASS" else 5) == run.code
    assert result["writes"] > 0
    assert "0\n" == ok(concord("count", "--prefix", "__concord_perf/")).out


@pytest.mark.timeout(180)
def test_quickstart_script_succeeds_when_run_twice(three: tuple[Cluster, Concord]) -> None:
    """docs/quickstart.sh runs as is, any number of times (the lock is released each time)."""
    import os
    import subprocess
    import sys

    from tests.integration.cluster import ROOT

    c, _ = three
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONCORD": f"{sys.executable} -m concord.cli",
           "CONCORD_ENDPOINTS": ",".join(node.client for node in c.nodes.values())}
    for _ in range(2):
        run = subprocess.run(["sh", str(ROOT / "docs" / "quickstart.sh")], capture_output=True,
                             text=True, timeout=120, env=env)
        assert 0 == run.returncode, run.stderr
        assert "hello\n" in run.stdout and "user/ann" in run.stdout


@pytest.mark.timeout(180)
def test_watch_keeps_following_when_its_node_stops(three: tuple[Cluster, Concord]) -> None:
    """watch attached to the leader; the leader stops; later changes still arrive."""
    import os
    import subprocess
    import sys

    from tests.integration.cluster import ROOT

    c, concord = three
    leader = c.wait_leader()
    first = c.nodes[leader].client
    others = [node.client for nid, node in c.nodes.items() if nid != leader]
    ok(concord("put", "w/1", "a"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    watch = subprocess.Popen(
        [sys.executable, "-m", "concord.cli", "-e", ",".join([first, *others]), "-w", "json",
         "watch", "w/", "--rev", "0", "--max-events", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert watch.stdout is not None
        line = watch.stdout.readline()  # the replayed w/1: the watch is attached to the leader
        assert "w/1" in line
        c.nodes[leader].terminate()
        c.wait_leader([nid for nid in c.ids if nid != leader])
        from tests.cli.conftest import run_cli
        ok(run_cli("put", "w/2", "b", endpoints=",".join(others)))
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert 0 == watch.returncode, err
    assert ["w/2"] == [json.loads(x)["key"] for x in out.splitlines()]


@pytest.mark.timeout(180)
def test_members_add_promote_remove_change_the_membership_when_run(three: tuple[Cluster, Concord]) -> None:
    """members add --learner, promote, remove: each answers the new membership."""
    _, concord = three
    # NB: the leader promotes a learner whose match index is within 10 entries of the
    # commit index, even one added with learner: true that never ran (noted for the
    # membership work); 30 entries first keep n4, which never runs, a learner.
    ok(concord("bulk", "put", "--batch", "1",
               stdin="".join(f'{{"key": "m{i}", "value": {i}}}\n' for i in range(30))))
    ports = [str(p) for p in free_ports(3)]
    added = ok(concord("-w", "json", "members", "add", "n4", "127.0.0.1", *ports, "--learner")).json()
    assert isinstance(added, list)
    assert {"n4": "learner"} == {m["id"]: m["role"] for m in added if m["id"] == "n4"}
    promoted = ok(concord("-w", "json", "members", "promote", "n4")).json()
    assert isinstance(promoted, list)
    assert {"n4": "voter"} == {m["id"]: m["role"] for m in promoted if m["id"] == "n4"}
    removed = ok(concord("-w", "table", "members", "remove", "n4")).out
    assert "n4" not in removed and "n1" in removed
    assert 1 == concord("members", "remove", "n9").code
