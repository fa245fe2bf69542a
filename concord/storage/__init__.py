"""
Durable storage of one node: the write-ahead log, snapshots and start-up recovery.

The log writer process (concord.node.log_writer) writes the WAL and the snapshots the
leader installs; the raft worker's forked snapshot child (concord.node.snapshot_fork)
writes the node's own snapshot files.

- `wal`: segments of checksummed records, group commit, rotation, removal
  (`WAL`, `WalOptions`, `GroupCommitter`); `walread`: replay and torn-tail repair
  (`read_wal`, `WalContents`);
- `snapshot`: atomic snapshot files, the newest two kept (`write_snapshot`, `read_snapshot`,
  `load_newest`, `prune`);
- `recovery`: `recover(data_dir) -> RecoveredState(snapshot, hard_state, entries)`;
- `replica`: `apply_entry` (the state machine's Protocol is concord.raft.statemachine);
- `codec`: the versioned msgpack encoding of the consensus types (entries, hard and conf
  state, snapshot metadata, peer messages), used by the WAL, snapshots and peer frames;
- `format`, `fileutil`: byte layouts and durable-file helpers.

Formats and the way forward after corruption: docs/formats/storage.md.
"""
