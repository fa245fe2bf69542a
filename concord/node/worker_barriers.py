"""
The raft worker's side of the front door's read barriers (backend link BARRIER,
concord.net.backend; the door's side and the linearizability argument:
concord.net.door_strong).

A BARRIER becomes one `strong` read of the driver (`Driver.submit_read`: one ReadIndex
through the driver's read batching, on a follower via the leader; the decision is the
driver's, the one the simulator checks). Its reply says the read index is applied
here. The answer (BARRIER_ANSWER with that applied index) leaves only once shared memory
is published at least that far: replies are sent after the round's publish
(NodeCore.after_ready: SendReplies comes after PublishChanges / ResyncShm), and an
answer whose index shared memory has not reached yet (the start-up replay is published
in one piece at its end) waits for a later round. So the door, reading shared memory
when the answer arrives, can always reach the index. An error (NOT_LEADER, TIMEOUT)
is answered with a strong read's error (worker_requests.reply_error), at once.

Answers for a door that restarted meanwhile are dropped by the door (unknown token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.net.backend import BackendLink, pack_barrier_answer, pack_barrier_error
from concord.node.driver import Consistency, Reply, ReplyStatus
from concord.node.worker_requests import reply_error

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["Barriers"]


class Barriers:
    """The door's barriers in this raft worker: asked, released, answered. Not thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[int, int] = {}  # driver request id -> the door's barrier token
        self._released: list[tuple[int, int]] = []  # (token, index): applied, not yet sent
        self._failed: list[tuple[int, bytes]] = []  # (token, error answer): not yet sent

    def __len__(self) -> int:
        """Barriers taken and not yet answered."""
        return len(self._tokens) + len(self._released) + len(self._failed)

    def take(self, worker: RaftWorker, token: int) -> None:
        """A BARRIER from the door: one strong read of the driver (module docstring)."""
        rid = next(worker.ids)
        self._tokens[rid] = token
        worker.driver.submit_read(rid, "", Consistency.STRONG)

    def on_reply(self, worker: RaftWorker, reply: Reply) -> bool:
        """The driver's reply, if it is a barrier's (then True): its answer is queued."""
        token = self._tokens.pop(reply.request_id, None)
        if token is None:
            return False
        if reply.status is ReplyStatus.OK:
            self._released.append((token, reply.index))
        else:
            self._failed.append((token, pack_barrier_error(*reply_error(worker, reply.status))))
        return True

    def send(self, link: BackendLink, published_index: int) -> None:
        """
        After the round's shared-memory publish: send the errors, and the answers whose
        index shared memory reached (`published_index`); the rest wait.
        """
        if self._failed:
            failed, self._failed = self._failed, []
            for token, payload in failed:
                link.answer_barrier(token, payload)
        if not self._released:
            return
        waiting: list[tuple[int, int]] = []
        for token, index in self._released:
            if index <= published_index:
                link.answer_barrier(token, pack_barrier_answer(index))
            else:
                waiting.append((token, index))
        self._released = waiting
