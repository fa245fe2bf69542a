"""
Offline restore of a backup into the data dirs of a NEW cluster (etcdutl's snapshot
restore; docs/backup.md): `concord backup restore FILE --offline --config n1.toml ...`.

For each node config given, its data dir must be absent or empty; it receives one
snapshot file (concord.storage.snapshot, the node's own format) at the backup's index
and term whose membership is the configs' members (every one a voter) and whose state
is the backup's kv state with the member addresses of the NEW configs (the old
cluster's addresses are dropped) and a NEW cluster id (the restored cluster is another
cluster than the backup's source, as etcd's snapshot restore makes a new cluster id). Revisions stay as they were (the index is kept), so
the restored cluster's next revision is above every revision a watcher has seen.
Nodes started on these dirs recover from the snapshot as after a compaction, elect a
leader, and serve.

Run with every node of the new cluster stopped. Offline file code: no sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from concord.config import NodeConfig
from concord.errors import ConfigError
from concord.ids import NodeId
from concord.node.members import Address, NodeStateMachine, new_cluster_id
from concord.raft.messages import ConfState, Snapshot, SnapshotMeta
from concord.storage import fileutil
from concord.storage.recovery import snap_dir
from concord.storage.snapshot import encode_snapshot_file, snapshot_name

__all__ = ["restore_offline"]


def restore_offline(
    configs: Sequence[NodeConfig], machine: NodeStateMachine, index: int, term: int
) -> list[Path]:
    """
    Write the restored snapshot into every config's data dir.

    Args:
        configs: the new cluster's node configs (the same members in each).
        machine: the backup's state, rebuilt (its addresses and cluster id are replaced).
        index, term: the backup's snapshot position.

    Returns:
        The snapshot files written.

    Raises:
        ConfigError: configs disagree on the members, or a data dir is not empty.
    """
    if not configs:
        raise ConfigError("offline restore needs at least one node config (--config)")
    members = configs[0].members
    ids = sorted(m.id for m in members)
    for config in configs:
        if config.members != members:
            raise ConfigError(f"node {config.node.id}: its [[cluster.members]] differ from "
                              f"node {configs[0].node.id}'s; every node of the new cluster "
                              "must list the same members")
        data_dir = config.node.data_dir
        if data_dir.exists() and any(data_dir.iterdir()):
            raise ConfigError(f"node {config.node.id}: data dir {data_dir} is not empty; offline "
                              "restore only writes into new, empty data dirs")
    machine.addresses = {
        NodeId(m.id): Address(NodeId(m.id), m.host, m.client_port, m.peer_port, m.events_port)
        for m in members
    }
    machine.cluster_id = new_cluster_id()  # never the source's (docs/backup.md)
    body = machine.snapshot()
    state_hash = machine.state_hash()
    meta = SnapshotMeta(index, term, ConfState(voters=tuple(NodeId(i) for i in ids)))
    chunks = encode_snapshot_file(Snapshot(meta, body), state_hash)  # compressed once for all
    written = []
    for config in configs:
        folder = snap_dir(config.node.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / snapshot_name(index, term)
        fileutil.atomic_write(path, chunks, True)
        fileutil.fsync_dir(folder.parent)
        written.append(path)
    return written
