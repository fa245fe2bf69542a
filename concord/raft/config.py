"""
Configuration of the consensus core, and the injected randomness it uses.

Pure. No IO, no clock, no global randomness; stdlib-only imports. Durations are in ticks:
the caller decides how long a tick is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from concord.errors import ConfigError
from concord.ids import NodeId


class Rng(Protocol):
    """The randomness the core needs; `random.Random` satisfies it."""

    def randint(self, a: int, b: int) -> int:
        """A random integer N with a <= N <= b."""
        ...


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """
    Settings of one Raft node.

    Attributes:
        id: this node's id.
        election_ticks: election timeout; each election waits a random number of ticks in
            [election_ticks, 2 * election_ticks - 1] (Raft §5.2).
        heartbeat_ticks: the leader sends heartbeats every this many ticks.
        max_inflight_msgs: APPENDs in flight to one follower in the replicate state.
        max_size_per_msg: byte budget of the entries of one APPEND (at least one entry is
            always sent).
        max_committed_size_per_ready: byte budget of `Ready.committed_entries`.
        pre_vote: run a pre-vote round before an election (thesis §9.6).
        check_quorum: a leader steps down when it has not heard from a quorum within an
            election timeout; followers then also ignore votes while they hear a leader.
        snapshot_chunk_bytes: size of one InstallSnapshot chunk.
        snapshot_inflight_chunks: chunks in flight to one follower.
        step_down_on_removal: a leader removed from the configuration becomes a follower.
        logger: the logger the core writes to (default: this package's logger).
    """

    id: NodeId
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_chunk_bytes: int = 1 << 20
    snapshot_inflight_chunks: int = 4
    step_down_on_removal: bool = True
    logger: logging.Logger | None = None

    def validate(self) -> None:
        """
        Check the values are usable.

        Raises:
            ConfigError: naming the offending key.
        """
        if not self.id:
            raise ConfigError("raft id must not be empty")
        if self.heartbeat_ticks <= 0:
            raise ConfigError(f"heartbeat_ticks must be positive, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                f"election_ticks {self.election_ticks} must be greater than "
                f"heartbeat_ticks {self.heartbeat_ticks}"
            )
        for name in (
            "max_inflight_msgs",
            "max_size_per_msg",
            "max_committed_size_per_ready",
            "snapshot_chunk_bytes",
            "snapshot_inflight_chunks",
        ):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
