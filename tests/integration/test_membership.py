"""Membership and leadership ops on a running cluster."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_int, as_maps
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def add_voter(c: Cluster, leader: str, node_id: str, timeout_s: float) -> None:
    """Start `node_id`, add it through `leader` (a learner first), wait until a voter."""
    c.add_node(node_id)
    ports = c.member_ports(node_id)
    reply = c.request(leader, {"op": "add_member", "member_id": node_id, "host": "127.0.0.1",
                               "client_port": ports.client_port, "peer_port": ports.peer_port,
                               "events_port": ports.events_port})
    assert True is reply["ok"], reply

    def is_voter() -> bool:
        st = c.status(leader)
        return st is not None and any(m["id"] == node_id and m["role"] == "voter"
                                      for m in as_maps(st["members"]))

    wait_until(is_voter, timeout_s, lambda: f"leader status={c.status(leader)}")


@pytest.mark.timeout(90)
def test_leadership_moves_when_transfer_leader_is_asked(cluster: ClusterFactory) -> None:
    """transfer_leader hands leadership to the named voter (TimeoutNow); a node that is
    not the leader refuses it (forwarding off: it would relay it to the new leader)."""
    c = cluster(3, raft={"forward_to_leader": False})
    leader = c.wait_leader()
    target = next(n for n in c.ids if n != leader)
    reply = c.request(leader, {"op": "transfer_leader", "member_id": target})
    assert (True, target) == (reply["ok"], reply["transferring_to"])
    wait_until(lambda: c.leader() == target, 10, lambda: f"statuses={c.statuses()}")
    follower_reply = c.request(leader, {"op": "transfer_leader"})
    assert "not_leader" == follower_reply["error"]
    assert True is c.request(target, {"op": "put", "key": "after", "value": 1})["ok"]


@pytest.mark.timeout(120)
def test_new_node_joins_and_leaves_when_added_and_removed(cluster: ClusterFactory) -> None:
    """add_member: a new empty node joins as a learner (through a snapshot: the log was
    compacted), is promoted, serves; then removed."""
    c = cluster(3, storage={"snapshot_entries": 20})
    leader = c.wait_leader()
    for i in range(150):
        assert True is c.request(leader, {"op": "put", "key": f"k{i}", "value": i})["ok"]
    add_voter(c, leader, "n4", 20)
    c.wait_converged()
    assert 149 == c.request("n4", {"op": "get", "key": "k149", "consistency": "strong"})["value"]
    # Every node learned the new member's address (replicated with the change).
    for nid in c.ids:
        members = c.request(nid, {"op": "members"})["members"]
        n4 = next(m for m in as_maps(members) if m["id"] == "n4")
        assert c.nodes["n4"].client == n4["client"], nid
    # A follower restarted from a snapshot taken after the address entry still knows it.
    for i in range(150, 200):
        assert True is c.request(leader, {"op": "put", "key": f"k{i}", "value": i})["ok"]
    c.wait_converged()
    follower = next(n for n in ("n1", "n2", "n3") if n != leader)
    c.nodes[follower].terminate()
    c.restart(follower)
    # Ready means serving, not caught up: under load the raft worker may still be
    # replaying when the first status request arrives.
    status = wait_until(lambda: c.status(follower), 30, f"no status from restarted {follower}")
    assert status is not None and as_int(status["first_index"]) > 1
    members = c.request(follower, {"op": "members"})["members"]
    n4 = next(m for m in as_maps(members) if m["id"] == "n4")
    assert c.nodes["n4"].client == n4["client"]
    removed = c.request(leader, {"op": "remove_member", "member_id": "n4"})
    assert True is removed["ok"]
    assert ["n1", "n2", "n3"] == sorted(str(m["id"]) for m in as_maps(removed["members"]))
    assert True is c.request(leader, {"op": "put", "key": "after", "value": 1})["ok"]


@pytest.mark.timeout(120)
def test_followers_hint_at_leader_when_it_was_added_at_run_time(cluster: ClusterFactory) -> None:
    """A leader read at a follower's read worker answers not_leader with the leader's
    client endpoint, also for a member added at run time (not in any config file)."""
    c = cluster(3)
    leader = c.wait_leader()
    add_voter(c, leader, "n4", 30)
    reply = c.request(leader, {"op": "transfer_leader", "member_id": "n4"})
    assert True is reply["ok"], reply
    wait_until(lambda: c.leader() == "n4", 20, lambda: f"statuses={c.statuses()}")
    follower = next(n for n in ("n1", "n2", "n3") if n != leader)
    last: list[dict[str, object]] = []

    def hinted() -> bool:
        last[:] = [c.request(follower, {"op": "get", "key": "k", "consistency": "leader"})]
        return last[0].get("error") == "not_leader" and last[0].get("leader") is not None

    wait_until(hinted, 20, lambda: f"{follower} answered {last}")
    assert c.nodes["n4"].client == last[0]["leader"]


@pytest.mark.timeout(90)
def test_rest_elect_new_leader_when_leader_is_removed(cluster: ClusterFactory) -> None:
    """remove_member of the leader itself: it steps down; the other two carry on."""
    c = cluster(3)
    leader = c.wait_leader()
    reply = c.request(leader, {"op": "remove_member", "member_id": leader})
    assert True is reply["ok"], reply
    rest = [n for n in c.ids if n != leader]
    new = c.wait_leader(rest)
    assert True is c.request(new, {"op": "put", "key": "after", "value": 1})["ok"]
    members = c.request(new, {"op": "members"})["members"]
    assert sorted(rest) == sorted(str(m["id"]) for m in as_maps(members))


def member_role(c: Cluster, at: str, node_id: str) -> str | None:
    """`node_id`'s role in `at`'s configuration, or None (not a member, or no answer)."""
    st = c.status(at)
    if st is None:
        return None
    return next((str(m["role"]) for m in as_maps(st["members"]) if m["id"] == node_id), None)


def add_member_request(c: Cluster, node_id: str, learner: bool | None = None) -> dict[str, object]:
    ports = c.member_ports(node_id)
    msg: dict[str, object] = {"op": "add_member", "member_id": node_id, "host": "127.0.0.1",
                              "client_port": ports.client_port, "peer_port": ports.peer_port,
                              "events_port": ports.events_port}
    if learner is not None:
        msg["learner"] = learner
    return msg


@pytest.mark.timeout(120)
def test_learner_stays_learner_when_added_with_learner_true(cluster: ClusterFactory) -> None:
    """add_member learner=true: caught up, it is not promoted, while a member added
    without the flag after it is (the leader's promotion check ran meanwhile)."""
    c = cluster(3)
    leader = c.wait_leader()
    c.add_node("n5")
    reply = c.request(leader, add_member_request(c, "n5", learner=True))
    assert True is reply["ok"], reply
    for i in range(20):
        assert True is c.request(leader, {"op": "put", "key": f"k{i}", "value": i})["ok"]
    c.wait_converged()  # n5 caught up: within any promotion lag of the commit index
    add_voter(c, leader, "n4", 30)
    assert "learner" == member_role(c, leader, "n5")
    assert 19 == c.request("n5", {"op": "get", "key": "k19", "consistency": "eventual"})["value"]


@pytest.mark.timeout(120)
def test_member_is_promoted_when_removed_and_added_again(cluster: ClusterFactory) -> None:
    """A member promoted, removed and added again on the same leader is promoted again."""
    c = cluster(3)
    leader = c.wait_leader()
    add_voter(c, leader, "n4", 30)
    removed = c.request(leader, {"op": "remove_member", "member_id": "n4"})
    assert True is removed["ok"], removed
    assert None is member_role(c, leader, "n4")
    reply = c.request(leader, add_member_request(c, "n4"))
    assert True is reply["ok"], reply
    assert leader == c.wait_leader(["n1", "n2", "n3"])  # still the same leader
    wait_until(lambda: member_role(c, leader, "n4") == "voter", 30,
               lambda: f"leader status={c.status(leader)}")
