"""
The node core: every decision of the raft worker and the log writer that touches no
socket and no file, as pure functions from events to effects (ra's "effects as data").

- `concord.node.core.effects`: what the raft worker (and the simulator) carry out;
- `concord.node.core.node`: `NodeCore`, the raft worker's decisions;
- `concord.node.core.writer`: `WriterCore`, the log writer's decisions.

The consensus itself is `concord.node.driver.Driver` around `concord.raft`; the node core
decides what the rest of the node does about it. `concord.node.raft_worker` and
`concord.node.log_writer` are the loops that feed these events and carry the effects
out over sockets, files and shared memory; `concord.sim` drives the same code with the
same events (docs/architecture.md, "Node core"; docs/simulation.md).

Pure. No IO, no clock, no randomness (tests/node/test_core_purity.py).
"""
