"""The raft worker while its shm reset is built in steps: held write replies, barriers, the publish."""

from __future__ import annotations

from types import SimpleNamespace

from concord.node import worker_effects
from concord.node.core.effects import SendReplies
from concord.node.core.node import NodeCore
from concord.node.driver import Reply, ReplyStatus
from concord.node.raft_worker import RaftWorker
from concord.node.worker_requests import Pending
from concord.net.wire import Request


class _Refuses:
    """The node core's and the barriers' reply hooks: not theirs."""

    def on_reply(self, *args: object) -> bool:
        return False


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_reply(self, reply: object) -> None:
        pass

    def reply_many(self, replies: object) -> None:
        self.calls.append(("reply_many", replies))

    def send(self, link: object, index: int) -> None:
        self.calls.append(("barriers", index))


def _worker(resetting: bool) -> SimpleNamespace:
    core = SimpleNamespace(resetting=resetting, on_reply=lambda rid: False)
    return SimpleNamespace(
        metrics=_Recorder(), core=core, barriers=_Refuses(), _bootstrap_pending=None,
        pending={}, tracing=None, _outbox=[], held_replies=[], node_id="n1",
    )


def _pending(worker: SimpleNamespace, rid: int, token: int, op: str) -> None:
    args = {"key": "k", "value": 1} if op == "put" else {"key": "k"}
    worker.pending[rid] = Pending(token, Request(op, rid * 10, args))


def test_write_replies_wait_for_the_publish_when_a_reset_is_being_built() -> None:
    """A put's reply is held while the core builds a reset; a read's leaves with the round."""
    worker = _worker(resetting=True)
    _pending(worker, 1, token=11, op="put")
    _pending(worker, 2, token=12, op="get")
    RaftWorker._on_reply(worker, Reply(1, ReplyStatus.OK, {"revision": 5}, index=5))  # type: ignore[arg-type]
    RaftWorker._on_reply(worker, Reply(2, ReplyStatus.TIMEOUT))  # type: ignore[arg-type]
    assert [11] == [token for token, _ in worker.held_replies]
    assert [12] == [token for token, _ in worker._outbox]
    worker = _worker(resetting=False)
    _pending(worker, 1, token=11, op="put")
    RaftWorker._on_reply(worker, Reply(1, ReplyStatus.OK, {"revision": 5}, index=5))  # type: ignore[arg-type]
    assert ([], [11]) == (worker.held_replies, [token for token, _ in worker._outbox])


def test_held_replies_leave_after_the_publish_when_the_last_step_publishes() -> None:
    """step_reset: nothing until the publisher's step publishes; then the core hears it,
    the held replies join the outbox, and a round (after_ready) publishes and sends."""
    core = NodeCore("n1", iter(range(1, 100)).__next__)  # type: ignore[arg-type]
    core.resetting = True
    results = iter([False, True])
    rounds: list[list[int]] = []
    worker: SimpleNamespace = SimpleNamespace(
        publisher=SimpleNamespace(reset_step=lambda budget_s: next(results), applied_index=9),
        core=core, _outbox=[(1, b"read")], held_replies=[(2, b"write")],
        reset_started=(0.0, False), reset_cpu_s=0.0,
        _after_ready=lambda: rounds.append([token for token, _ in worker._outbox]),
    )
    worker_effects.step_reset(worker, 0.01)  # type: ignore[arg-type]
    assert (True, [], [(2, b"write")]) == (core.resetting, rounds, worker.held_replies)
    worker_effects.step_reset(worker, 0.01)  # type: ignore[arg-type]
    assert (False, [[1, 2]], []) == (core.resetting, rounds, worker.held_replies)


def test_barriers_are_answered_at_the_applied_index_when_shm_is_not_current() -> None:
    """SendReplies(shm_current=False): the door's barriers at the driver's applied index
    (its view, behind, declines them to this worker), not at what shm holds."""
    for shm_current, expected in ((True, 3), (False, 8)):
        barriers = _Recorder()
        worker = SimpleNamespace(
            _outbox=[], link=_Recorder(), forward=_Recorder(), barriers=barriers,
            publisher=SimpleNamespace(applied_index=3), driver=SimpleNamespace(applied_index=8),
        )
        worker_effects.carry_out(worker, [SendReplies(shm_current)])  # type: ignore[arg-type]
        assert [("barriers", expected)] == barriers.calls
