"""
The raft worker's request handling: client ops that reach the raft worker through the
front door (writes, strong and leader reads, membership, leader transfer, status and
the other informational ops), and the encoding of the driver's replies.

A write is proposed through the driver, a membership request decided by the node core
(concord.node.core.NodeCore) and its effects carried out by the worker; the reply
leaves once the driver answers, after the round's changes are published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from concord.auth.state import Principal
from concord.auth.tenants import TENANT_MARK, key_prefix
from concord.errors import ClientError, InvalidRequestError
from concord.ids import NODE_ID_RULE, NodeId, is_node_id
from concord.kv import CLIENT_WRITE_OPS
from concord.kv.reads import serve_request
from concord.kv.scope import scoped
from concord.net.admin import fault_reply
from concord.net.backend import BackendRequest
from concord.net.wire import Request, decode_validated, error_reply, ok_reply
from concord.node import worker_ops
from concord.node.driver import Consistency, Reply, ReplyStatus
from concord.node.auth import AUTH_READ_OPS, AUTH_WRITE_OPS
from concord.node.members import Address
from concord.raft.messages import ConfState
from concord.raft.state import Role

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["LEADER_ONLY", "MAX_DRAIN_REQUESTS", "Pending", "drain_requests", "encode_reply", "handle",
           "not_leader", "propose", "reply_error", "serve_decoded", "take_batch"]


#: The ops only the leader serves: on a follower they are forwarded to the leader
#: (concord.node.forward) or answered `not_leader` — before the token is checked, since
#: the leader checks it (a follower may not have applied a token created moments ago).
#: Per-node ops (status, members, hash_kv, backup, fault) and reads are never forwarded.
LEADER_ONLY: frozenset[str] = frozenset(
    CLIENT_WRITE_OPS | AUTH_WRITE_OPS.keys()
    | {"add_member", "remove_member", "promote_member", "transfer_leader"})


@dataclass(slots=True)
class Pending:
    """A client request waiting for the driver's reply."""

    token: int
    request: Request
    principal: Principal | None = None
    new_token: str | None = None  # a created token's secret, shown once in the reply


def _storage_unavailable(worker: RaftWorker, request: Request) -> bytes | None:
    """The refusal of a write while this node's WAL fails, None while it works."""
    if not worker.core.refuses_writes:
        return None
    return error_reply(request.id, "storage_unavailable",
                       f"node {worker.node_id} cannot persist writes ({worker.disk.wal_error}); "
                       "nothing was applied; retry (another node may lead)")

#: Requests taken from the front door per call of `drain_requests` (whole messages: a
#: REQUESTS message is never split across calls), so peers and the writer are not starved.
MAX_DRAIN_REQUESTS = 1000


def drain_requests(worker: RaftWorker) -> None:
    """Take the front door's waiting requests, one message (a batch) at a time."""
    taken = 0
    while taken < MAX_DRAIN_REQUESTS:
        batch = worker.link.recv_batch()
        if not batch:
            return
        taken += len(batch)
        take_batch(worker, batch)


def take_batch(worker: RaftWorker, batch: Sequence[BackendRequest]) -> None:
    """
    Take the requests of one front-door message, in order, into the driver (proposals,
    reads) or the forwarder; those answered at once (errors, informational ops) get
    their replies in one message. The round's Ready (process_ready) then covers them all.
    """
    replies: list[tuple[int, bytes]] = []
    decoded: list[tuple[int, bytes, Request]] = []
    for req in batch:
        if req.barrier:  # the door's read barrier (concord.node.worker_barriers)
            worker.barriers.take(worker, req.token)
            continue
        try:
            decoded.append((req.token, req.payload, decode_validated(req.payload)))  # validated
        except InvalidRequestError as exc:
            replies.append((req.token, error_reply(exc.request_id, exc.code, exc.message)))
    serve_decoded(worker, decoded, replies)
    if replies:
        worker.link.reply_many(replies)


def serve_decoded(worker: RaftWorker, decoded: list[tuple[int, bytes, Request]],
                  replies: list[tuple[int, bytes]]) -> None:
    """
    Serve the (token, payload, request) of one message of the front door or one drain of
    the direct endpoint (concord.node.direct): forwarded, proposed together, or answered
    at once (appended to `replies`).
    """
    proposals: list[tuple[int, bytes]] = []
    # Leader-only requests on a follower are relayed to the leader (concord.node.forward).
    for token, _, request in worker.forward.take_many(decoded):
        reply = _handle(worker, token, request, proposals)
        if reply is not None:
            replies.append((token, reply))
    propose(worker, proposals)


