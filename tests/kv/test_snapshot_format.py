"""The kv snapshot's body (docs/formats/kv.md "Snapshot format"): version 3's columnar
chunks, and version 2's rows, which must still restore."""

from __future__ import annotations

import struct
from array import array

import msgpack
import pytest

from concord.errors import CorruptionError
from concord.kv import KvStateMachine, encode_command
from concord.kv import snapshot as kv_snapshot
from concord.kv.record import RecordFlags

from .helpers import Driver

_HEADER = struct.Struct("<4sBQ")


def _mixed_state() -> Driver:
    """
    A state whose number columns need every width: small revisions (1 byte), a version
    above 127 (2 bytes), expiry times in ms (8 bytes), a compressed value (flags 1).
    """
    d = Driver(KvStateMachine(), ts_ms=1_765_000_000_000)
    for i in range(10):
        d.do("put", {"key": f"k{i:02}", "value": i})
    for _ in range(130):
        d.do("put", {"key": "k03", "value": "again"})
    d.do("put", {"key": "k05", "value": "x", "ttl": 30})
    d.do("put", {"key": "k07", "value": "z" * 5000})
    d.do("create_index", {"name": "byv", "field": "v"})
    return d


def _v2_snapshot(sm: KvStateMachine) -> bytes:
    """`sm`'s snapshot as a version-2 writer encoded it: one row per user record."""
    body = msgpack.unpackb(sm.snapshot()[_HEADER.size:], raw=False, strict_map_key=False)
    rows = []
    for chunk in body[3]:
        keys, values, numbers = chunk
        columns = [array({1: "b", 2: "h", 4: "i", 8: "q"}[len(column) // len(keys)],
                         column).tolist() for column in numbers]
        rows += [list(row) for row in zip(keys, values, *columns)]
    body[3] = rows
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(b"CKVS", 2, sm.state_hash()) + packed


def test_chunked_snapshot_restores_every_record_when_it_spans_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records cut into several chunks (the last one short) restore field for field."""
    monkeypatch.setattr(kv_snapshot, "CHUNK_RECORDS", 3)
    d = _mixed_state()
    data = d.sm.snapshot()
    assert 3 == data[4]
    body = msgpack.unpackb(data[_HEADER.size:], raw=False, strict_map_key=False)
    assert [3, 3, 3, 1] == [len(chunk[0]) for chunk in body[3]]
    assert {1, 2, 8} <= {len(column) // len(chunk[0]) for chunk in body[3] for column in chunk[2]}
    other = KvStateMachine()
    other.restore(data)
    assert list(d.sm.records()) == list(other.records())
    assert d.sm.state_hash() == other.state_hash()
    assert data == other.snapshot()
    restored = {record.key: record for record in other.records()}
    assert RecordFlags.COMPRESSED == restored["k07"].flags
    assert 131 == restored["k03"].version
    assert d.sm.read("index_lookup", {"name": "byv", "value": 1}, 0) == other.read(
        "index_lookup", {"name": "byv", "value": 1}, 0)


def test_format_2_snapshot_restores_when_written_by_the_previous_release() -> None:
    """A version-2 snapshot (one row per user record) restores to the same state."""
    d = _mixed_state()
    old = _v2_snapshot(d.sm)
    assert 2 == old[4]
    other = KvStateMachine()
    other.restore(old)
    assert list(d.sm.records()) == list(other.records())
    assert d.sm.state_hash() == other.state_hash()
    data = encode_command("put", {"key": "k05", "value": "y"})
    assert d.sm.apply(500, 9_000, data).result == other.apply(500, 9_000, data).result
    assert d.sm.snapshot() == other.snapshot()


def _v3_with_chunks(*chunks: object) -> bytes:
    body = [1, 1, 1_000, list(chunks), [], [], []]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(b"CKVS", 3, 0) + packed


_ONES = [b"\x01"] * 5  # five number columns of one 1-byte integer


@pytest.mark.parametrize("chunk, problem", [
    (["a", b"v", _ONES], r"\[keys, values, numbers\]"),
    ([["a"], [b"v"]], "list of 3"),
    ([["a"], b"v", _ONES], r"\[keys, values, numbers\]"),
    ([["a", "b"], [b"v"], _ONES], "2 keys has 1 values"),
    ([["a"], [b"v"], _ONES[:4]], "4 number columns"),
    ([[], [], _ONES], "0 keys"),
    ([[b"a"], [b"v"], _ONES], "key must be str"),
    ([["a"], ["v"], _ONES], "value bin"),
    ([["a", "b"], [b"v", b"w"], [b"\x01\x02\x03"] * 5], "3 bytes for 2 records"),
    ([["a"], [b"v"], [b"\x00" * 3] * 5], "3 bytes for 1 records"),
    ([["a"], [b"v"], [1] * 5], "must be bin"),
])
def test_malformed_chunk_raises_corruption_and_leaves_the_state_empty(
        chunk: object, problem: str) -> None:
    """Every shape a chunk must have is checked; the machine is left empty, not half-built."""
    sm = KvStateMachine()
    sm.apply(1, 1_000, encode_command("put", {"key": "kept", "value": 1}))
    with pytest.raises(CorruptionError, match=problem):
        sm.restore(_v3_with_chunks(chunk))
    assert [] == list(sm.records()) and 0 == sm.applied_index


@pytest.mark.parametrize("version", [2, 3])
def test_user_records_are_counted_as_records_not_chunks(
        version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """count_user_records (the backup summary's `keys`) counts every user record of a body,
    across version 3's chunks, and a version-2 body's rows."""
    monkeypatch.setattr(kv_snapshot, "CHUNK_RECORDS", 3)
    d = _mixed_state()
    data = d.sm.snapshot() if version == 3 else _v2_snapshot(d.sm)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data[_HEADER.size:])
    unpacker.read_array_header()
    for _ in range(3):  # applied index, revision, cluster time
        unpacker.skip()
    assert 10 == kv_snapshot.count_user_records(unpacker, version)
