"""Helpers for driving a state machine in tests."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import HealthCheck, settings

from concord.kv import Applied, KvStateMachine, encode_command

# Hypothesis settings of the kv tests, applied per test (not loaded globally, so other
# packages' profiles are untouched). CI (env CI set) runs derandomized: the same examples
# every run. KV_HYPOTHESIS_PROFILE=thorough runs 2000 examples per test (use --timeout).
settings.register_profile(
    "kv-ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("kv-dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "kv-thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
KV_SETTINGS = settings.get_profile(
    "kv-" + os.environ.get("KV_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


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
        min_seq: int | None = None,
    ) -> Applied:
        """Encode and apply one write at the next index."""
        data = encode_command(op, args, client_id=client_id, seq=seq, min_seq=min_seq,
                              config=self.sm.config)
        return self.sm.apply(self.sm.applied_index + 1, self.ts_ms, data)

    def raw(self, data: bytes) -> Applied:
        """Apply raw command bytes at the next index."""
        return self.sm.apply(self.sm.applied_index + 1, self.ts_ms, data)