def propose(worker: RaftWorker, proposals: list[tuple[int, bytes]]) -> None:
    """
    Propose the data writes of a batch, (request id, command) in the order they came, in
    one step (`Driver.submit_writes`: one check, one log append); a refusal answers each.
    """
    if not proposals:
        return
    first = worker.driver.submit_writes(proposals)
    tracing = worker.tracing
    if tracing is not None and first is not None:
        for index, (rid, _) in enumerate(proposals, first):
            tracing.proposed(rid, index)


def _hint(worker: RaftWorker) -> str | None:
    leader = worker.driver.leader_id
    if leader is None or leader == worker.node_id:
        return None
    return worker.book.client_endpoint(leader)

def not_leader(worker: RaftWorker, request: Request) -> bytes:
    return error_reply(request.id, *_not_leader_error(worker))

def _not_leader_error(worker: RaftWorker) -> tuple[str, str, str | None]:
    leader = worker.driver.leader_id
    if leader is None or leader == worker.node_id:
        return "no_leader", "no leader is known; retry shortly", None
    return ("not_leader", f"node {worker.node_id} is not the leader; the leader is {leader}",
            _hint(worker))

def handle(worker: RaftWorker, token: int, request: Request,
           proposals: list[tuple[int, bytes]] | None = None) -> bytes | None:
    """
    Serve one decoded request: its reply now, or None (it comes later, by `token`).
    Given `proposals`, a data write is added to them (the caller proposes them: `propose`)
    instead of proposed at once.
    """
    return _handle(worker, token, request, proposals)

def _handle(worker: RaftWorker, token: int, request: Request,
            proposals: list[tuple[int, bytes]] | None = None) -> bytes | None:
    op = request.op
    if op in LEADER_ONLY and worker.driver.role is not Role.LEADER:
        return not_leader(worker, request)  # the one leader check of the handlers below
    try:
        principal = worker.auth.admit(request)
        if op in CLIENT_WRITE_OPS:
            return _write(worker, token, request, principal, proposals)
        if op in AUTH_WRITE_OPS:
            return _auth_write(worker, token, request)
        if op in AUTH_READ_OPS:
            return ok_reply(request.id, worker.auth.read_reply(request, principal))
        if op == "status":
            return ok_reply(request.id, worker_ops.status(worker))
        if op == "members":
            return ok_reply(request.id, {"members": worker_ops.members(worker)})
        if op == "hash_kv":
            return ok_reply(request.id, worker_ops.hash_kv(worker, request))
        if op == "backup":
            return ok_reply(request.id, worker_ops.backup(worker, request))
        if op == "fault":
            return fault_reply(worker.transport, request)
        if op in ("add_member", "remove_member", "promote_member"):
            return _membership(worker, token, request)
        if op == "transfer_leader":
            return _transfer(worker, request)
        if op == "events":
            if principal is None or principal.is_cluster_admin:
                return worker.events.handle(request)
            if principal.tenant is not None:
                return worker.events.handle(request, scope=key_prefix(principal.tenant))
            return worker.events.handle(request, hide=TENANT_MARK)
        return _read(worker, token, request, principal)
    except ClientError as exc:
        return error_reply(request.id, exc.code, exc.message)

def _write(worker: RaftWorker, token: int, request: Request, principal: Principal | None,
           proposals: list[tuple[int, bytes]] | None) -> bytes | None:
    refused = _storage_unavailable(worker, request)
    if refused is not None:
        return refused
    command = worker.auth.write_command(request, principal)
    rid = next(worker.ids)
    worker.pending[rid] = Pending(token, request, principal)
    if worker.tracing is not None:
        # NB: begun first: a refused proposal is answered inside submit_writes.
        worker.tracing.begin_request(rid, request.op, request.traceparent)
    if proposals is not None:
        proposals.append((rid, command))  # proposed with the batch's others
    else:
        propose(worker, [(rid, command)])
    return None

def _auth_write(worker: RaftWorker, token: int, request: Request) -> bytes | None:
    refused = _storage_unavailable(worker, request)
    if refused is not None:
        return refused
    proposal = worker.auth.auth_command(request)
    rid = next(worker.ids)
    worker.pending[rid] = Pending(token, request, None, proposal.token)
    # Prompt commit news: the other members admit requests by the auth tables this
    # changes, so they must not learn it a heartbeat later (docs/architecture.md).
    worker.driver.submit_write(rid, proposal.command, prompt_commit=True)
    return None

