"""
Data-driven interaction scripts in the style of etcd-io/raft's `rafttest` (docs/simulation.md).

A script is a sequence of blocks:

    command arg arg key=value
    ----
    expected output

separated by blank lines; `#` lines are comments. The output comes from describe.py.
Set CONCORD_REWRITE=1 to regenerate the expected output (commit only diffs you
understand).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from concord.ids import NodeId
from concord.raft import ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType
from concord.raft.describe import describe_entry, describe_message, describe_ready
from tests.raft.network import Network

REWRITE = os.environ.get("CONCORD_REWRITE") == "1"


@dataclass
class Block:
    command: str
    expected: str


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        command = line
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"expected ---- after {command!r}")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i] != "":
            out.append(lines[i])
            i += 1
        blocks.append(Block(command, "\n".join(out)))
    return blocks


def render(blocks: list[Block]) -> str:
    return "\n\n".join(f"{b.command}\n----\n{b.expected}" for b in blocks) + "\n"


def _bool(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


class Interaction:
    """Runs commands against a Network and describes what happened."""

    def __init__(self) -> None:
        self.net: Network | None = None

    @property
    def network(self) -> Network:
        assert self.net is not None, "add-nodes first"
        return self.net

    def run(self, command: str) -> str:
        words = command.split()
        name, args = words[0], words[1:]
        positional = [a for a in args if "=" not in a]
        options = dict(a.split("=", 1) for a in args if "=" in a)
        handler = getattr(self, "cmd_" + name.replace("-", "_"))
        result: str = handler(positional, options)
        return result if result else "ok"

    def cmd_add_nodes(self, names: list[str], options: dict[str, str]) -> str:
        overrides: dict[str, int | bool] = {}
        for key, value in options.items():
            if key in ("pre_vote", "check_quorum"):
                overrides[key] = _bool(value)
            elif key not in ("voters", "learners"):
                overrides[key] = int(value)
        voters = options["voters"].split(",") if "voters" in options else None
        learners = options["learners"].split(",") if "learners" in options else []
        self.net = Network(names, 1, voters, learners, **overrides)
        return ""

    def cmd_campaign(self, args: list[str], options: dict[str, str]) -> str:
        self.network.nodes[NodeId(args[0])].campaign()
        return ""

    def cmd_propose(self, args: list[str], options: dict[str, str]) -> str:
        index, term = self.network.nodes[NodeId(args[0])].propose(args[1].encode())
        return f"index={index} term={term}"

    def cmd_propose_conf_change(self, args: list[str], options: dict[str, str]) -> str:
        kinds = {"v": ConfChangeType.ADD_VOTER, "l": ConfChangeType.ADD_LEARNER,
                 "r": ConfChangeType.REMOVE}
        changes = tuple(ConfChangeSingle(kinds[a[0]], NodeId(a[1:])) for a in args[1:])
        transition = ConfChangeTransition[options.get("transition", "AUTO").upper()]
        index, term = self.network.nodes[NodeId(args[0])].propose_conf_change(
            ConfChange(changes, transition)
        )
        return f"index={index} term={term}"

    def cmd_read_index(self, args: list[str], options: dict[str, str]) -> str:
        self.network.nodes[NodeId(args[0])].read_index(args[1].encode())
        return ""

    def cmd_transfer_leadership(self, args: list[str], options: dict[str, str]) -> str:
        self.network.nodes[NodeId(args[0])].transfer_leadership(NodeId(args[1]))
        return ""

    def cmd_set_time(self, args: list[str], options: dict[str, str]) -> str:
        self.network.nodes[NodeId(args[0])].set_time(int(args[1]))
        return ""

    def cmd_tick(self, args: list[str], options: dict[str, str]) -> str:
        self.network.tick(NodeId(args[0]), int(options.get("n", "1")))
        return ""

    def cmd_isolate(self, args: list[str], options: dict[str, str]) -> str:
        self.network.isolate(args[0])
        return ""

    def cmd_heal(self, args: list[str], options: dict[str, str]) -> str:
        self.network.heal()
        return ""

    def cmd_stabilize(self, args: list[str], options: dict[str, str]) -> str:
        """Process Readys and deliver messages until quiet; describe every step."""
        net = self.network
        out: list[str] = []
        for _ in range(1000):
            busy = False
            for name in net.names:
                node = net.nodes[name]
                if node.has_ready():
                    busy = True
                    rd = net.process_ready(name)
                    out.append(f"> {name} handling " + describe_ready(rd).replace("\n", "\n  "))
            delivered: list[str] = []
            while net.queue:
                busy = True
                m = net.queue.popleft()
                if (m.frm, m.to) in net.cut:
                    delivered.append("dropped " + describe_message(m))
                    continue
                delivered.append(describe_message(m))
                net.deliver(m)
            if delivered:
                out.append("> delivering\n  " + "\n  ".join(delivered))
            if not busy:
                return "\n".join(out)
        raise AssertionError("did not stabilize")

    def cmd_raft_log(self, args: list[str], options: dict[str, str]) -> str:
        entries = self.network.log_entries(args[0])
        return "\n".join(describe_entry(e) for e in entries) or "log is empty"

    def cmd_status(self, args: list[str], options: dict[str, str]) -> str:
        st = self.network.nodes[NodeId(args[0])].status()
        lines = [
            f"{st.id} {st.soft_state.role.name} term={st.hard_state.term} "
            f"vote={st.hard_state.vote} lead={st.soft_state.leader_id} "
            f"commit={st.committed} applied={st.applied}",
            f"config voters={','.join(st.conf_state.voters)} "
            f"outgoing={','.join(st.conf_state.voters_outgoing)} "
            f"learners={','.join(st.conf_state.learners)}",
        ]
        for node_id, pr in sorted(st.progress.items()):
            lines.append(
                f"{node_id}: {pr.state.name} match={pr.match} next={pr.next}"
                + (" learner" if pr.is_learner else "")
            )
        return "\n".join(lines)


def run_file(path: Path) -> tuple[str, str]:
    """(expected text, actual text) for one script."""
    text = path.read_text()
    blocks = parse(text)
    interaction = Interaction()
    actual = [Block(b.command, interaction.run(b.command)) for b in blocks]
    return render(blocks), render(actual)


def check_file(path: Path) -> None:
    expected, actual = run_file(path)
    if REWRITE:
        path.write_text(actual)
        return
    assert expected == actual
