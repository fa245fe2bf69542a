"""
A fake node for the client tests: a real front door process (concord.net.frontdoor)
plus a fake backend process holding a small in-memory KV behind two BackendLinks (one
READ, one RAFT), so the client is tested over the real wire path.

The backend records every request it decodes (the whole map, envelope included) and
obeys commands on its control pipe:

    ("requests",)            -> list of request maps seen so far
    ("requests", n, wait_s)  -> the same list, once it holds at least n maps or wait_s
                                has passed (a silent attempt's request may still be on its
                                way through the front door when the client gives up on it)
    ("mode", {...})          -> "ok"; behaviour for the next requests:
        redirect: endpoint   answer every request not_leader with this leader hint
        redirect_except: [op, ...]   ops served normally despite redirect
        not_leader: n        answer the next n requests not_leader with no hint
        no_leader: n         answer the next n requests no_leader
        drop_replies: n      apply the next n writes but send no reply (lost reply)
        ignore: n            neither apply nor answer the next n requests
        error: [code, message, leader]   answer every request with this error
        status_extra: {...}  fields added to every status reply (e.g. "shm")
        probe: True          `status` is recorded and obeys the modes as any request
                             (without: answered at once, unrecorded, so that the direct
                             endpoint probe, concord.client.direct, leaves tests alone)
    "stop" or EOF            exit

Sessions work as in the real state machine: a write carrying (client_id, seq) already
applied is answered with its first result and not applied again.
"""

from __future__ import annotations

import math
import time
from multiprocessing.connection import Connection

import zmq

from concord.errors import ClientError, ConditionFailedError, NotFoundError
from concord.net.backend import BackendLink
from concord.net.frontdoor import FrontDoorOptions, serve_in_process
from concord.net.wire import Backend, Request, decode_request, error_reply, ok_reply, reply_for_error
from tests.net.fakes import ChildProcess, ipc_endpoint

Context = zmq.Context[zmq.Socket[bytes]]

_READS = {"get", "get_many", "ttl", "get_with_ttl", "get_all", "keys", "query", "count",
          "events", "status", "members"}


