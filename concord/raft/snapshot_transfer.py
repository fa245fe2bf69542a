"""
Chunked InstallSnapshot (Raft §7, sent in pieces): the leader's chunking with a window of
unacknowledged chunks, and the follower's reassembly.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

Protocol: SNAPSHOT carries the full metadata and bytes [offset, offset + len) of the
data; the last chunk has `snapshot_done`. The follower answers each chunk with
SNAPSHOT_RESP(index=snapshot index, snapshot_offset=next byte it expects); `reject`
asks the leader to resend from that offset (a gap, or 0 when it holds no partial
snapshot, e.g. after a restart: the transfer starts over). Once assembled, the follower
restores the snapshot and answers APPEND_RESP after persisting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concord.ids import NodeId
from concord.raft.messages import Message, MessageType, Snapshot, SnapshotMeta
from concord.raft.progress import Progress


def snapshot_chunks(
    snapshot: Snapshot,
    pr: Progress,
    to: NodeId,
    frm: NodeId,
    term: int,
    chunk_bytes: int,
    inflight_chunks: int,
) -> list[Message]:
    """
    The chunks that the window allows next, advancing `pr.snapshot_sent_offset`.

    `snapshot_sent_offset` becomes len(data) + 1 once the last chunk went out.
    """
    window = chunk_bytes * inflight_chunks
    data = snapshot.data
    total = len(data)
    out: list[Message] = []
    while (
        pr.snapshot_sent_offset <= total
        and pr.snapshot_sent_offset - pr.snapshot_acked_offset < window
    ):
        start = pr.snapshot_sent_offset
        end = min(start + chunk_bytes, total)
        done = end == total
        out.append(
            Message(
                MessageType.SNAPSHOT,
                to,
                frm,
                term,
                snapshot=Snapshot(snapshot.meta, data[start:end]),
                snapshot_offset=start,
                snapshot_done=done,
            )
        )
        pr.snapshot_sent_offset = total + 1 if done else end
    return out


@dataclass(slots=True)
class _Assembly:
    meta: SnapshotMeta
    leader: NodeId
    chunks: list[bytes] = field(default_factory=list)
    expected_offset: int = 0
    # Chunks that arrived ahead of a gap, by offset: (data, done).
    early: dict[int, tuple[bytes, bool]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What to do after a chunk: acknowledge, and/or restore a complete snapshot."""

    ack_offset: int | None  # None: no SNAPSHOT_RESP (the snapshot is complete)
    reject: bool
    snapshot: Snapshot | None


class SnapshotReceiver:
    """A follower's partial snapshot, at most one at a time."""

    __slots__ = ("_asm", "max_early")

    def __init__(self, max_early: int) -> None:
        self._asm: _Assembly | None = None
        self.max_early = max_early

    def receive(self, m: Message, chunk: Snapshot) -> ChunkResult:
        meta = chunk.meta
        asm = self._asm
        if asm is not None and (asm.meta != meta or asm.leader != m.frm):
            asm = None
        if asm is None:
            if m.snapshot_offset != 0:
                return ChunkResult(0, True, None)  # nothing to continue: restart
            asm = _Assembly(meta, m.frm)
            self._asm = asm
        if m.snapshot_offset < asm.expected_offset:
            return ChunkResult(asm.expected_offset, False, None)  # a duplicate
        if m.snapshot_offset > asm.expected_offset:
            # A gap: keep the chunk, ask for a resend from the gap.
            if len(asm.early) < self.max_early:
                asm.early[m.snapshot_offset] = (chunk.data, m.snapshot_done)
            return ChunkResult(asm.expected_offset, True, None)
        done = m.snapshot_done
        data = chunk.data
        while True:
            asm.chunks.append(data)
            asm.expected_offset += len(data)
            if done:
                break
            following = asm.early.pop(asm.expected_offset, None)
            if following is None:
                break
            data, done = following
        if not done:
            return ChunkResult(asm.expected_offset, False, None)
        self._asm = None
        whole = asm.chunks[0] if len(asm.chunks) == 1 else b"".join(asm.chunks)
        return ChunkResult(None, False, Snapshot(meta, whole))
