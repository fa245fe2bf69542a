"""
The raft worker's informational ops: `status`, `members`, `hash_kv` and `backup`
(docs/protocol.md, docs/node.md). Each reads the worker's state and builds a result;
none decides anything or changes the replicated state.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import TYPE_CHECKING

from concord.errors import NotFoundError
from concord.kv.machine import HashPoint, hash_of_point
from concord.net.wire import Request
from concord.raft.messages import ConfState, SnapshotMeta
from concord.shm.layout import FORMAT_VERSION

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["backup", "hash_kv", "members", "status"]


def members(worker: RaftWorker, conf: ConfState | None = None) -> list[dict[str, object]]:
    conf = conf or worker.driver.conf_state
    out: list[dict[str, object]] = []
    for role, ids in (("voter", conf.voters), ("learner", conf.learners)):
        for member in ids:
            address = worker.book.get(member)
            entry: dict[str, object] = {"id": member, "role": role,
                                        "client": None, "peer": None, "events": None}
            if address is not None:
                entry.update(address.as_map())
            if member == worker.node_id:
                entry["peer"] = worker.peer_endpoint
                entry["events"] = worker.events_endpoint
            out.append(entry)
    return out

def backup(worker: RaftWorker, request: Request) -> dict[str, object]:
    """
    The `backup` op's result (docs/protocol.md): without `index`, start a
    point-in-time image at the applied index (concord.node.backup) and answer
    `{index, term, state: "pending"}`; with `index`, `{state: "pending"}` while it is
    written, then `{state: "ready", index, term, size, offset, data}` chunk by chunk.
    """
    index = request.args.get("index")
    if not isinstance(index, int):
        d = worker.driver
        meta = worker.backups.start(SnapshotMeta(d.applied_index, d.applied_term, d.conf_state))
        return {"node": worker.node_id, "index": meta.index, "term": meta.term, "state": "pending"}
    offset = request.args.get("offset")
    got = worker.backups.read(index, offset if isinstance(offset, int) else 0)
    if got is None:
        return {"node": worker.node_id, "index": index, "state": "pending"}
    meta, size, chunk = got
    return {"node": worker.node_id, "index": meta.index, "term": meta.term, "state": "ready",
            "size": size, "offset": offset or 0, "data": chunk}

def _point_index(point: HashPoint) -> int:
    return point[0]


def hash_kv(worker: RaftWorker, request: Request) -> dict[str, object]:
    """
    The `hash_kv` op's result (docs/protocol.md): the kv state hash this node had
    right after applying log index `index` (default: its applied index now), with
    `hash: nil` while it has not applied that far yet.

    Raises:
        NotFoundError: `index` is older than the hashes this node remembers.
    """
    hashes = worker.machine.hashes
    applied = worker.driver.applied_index
    index = request.args.get("index")
    if not isinstance(index, int):
        index = applied
    result: dict[str, object] = {"node": worker.node_id, "applied": applied,
                                 "index": index, "hash": None}
    if index > applied:
        return result
    if index == applied:
        result["hash"] = worker.machine.kv.state_hash()
        return result
    position = bisect.bisect_left(hashes, index, key=_point_index)
    if position < len(hashes) and hashes[position][0] == index:
        result["hash"] = hash_of_point(hashes[position])
        return result
    oldest = hashes[0][0] if hashes else applied
    raise NotFoundError(f"node {worker.node_id} holds no state hash at index {index} "
                        f"(it remembers {oldest}..{applied})")

def status(worker: RaftWorker) -> dict[str, object]:
    """The `status` op's result (docs/node.md)."""
    d = worker.driver
    kv = worker.machine.kv
    leader = d.leader_id
    return {
        "node": worker.node_id,
        "cluster_id": worker.machine.state.cluster_id,
        "pid": os.getpid(),
        "role": d.role.name.lower(),
        "term": d.term,
        "leader": leader,
        "leader_client": worker.book.client_endpoint(leader),
        "direct": None if worker.direct is None else worker.direct.endpoint,
        "commit": d.commit,
        "applied": d.applied_index,
        "revision": kv.revision,
        "state_hash": kv.state_hash(),
        "data_hash": kv.data_hash(),
        "keys": len(kv),
        "db_bytes": _tree_bytes(worker.config.node.data_dir),
        "lease": d.lease_valid,
        "first_index": worker.storage.first_index(),
        "snapshot_index": worker.storage.snapshot().meta.index,
        "last_index": worker.storage.last_index(),
        "members": members(worker),
        "storage": {"ok": worker.disk.ok, "wal_error": worker.disk.wal_error,
                    "snapshot_error": worker.disk.snapshot_error},
        "auth": worker.auth.status(),
        "shm": {"version": FORMAT_VERSION, "base": worker.shm_names.base, "ctl": worker.shm_names.ctl,
                "node": worker.shm_names.node, "token": worker.shm_names.token},
    }


def _tree_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (WAL segments and snapshots: the `db_bytes` status field)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # removed while we looked (a pruned segment or snapshot)
    return total