class FakeKv:
    """An in-memory KV answering wire requests with the reply shapes of docs/formats/kv.md."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.revision = 0
        # key -> [value, create_revision, mod_revision, version, ttl]
        self.data: dict[str, list[object]] = {}
        self.history: list[dict[str, object]] = []
        self.sessions: dict[object, dict[int, dict[str, object]]] = {}

    def _bump(self) -> int:
        self.revision += 1
        return self.revision

    def _put(self, key: str, value: object, ttl: object, rev: int) -> None:
        old = self.data.get(key)
        created = rev if old is None else old[1]
        version = 1 if old is None else int(old[3]) + 1  # type: ignore[call-overload]
        self.data[key] = [value, created, rev, version, ttl]
        self.history.append({"type": "put", "key": key, "value": value, "revision": rev, "ts": 1000 + rev,
                             "ttl": ttl})

    def _delete(self, key: str, rev: int) -> bool:
        if self.data.pop(key, None) is None:
            return False
        self.history.append({"type": "delete", "key": key, "revision": rev, "ts": 1000 + rev})
        return True

    def _match(self, key: str, args: dict[str, object]) -> bool:
        prefix = args.get("prefix")
        return prefix is None or key.startswith(str(prefix))

    def _cond(self, key: str, args: dict[str, object]) -> bool:
        cur = self.data.get(key)
        if "absent" in args:
            return (cur is None) == bool(args["absent"])
        if "expected" in args:
            return cur is not None and cur[0] == args["expected"]
        if "version" in args:
            return (0 if cur is None else cur[3]) == args["version"]
        return (0 if cur is None else cur[2]) == args["mod_revision"]

    def apply(self, req: Request) -> dict[str, object]:
        """The ok result of a request, or raise the ClientError it fails with."""
        if req.op not in _READS and req.client_id is not None and req.seq is not None:
            # As kv/sessions.py: results kept for every seq >= min_seq (default seq).
            floor = req.seq if req.min_seq is None else req.min_seq
            kept = self.sessions.setdefault(req.client_id, {})
            if req.seq in kept:
                return kept[req.seq]
            for seq in [s for s in kept if s < floor]:
                del kept[seq]
            result = self._apply(req.op, dict(req.args))
            kept[req.seq] = result
            return result
        return self._apply(req.op, dict(req.args))

    def _apply(self, op: str, a: dict[str, object]) -> dict[str, object]:
        key = str(a.get("key", ""))
        if op == "put":
            rev = self._bump()
            self._put(key, a["value"], a.get("ttl"), rev)
            return {"revision": rev}
        if op in ("get", "ttl", "get_with_ttl"):
            cur = self.data.get(key)
            if cur is None:
                raise NotFoundError(f"key {key!r} not found")
            if op == "ttl":
                return {"ttl": cur[4]}
            if op == "get_with_ttl":
                return {"value": cur[0], "ttl": cur[4]}
            out: dict[str, object] = {"value": cur[0]}
            if a.get("meta"):
                out.update(revision=cur[2], version=cur[3], create_revision=cur[1], ttl=cur[4])
            return out
        if op == "delete":
            rev = self._bump()
            return {"deleted": self._delete(key, rev), "revision": rev}
        if op == "put_many":
            rev = self._bump()
            for item in a["items"]:  # type: ignore[attr-defined]
                self._put(item[0], item[1], item[2] if len(item) > 2 else None, rev)
            return {"revision": rev}
        if op == "get_many":
            keys = a["keys"]
            return {"values": {k: self.data[k][0] for k in keys if k in self.data}}  # type: ignore[attr-defined]
        if op == "delete_many":
            rev = self._bump()
            return {"deleted": sum(self._delete(k, rev) for k in a["keys"]), "revision": rev}  # type: ignore[attr-defined]
        if op in ("touch", "touch_many"):
            items = [[key, a["ttl"]]] if op == "touch" else a["items"]
            for k, ttl in items:  # type: ignore[attr-defined]
                if k not in self.data:
                    raise NotFoundError(f"key {k!r} not found")
            rev = self._bump()
            for k, ttl in items:  # type: ignore[attr-defined]
                self.data[k][4] = ttl
                self.data[k][2] = rev
            return {"revision": rev}
        if op == "get_all":
            after = str(a.get("after", ""))
            items = [[k, v[0]] for k, v in sorted(self.data.items()) if k > after]
            limit = int(a.get("limit", 1000))  # type: ignore[call-overload]
            return {"items": items[:limit], "more": len(items) > limit}
        if op in ("put_if", "delete_if"):
            if not self._cond(key, a):
                raise ConditionFailedError(f"condition on key {key!r} failed")
            rev = self._bump()
            if op == "put_if":
                self._put(key, a["value"], a.get("ttl"), rev)
                return {"revision": rev}
            return {"deleted": self._delete(key, rev), "revision": rev}
        if op in ("keys", "query", "count", "delete_where"):
            found = [k for k in sorted(self.data) if self._match(k, a)]
            if op == "count":
                return {"count": len(found)}
            if op == "delete_where":
                rev = self._bump()
                return {"deleted": sum(self._delete(k, rev) for k in found), "revision": rev}
            offset = int(a.get("offset", 0))  # type: ignore[call-overload]
            limit = int(a.get("limit", 1000))  # type: ignore[call-overload]
            page = found[offset:offset + limit]
            more = len(found) > offset + limit
            if op == "keys":
                return {"keys": page, "more": more}
            return {"items": [[k, self.data[k][0]] for k in page], "more": more}
        if op == "events":
            since = int(a["since_revision"])  # type: ignore[call-overload]
            events = [e for e in self.history if int(e["revision"]) > since]  # type: ignore[call-overload]
            return {"events": events, "next_revision": self.revision + 1, "compacted": False}
        if op == "status":
            return {"node": self.name, "revision": self.revision}
        if op == "members":
            return {"members": [{"member_id": "n1", "client_port": 1}]}
        return {"op": op, "args": a}


def kv_backend_main(endpoint: str, name: str, conn: Connection) -> None:
    """Process entry point: the fake backend (see module docstring)."""
    ctx: Context = zmq.Context()
    kv = FakeKv(name)
    seen: list[dict[str, object]] = []
    mode: dict[str, object] = {}
    waiting: tuple[int, float] | None = None  # (at least this many seen, until this deadline)
    try:
        links = [
            BackendLink(ctx, endpoint, Backend.READ, f"{name}-read", heartbeat_interval_s=0.05),
            BackendLink(ctx, endpoint, Backend.RAFT, f"{name}-raft", heartbeat_interval_s=0.05),
        ]
        poller = zmq.Poller()
        for link in links:
            link.register(poller)
        poller.register(conn.fileno(), zmq.POLLIN)
        conn.send("ready")
        while True:
            deadline = min([link.next_deadline() for link in links]
                           + ([waiting[1]] if waiting is not None else []))
            poller.poll(math.ceil(max(0.0, deadline - time.monotonic()) * 1000))
            for link in links:
                link.service_timers(time.monotonic())
                while (msg := link.recv()) is not None:
                    reply = _serve(kv, msg.payload, seen, mode)
                    if reply is not None:
                        link.reply(msg.token, reply)
            try:
                while conn.poll(0):
                    cmd = conn.recv()
                    if cmd == "stop" or not isinstance(cmd, tuple):
                        return
                    if cmd[0] == "requests":
                        waiting = (int(cmd[1]), time.monotonic() + float(cmd[2])) if len(cmd) == 3 else (0, 0.0)
                    elif cmd[0] == "mode":
                        mode.clear()
                        mode.update(cmd[1])
                        conn.send("ok")
                if waiting is not None and (len(seen) >= waiting[0] or time.monotonic() >= waiting[1]):
                    conn.send(list(seen))
                    waiting = None
            except (EOFError, OSError):
                return
    finally:
        for link in links:
            link.close()
        ctx.term()


def _take(mode: dict[str, object], name: str) -> bool:
    left = mode.get(name)
    if isinstance(left, int) and left > 0:
        mode[name] = left - 1
        return True
    return False


def _serve(kv: FakeKv, payload: bytes, seen: list[dict[str, object]], mode: dict[str, object]) -> bytes | None:
    try:
        req = decode_request(payload)
    except ClientError as exc:
        return reply_for_error(exc)
    if req.op == "status" and "probe" not in mode:
        # NB: a client's first write or strong read to a node asks it `status` for its
        # direct endpoint (concord.client.direct): answered aside, so that the modes and
        # the recorded requests are the test's own (mode probe=True: as any request).
        extra = mode.get("status_extra")
        return ok_reply(req.id, {**kv.apply(req), **(extra if isinstance(extra, dict) else {})})
    seen.append({"op": req.op, "id": req.id, **req.args,
                 **{k: v for k, v in (("client_id", req.client_id), ("seq", req.seq),
                                      ("token", req.token), ("ns", req.ns),
                                      ("timeout_ms", req.timeout_ms)) if v is not None}})
    redirect = mode.get("redirect")
    exempt = mode.get("redirect_except")
    if isinstance(redirect, str) and not (isinstance(exempt, list) and req.op in exempt):
        return error_reply(req.id, "not_leader", "not the leader", redirect)
    error = mode.get("error")
    if isinstance(error, list):
        return error_reply(req.id, str(error[0]), str(error[1]), error[2])
    if _take(mode, "not_leader"):
        return error_reply(req.id, "not_leader", "not the leader, leader unknown")
    if _take(mode, "no_leader"):
        return error_reply(req.id, "no_leader", "no leader elected")
    if _take(mode, "ignore"):
        return None
    try:
        result = kv.apply(req)
    except ClientError as exc:
        return reply_for_error(exc, req.id)
    extra = mode.get("status_extra")
    if req.op == "status" and isinstance(extra, dict):
        result = {**result, **extra}
    if req.op not in _READS and _take(mode, "drop_replies"):
        return None
    return ok_reply(req.id, result)


class FakeNode:
    """A front door process plus (optionally) a fake KV backend process."""

    def __init__(self, name: str, backend: bool = True) -> None:
        self.name = name
        options = FrontDoorOptions(
            client_endpoint="tcp://127.0.0.1:0", backend_endpoint=ipc_endpoint(), default_timeout_ms=2000
        )
        self.door = ChildProcess(serve_in_process, options)
        self.backend: ChildProcess | None = None
        try:
            ready = self.door.recv()
            assert isinstance(ready, tuple) and "ready" == ready[0], ready
            self.endpoint = str(ready[1])
            self.backend_endpoint = str(ready[2])
            if backend:
                self.backend = ChildProcess(kv_backend_main, self.backend_endpoint, name)
                assert "ready" == self.backend.recv()
        except BaseException:
            self.stop()
            raise

    def command(self, *cmd: object) -> object:
        assert self.backend is not None
        self.backend.conn.send(tuple(cmd))
        return self.backend.recv()

    def requests(self, at_least: int = 0, wait_s: float = 10.0) -> list[dict[str, object]]:
        """Every request seen so far; with `at_least`, waits until that many have arrived."""
        out = self.command("requests", at_least, wait_s) if at_least else self.command("requests")
        assert isinstance(out, list)
        return out

    def mode(self, **mode: object) -> None:
        assert "ok" == self.command("mode", mode)

    def stop(self) -> None:
        if self.backend is not None:
            self.backend.stop()
        self.door.stop()
