"""
The simulator's nemesis and membership changes: node faults (crash one, pause, crash
the leader, crash all, leader transfer, a membership change), network faults
(partitions, one-way blocks, isolating the leader, clogging a node, healing), restarts,
and membership changes (learners added, conf changes submitted, bursts of writes,
retired members).

Methods of `concord.sim.cluster.Simulation`, kept here by concern: each function takes
the simulation as `sim` and is bound in the class body.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.raft.messages import ConfChange
from concord.sim.linearizability import OpKind
from concord.sim.node import SimNode
from concord.sim.programs import replace_change

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation


def nemesis(sim: Simulation) -> None:
    if sim.loop.now >= sim.config.duration_ms - 200:
        return
    rng = sim.nemesis_rng
    if sim.program_running:
        sim.loop.after(rng.randint(50, 400), sim._nemesis)
        return
    members = [n for n in sim.nodes if n not in sim.removed]
    action = rng.choices(
        ["crash", "partition", "oneway", "isolate_leader", "clog", "heal", "transfer",
         "membership", "crash_all", "crash_leader", "pause"],
        weights=[20, 12, 8, 10, 8, 15, 10, 12 if sim.config.membership else 0, 2, 15, 15],
    )[0]
    if action in ("partition", "oneway", "isolate_leader", "clog", "heal"):
        sim._network_fault(action, members)
    else:
        sim._node_fault(action, members)
    sim.loop.after(rng.randint(50, 400), sim._nemesis)


def node_fault(sim: Simulation, action: str, members: list[NodeId]) -> None:
    """One of the nemesis' node actions: crashes, a pause, a transfer, membership."""
    rng, now = sim.nemesis_rng, sim.loop.now
    if action == "crash":
        victim = sim.nodes[rng.choice(members)]
        if victim.alive:
            victim.crash()
            sim.loop.after(rng.randint(50, 600), lambda: sim._restart(victim.id))
    elif action == "pause":
        # A stopped process (GC pause, SIGSTOP), most often the leader: when it
        # resumes it must not serve reads from before its deposition.
        paused = sim.leader()
        if paused is None or rng.random() >= 0.7:
            paused = sim.nodes[rng.choice(members)]
        paused.pause(now + rng.randint(100, 500))
    elif action == "crash_leader":
        leader = sim.leader()
        if leader is not None:
            leader.crash()
            sim.loop.after(rng.randint(10, 300), partial(sim._restart, leader.id))
    elif action == "crash_all":
        for node in sim.nodes.values():
            if node.alive:
                node.crash()
                sim.loop.after(rng.randint(20, 300), partial(sim._restart, node.id))
    elif action == "transfer":
        leader = sim.leader()
        if leader is not None and leader.driver is not None:
            voters = [v for v in leader.driver.conf_state.voters if v != leader.id]
            if voters:
                to = rng.choice(sorted(voters))
                sim.trace(f"transfer {leader.id}->{to}")
                leader.driver.transfer_leader(to)
                leader.process()
    elif action == "membership":
        sim._membership()


def network_fault(sim: Simulation, action: str, members: list[NodeId]) -> None:
    """One of the nemesis' network actions: partitions, blocks, clogs, heal."""
    rng, now = sim.nemesis_rng, sim.loop.now
    if action == "partition":
        shuffled = sorted(members)
        rng.shuffle(shuffled)
        cut = rng.randint(1, max(1, len(shuffled) - 1))
        sim.network.partition(shuffled[:cut], shuffled[cut:])
        sim.trace(f"partition {shuffled[:cut]} | {shuffled[cut:]}")
        sim.loop.after(rng.randint(100, 800), sim._heal_network)
    elif action == "oneway":
        a, b = rng.sample(sorted(members), 2)
        sim.network.block(a, b)
        sim.trace(f"block {a}->{b}")
        sim.loop.after(rng.randint(100, 800), sim._heal_network)
    elif action == "isolate_leader":
        leader = sim.leader()
        if leader is not None:
            sim.network.isolate(leader.id, members)
            sim.trace(f"isolate {leader.id}")
            sim.loop.after(rng.randint(100, 800), sim._heal_network)
    elif action == "clog":
        victim_id = rng.choice(members)
        sim.network.clog(victim_id, now + rng.randint(20, 300))
        sim.trace(f"clog {victim_id}")
    elif action == "heal":
        sim._heal_network()


