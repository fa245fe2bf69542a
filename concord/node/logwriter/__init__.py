"""
The log/snapshot writer, split by concern: ipc (the protocol), state (LogWriter), loop
(the process), client (the raft worker's side). concord.node.log_writer re-exports them
and documents the whole; the decisions are concord.node.core.writer.
"""
