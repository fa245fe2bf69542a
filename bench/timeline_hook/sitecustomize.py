"""
Timeline marks for `python -m bench.timeline` (imported by every Python process whose
PYTHONPATH starts with this folder; inert unless CONCORD_TIMELINE_DIR is set).

It wraps a few methods of the node's processes (door, raft worker, log writer) so that
each logs `monotonic_ns stage detail` to <CONCORD_TIMELINE_DIR>/<pid>.tl, one os.write
(a few µs) per mark. No production module carries any of this: with the hook off (the
folder not on the path) the code runs unchanged.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

_DIR = os.environ.get("CONCORD_TIMELINE_DIR")

if _DIR:
    import time
    from typing import Any, Callable

    _fds: dict[int, int] = {}

    def mark(stage: str, detail: object = "") -> None:
        pid = os.getpid()
        fd = _fds.get(pid)
        if fd is None:
            fd = _fds[pid] = os.open(f"{_DIR}/{pid}.tl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{time.monotonic_ns()} {stage} {detail}\n".encode())

    def _wrap(owner: Any, name: str, before: Callable[..., object] | None = None,
              after: Callable[..., object] | None = None) -> None:
        orig = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before(*args, **kwargs)
            out = orig(*args, **kwargs)
            if after is not None:
                after(out, *args, **kwargs)
            return out

        setattr(owner, name, wrapped)

    def _install() -> None:
        import zmq

        _poll = zmq.Poller.poll

        def poll(self: Any, timeout: Any = None) -> Any:
            events = _poll(self, timeout)
            if events:
                mark("wake", len(events))
            return events

        zmq.Poller.poll = poll  # type: ignore[method-assign]

        _fdatasync = os.fdatasync

        def fdatasync(fd: FileDescriptorLike) -> None:
            mark("fdatasync.begin")
            _fdatasync(fd)
            mark("fdatasync.end")

        os.fdatasync = fdatasync

        from concord.net import backend, frontdoor
        from concord.node import driver, raft_worker, worker_requests
        from concord.node.logwriter import client, loop, state

        fd_ = frontdoor.FrontDoor
        _wrap(fd_, "_handle_client", before=lambda self, frames, frame=None: mark("door.client_in"))
        _wrap(fd_, "_forward", before=lambda self, b, token, payload: mark("door.to_backend"))
        _wrap(fd_, "_on_backend_reply", before=lambda self, kind, token, payload: mark("door.backend_reply"))
        _wrap(fd_, "_send_client", after=lambda out, self, env, reply: mark("door.to_client"))

        _wrap(worker_requests, "_handle", before=lambda w, token, req: mark("raft.request", req.op))
        _wrap(backend.BackendLink, "reply_many", before=lambda self, r: mark("raft.reply", len(r)))
        _wrap(backend.BackendLink, "reply", before=lambda self, token, p: mark("raft.reply", 1))
        _wrap(raft_worker.RaftWorker, "send",
              before=lambda self, m: mark(f"raft.send.{m.type.name}", f"to={m.to} n={len(m.entries)}"))
        _wrap(raft_worker.RaftWorker, "_publish_changes", before=lambda self: mark("raft.shm_publish"))
        _wrap(client.LogWriterClient, "persist",
              before=lambda self, number, entries, hs, snap, sync: mark(
                  "raft.persist", f"number={number} n={len(entries)} sync={sync}"))
        _wrap(client.LogWriterClient, "committed", before=lambda self, i, cs=None: mark("raft.writer_committed"))
        d = driver.Driver
        _wrap(d, "on_persisted", before=lambda self, n: mark("raft.persisted", n))
        _wrap(d, "on_message", before=lambda self, m: mark(f"raft.recv.{m.type.name}", f"from={m.frm}"))
        _wrap(d, "_apply", before=lambda self, e: mark("raft.apply", e.index))
        _wrap(d, "on_tick", before=lambda self: mark("raft.tick"))
        _wrap(d, "_on_read_state", before=lambda self, rs: mark("raft.read_state", rs.index))
        _wrap(d, "_answer_read", before=lambda self, r: mark("raft.answer_read"))

        _wrap(state.LogWriter, "handle_batch", before=lambda self, frames: mark("writer.batch", len(frames)))
        _wrap(loop, "_send_outbox",
              before=lambda w, sock: mark("writer.send", len(w.outbox)) if w.outbox else None)

    try:
        _install()
    except ImportError:  # not a concord process (or concord not importable): no marks
        pass