def restart(sim: Simulation, node_id: NodeId, startup_ms: int = 0) -> None:
    node = sim.nodes[node_id]
    if not node.alive and node_id not in sim.removed:
        node.start(startup_ms)


def heal_network(sim: Simulation) -> None:
    if sim.network.partitions:
        sim.trace("heal network")
    sim.network.heal()


def core_request_id(sim: Simulation) -> int:
    """Ids of the node cores' own proposals (promotions): apart from everyone else's."""
    sim._core_ids += 1
    return sim._core_ids


def control_request(sim: Simulation, what: str) -> int:
    sim._request_ids += 1
    sim._control[sim._request_ids] = what
    return sim._request_ids


def membership(sim: Simulation) -> None:
    leader = sim.leader()
    if leader is None or leader.driver is None or sim._conf_change_busy:
        return
    rng = sim.nemesis_rng
    conf = leader.driver.conf_state
    if conf.voters_outgoing:
        return
    voters, learners = sorted(conf.voters), sorted(conf.learners)
    options = []
    if sim.spares:
        options.append("add_learner")
    if learners:
        options.append("promote")
    if len(voters) > max(3, sim.config.nodes - 1) or (len(voters) > 1 and sim.config.nodes < 3):
        options.append("remove")
    if learners and len(voters) >= 3:
        options.append("replace")
    if not options:
        return
    choice = rng.choice(options)
    if choice == "add_learner":
        sim.add_learner(leader)
        return
    if choice == "promote":
        sim.member_change(leader, "promote_member", rng.choice(learners))
        return
    if choice == "replace":
        # Joint consensus: a learner takes a voter's place in one change.
        victim = rng.choice([v for v in voters if v != leader.id] or voters)
        cc = replace_change(rng.choice(learners), victim)
        sim.loop.after(1500, lambda: sim._retire(victim))
    else:
        victim = rng.choice(voters)
        sim.loop.after(1500, lambda: sim._retire(victim))
        sim.member_change(leader, "remove_member", victim)
        return
    sim.submit_conf_change(leader, cc, choice)


def add_learner(sim: Simulation, leader: SimNode, stays: bool = False) -> NodeId:
    """
    Start a spare node and have `leader` add it as a learner (one that stays a learner
    if `stays`: the programs that need one pass True).
    """
    new_id = sim.spares.pop(0)
    node = sim._make_node(new_id, sim.bootstrap)
    sim.nodes[new_id] = node
    node.start()
    # Half of the learners ask to be promoted once caught up (add_member without
    # `learner: true`): the node core's auto-promotion. From a stream of its own.
    learner = True if stays or sim.promotion_rng.chance(0.5) else None
    sim.member_change(leader, "add_member", new_id, learner)
    return new_id


def member_change(sim: Simulation, leader: SimNode, op: str, member: NodeId,
                  learner: bool | None = None) -> None:
    """A membership request at `leader`, decided by its node core (as the raft worker)."""
    rid = sim._control_request(f"cc {op} {member}")
    sim._conf_change_busy = True
    sim.trace(f"conf change {op} {member} via {leader.id} learner={learner}")
    leader.member_change(op, member, rid, learner)
    leader.process()


def submit_conf_change(sim: Simulation, leader: SimNode, cc: ConfChange, what: str) -> None:
    assert leader.driver is not None
    rid = sim._control_request(f"cc {what} {cc.changes[0].node_id}")
    sim._conf_change_busy = True
    sim.trace(f"conf change {what} {cc.changes[0].node_id} via {leader.id}")
    leader.driver.submit_conf_change(rid, cc)
    leader.process()


def burst(sim: Simulation, leader: SimNode, count: int, what: str) -> None:
    """Propose `count` writes of a program's own key at `leader` in one step."""
    assert leader.driver is not None
    for i in range(count):
        rid = sim._control_request(f"{what} write")
        leader.driver.submit_write(
            rid, sim.adapter.encode(OpKind.PUT, f"__{what}__", (i,))
        )
    leader.process()


def retire(sim: Simulation, node_id: NodeId) -> None:
    """Stop a removed node once its removal is surely applied (if it was)."""
    leader = sim.leader()
    if leader is None or leader.driver is None:
        sim.loop.after(500, lambda: sim._retire(node_id))
        return
    conf = leader.driver.conf_state
    if node_id in conf.voters or node_id in conf.learners or node_id in conf.voters_outgoing:
        return  # the removal did not happen
    sim.removed.add(node_id)
    sim.nodes[node_id].crash()
    sim.trace(f"retire {node_id}")