def _read(worker: RaftWorker, token: int, request: Request,
          principal: Principal | None) -> bytes | None:
    consistency = Consistency(request.consistency)
    rid = next(worker.ids)
    worker.pending[rid] = Pending(token, request, principal)
    if worker.tracing is not None:
        worker.tracing.begin_request(rid, request.op, request.traceparent)
    worker.driver.submit_read(rid, str(request.args.get("key", "")), consistency)
    return None

def _membership(worker: RaftWorker, token: int, request: Request) -> bytes | None:
    refused = _storage_unavailable(worker, request)
    if refused is not None:
        return refused
    args = request.args
    member = NodeId(str(args["member_id"]))
    if not is_node_id(member):
        raise InvalidRequestError(f"member_id must be {NODE_ID_RULE}, got {member!r}")
    conf = worker.driver.conf_state
    rid = next(worker.ids)
    if request.op == "add_member":
        address = Address(
            member, str(args["host"]), int(str(args["client_port"])),
            int(str(args["peer_port"])), int(str(args["events_port"])),
        )
        if address.peer is None:
            raise InvalidRequestError("add_member needs a non-zero peer_port")
        worker.book.set(address)
        learner = args.get("learner")
        effects = worker.core.add_member(worker.view(), member,
                                       learner if isinstance(learner, bool) else None, rid)
    elif request.op == "remove_member":
        effects = worker.core.remove_member(conf, member, rid)
    else:
        effects = worker.core.promote_member(conf, member, rid)
    worker.pending[rid] = Pending(token, request)
    worker.carry_out(effects)
    return None

def _transfer(worker: RaftWorker, request: Request) -> bytes:
    target = request.args.get("member_id")
    voters = [v for v in worker.driver.conf_state.voters if v != worker.node_id]
    if target is None:
        target = worker.best_other_voter()
        if target is None:
            raise InvalidRequestError("no other voter to transfer leadership to")
    if target not in voters:
        raise InvalidRequestError(f"{target} is not another voter")
    worker.driver.transfer_leader(NodeId(str(target)))
    worker.log.info("leadership transfer requested to=%s", target)
    return ok_reply(request.id, {"transferring_to": target})

def _read_reply(worker: RaftWorker, request: Request) -> bytes:
    """
    A read whose index is applied here. Its token is admitted again, against auth
    tables at least as new as the read index: one revoked (or a role narrowed) before
    the read's index is refused, though it was valid when the request arrived.
    """
    rid = request.id
    try:
        principal = worker.auth.admit(request)
    except ClientError as exc:
        return error_reply(rid, exc.code, exc.message)
    args = {k: v for k, v in request.args.items() if k != "consistency"}
    body = {"op": request.op, **args}
    # Cluster time, not this host's wall clock (shm layout.py, "Cluster time").
    kv = worker.machine.kv
    if request.op == "lease_list":  # leases live in the raft worker's machine only
        if principal is not None and principal.tenant is not None:
            return error_reply(rid, "forbidden", "tenant tokens cannot use leases")
        return ok_reply(rid, {"leases": kv.leases(worker.publisher.cluster_now_ms())})
    source = scoped(principal, kv)
    result = serve_request(source, body, kv.read_time(worker.publisher.cluster_now_ms()),
                           kv.config)
    if "error" in result:
        return error_reply(rid, str(result["error"]), str(result.get("message", "")))
    return ok_reply(rid, result)

def encode_reply(worker: RaftWorker, pending: Pending, reply: Reply) -> bytes:
    request = pending.request
    rid = request.id
    status = reply.status
    if status is ReplyStatus.OK:
        if request.op in CLIENT_WRITE_OPS or request.op in AUTH_WRITE_OPS:
            result = reply.result
            if isinstance(result, dict):
                if "error" in result:
                    return error_reply(rid, str(result["error"]),
                                       str(result.get("message", "")))
                if pending.new_token is not None:
                    result = {**result, "token": pending.new_token}
                return ok_reply(rid, result)
            return ok_reply(rid, {})
        if isinstance(reply.result, ConfState):
            return ok_reply(rid, {"members": worker_ops.members(worker, reply.result)})
        return _read_reply(worker, request)
    return error_reply(rid, *reply_error(worker, status))

def reply_error(worker: RaftWorker, status: ReplyStatus) -> tuple[str, str, str | None]:
    """The (code, message, leader hint) of a driver reply that is not OK."""
    if status is ReplyStatus.NOT_LEADER:
        return _not_leader_error(worker)
    if status is ReplyStatus.DROPPED:
        return ("not_leader", "the proposal was dropped (leadership changed); nothing was applied",
                _hint(worker))
    if status is ReplyStatus.TIMEOUT:
        return "timeout", "the read could not be confirmed in time", None
    return "timeout", "leadership changed: the outcome is unknown", _hint(worker)
