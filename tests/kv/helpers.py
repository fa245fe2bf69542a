"""Helpers for driving a state machine in tests."""

from __future__ import annotations

from collections.abc import Mapping

from concord.kv import Applied, KvStateMachine, encode_command


class Driver:
    """Applies commands at increasing indexes with a settable entry timestamp."""

    def __init__(self, sm: KvStateMachine, ts_ms: int = 1_000) -> None:
        self.sm = sm
        self.ts_ms = ts_ms

    def do(
        self,
        op: str,
        args: Mapping[str, object],
        client_id: str | None = None,
        seq: int | None = None,
    ) -> Applied:
        """Encode and apply one write at the next index."""
        data = encode_command(op, args, client_id=client_id, seq=seq, config=self.sm.config)
        return self.sm.apply(self.sm.applied_index + 1, self.ts_ms, data)

    def raw(self, data: bytes) -> Applied:
        """Apply raw command bytes at the next index."""
        return self.sm.apply(self.sm.applied_index + 1, self.ts_ms, data)
