"""The audit log of a real 3-node cluster holds exactly the writes and admin ops made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concord.audit.log import list_files
from concord.audit.record import AuditKeys
from concord.cli.main import main as cli
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "audit-test-cluster-secret-7f3a"
TOKEN = "sk_concord_tok1_TOPSECRETtokenPART"


def _lines(c: Cluster, node: str) -> list[dict[str, object]]:
    folder = c.nodes[node].data_dir / "audit"
    return [json.loads(line) for _, p in list_files(folder) for line in p.read_text().splitlines()]


def _requests(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    return [x for x in lines if not str(x["op"]).startswith("audit_")]


@pytest.mark.timeout(120)
def test_audit_log_holds_exactly_the_writes_when_a_cluster_served_them(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Every write and admin op made, with its result and revision, on the node that got
    it; no read; no value, key outside the loggable prefixes or token secret anywhere;
    `concord audit verify` passes, then fails after an edit and after a deletion."""
    secret_file = tmp_path / "audit.secret"
    secret_file.write_text(SECRET + "\n")
    c = cluster(3, audit={"enabled": True, "secret_file": str(secret_file), "fsync": "always",
                          "loggable_prefixes": ["config/"]})
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    made: list[tuple[str, str, object, str, object]] = []  # (node, op, key, result, revision)

    def send(node: str, msg: dict[str, object], key: object = None) -> dict[str, object]:
        reply = c.request(node, msg)
        result = "ok" if reply["ok"] else str(reply["error"])
        made.append((node, str(msg["op"]), key, result, reply.get("revision")))
        return reply

    for i in range(5):
        assert send(leader, {"op": "put", "id": i, "key": f"user:{i}", "value": f"VALUE-{i}"},
                    f"user:{i}")["ok"]
    send(leader, {"op": "put", "id": 10, "key": "config/flag", "value": "VALUE-config"}, "config/flag")
    send(leader, {"op": "delete", "id": 11, "key": "user:0"}, "user:0")
    send(leader, {"op": "put_many", "id": 12, "items": [["user:7", "VALUE-7"], ["user:8", "VALUE-8"]]})
    send(leader, {"op": "put_if", "id": 13, "key": "user:1", "value": "VALUE-x", "absent": True},
         "user:1")  # condition_failed
    send(leader, {"op": "put", "id": 14, "key": "user:9", "value": "VALUE-9", "token": TOKEN},
         "user:9")  # refused at the door: auth is not enabled
    send(follower, {"op": "put", "id": 15, "key": "user:5", "value": "VALUE-5"}, "user:5")
    for i in range(3):  # reads are not logged (log_reads = false)
        assert c.request(leader, {"op": "get", "id": 20 + i, "key": f"user:{i + 1}"})["ok"]
    send(leader, {"op": "transfer_leader", "id": 30})

    keys = AuditKeys(SECRET.encode(), ("config/",))
    logged = []
    for node in c.ids:
        for x in _requests(_lines(c, node)):
            key = x["key"] if x["key"] is not None else x["key_hmac"]
            logged.append((node, x["op"], key, x["result"], x["revision"]))
            assert ("127.0.0.1", node) == (x["client"], x["node"])
    expected = [(n, op, (k if k is None or str(k).startswith("config/") else keys.hmac(str(k))),
                 r, rev) for n, op, k, r, rev in made]
    assert sorted(map(repr, expected)) == sorted(map(repr, logged))
    by_op = {x["op"]: x for x in _requests(_lines(c, leader))}
    assert [keys.hmac("user:7"), keys.hmac("user:8")] == by_op["put_many"]["keys_hmac"]
    refused = [x for x in _requests(_lines(c, leader)) if x["result"] == "invalid_request"]
    assert ["tok1"] == [x["token_id"] for x in refused]
    # The follower forwarded its put to the leader: logged once, by the node it reached.
    assert ("condition_failed", "ok") == (
        by_op["put_if"]["result"], _requests(_lines(c, follower))[0]["result"])

    text = "".join(p.read_text() for n in c.ids
                   for _, p in list_files(c.nodes[n].data_dir / "audit"))
    for secret in ["VALUE-", "TOPSECRET", TOKEN, SECRET, *[f"user:{i}" for i in range(10)]]:
        assert secret not in text

    where = ["--dir", str(c.nodes[leader].data_dir / "audit"), "--secret-file", str(secret_file)]
    assert 0 == cli(["audit", "verify", *where])
    [(_, path)] = list_files(c.nodes[leader].data_dir / "audit")
    original = path.read_text()
    path.write_text(original.replace('"result":"condition_failed"', '"result":"ok"'))
    assert 5 == cli(["audit", "verify", *where])
    lines = original.splitlines()
    path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    assert 5 == cli(["audit", "verify", *where])
