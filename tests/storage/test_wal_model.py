"""Property test: WAL replay against a naive list model, across flushes, rotations and reopenings."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concord.raft.messages import Entry
from concord.raft.state import HardState
from concord.storage.recovery import recover
from tests.storage.util import make_entries, open_wal

# An op: ("append", back, count, term) appends `count` entries starting `back` entries
# before the end (0 = plain append); ("hs", commit); ("flush",); ("reopen",).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 8), st.integers(1, 5)),
        st.tuples(st.just("hs"), st.integers(0, 50)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@pytest.mark.slow
@settings(derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([120, 400, 1 << 20]))
def test_replay_equals_naive_model_when_random_ops_are_applied(program: list[tuple[object, ...]], segment_bytes: int) -> None:
    """Appends that truncate, hard states, rotations and restarts: recovery equals the list model."""
    data_dir = Path(tempfile.mkdtemp(prefix="concord-model-"))
    try:
        model: list[Entry] = []
        hs = HardState()
        durable: tuple[list[Entry], HardState] = ([], HardState())
        wal = open_wal(data_dir, segment_bytes=segment_bytes)
        for op in program:
            if op[0] == "append":
                _, back, count, term = op
                assert isinstance(back, int) and isinstance(count, int) and isinstance(term, int)
                start = max(1, len(model) + 1 - back)
                batch = make_entries(start, count, term=term)
                wal.append_entries(batch)
                model = model[: start - 1] + batch
            elif op[0] == "hs":
                hs = HardState(1, None, int(str(op[1])))
                wal.set_hard_state(hs)
            elif op[0] == "flush":
                wal.flush()
                durable = (list(model), hs)
            else:
                wal.flush()
                durable = (list(model), hs)
                wal.close()
                wal = open_wal(data_dir, segment_bytes=segment_bytes)
        wal.close()  # NB: unflushed records are simply lost, as in a crash
        state = recover(data_dir)
        assert durable == (state.entries, state.hard_state)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.slow
@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.data())
def test_recovery_returns_exactly_the_whole_records_before_a_cut_when_last_segment_is_cut_anywhere(
    data: st.DataObject,
) -> None:
    """Cutting the last segment at any byte keeps exactly the records that end before the cut."""
    data_dir = Path(tempfile.mkdtemp(prefix="concord-cut-"))
    try:
        wal = open_wal(data_dir)
        ends: list[tuple[int, list[Entry]]] = []
        log: list[Entry] = []
        for first in range(1, 40, 4):
            batch = make_entries(first, 4, size=data.draw(st.integers(0, 60), label="size"))
            wal.append_entries(batch)
            wal.flush()
            log = log + batch
            ends.append((wal.segments[-1].size, list(log)))
        wal.close()
        seg = wal.segments[-1].path
        original = seg.read_bytes()
        cut = data.draw(st.integers(0, len(original)), label="cut")
        seg.write_bytes(original[:cut])
        expected = [entries for end, entries in ends if end <= cut]
        assert (expected[-1] if expected else []) == recover(data_dir).entries
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
