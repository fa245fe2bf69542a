"""
Multi-process stress: one writer at full speed, two readers verifying every read.

The writer publishes puts, deletes, TTL puts and their expiry, bulk puts and bulk deletes
of key groups, while the arena grows and is compacted incrementally (one compaction step
between publishes, as the raft worker does); its ring is small (1024 slots) so readers
also fall behind and rebuild. Every value names its own key, version and revision,
so a reader can tell a torn, misplaced or stale value from a good one. Readers check:

- value == [key, version, mod_revision, padding] of the record it came with;
- per key, mod_revision never goes back, and a key seen absent at revision R never comes
  back with a mod_revision <= R;
- a group (written and deleted only as a whole by one bulk op) is all present with one
  revision, or all absent;
- no returned record has expired at the leader time the reader is synced to;
- retries are rare, each has a cause (the writer published 1,023 times, grew twice or
  compacted during the reader's status read or rebuild), and no catch-up needs more than
  one (`max_retries`).

Duration: CONCORD_STRESS_SECONDS (default 5; the acceptance run is 30).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import msgpack
import pytest

from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store
from concord.shm.view import NodeView, ShmView

SECONDS = float(os.environ.get("CONCORD_STRESS_SECONDS", "5"))
N_KEYS = 3000
N_GROUPS = 40
GROUP_SIZE = 8
SEED = 20261121
# Each compaction makes every reader rebuild (from the new directory). The raft worker
# compacts at most every COMPACT_MIN_INTERVAL_S of concord.node.raft_worker (seconds); a
# quarter second here still compacts about 4 times a second.
COMPACT_MIN_INTERVAL_S = 0.25
COMPACT_FORCE_S = 0.5
#: Budget of one compaction step (Publisher.compact_step): at least one chunk of keys.
STEP_BUDGET_S = 0.0002


def _value(key: str, version: int, revision: int, pad: int) -> bytes:
    packed: bytes = msgpack.packb([key, version, revision, "p" * pad])
    return packed


#: What each process reports: (its kind, its counts, the errors it found).
Report = tuple[str, dict[str, int], list[str]]


def writer(
    node: str, token: str, seconds: float, seed: int, started: Event, go: Event, out: Queue[Report]
) -> None:
    rng = random.Random(seed)
    pub = Publisher.attach(SegmentNames(node, token))
    live: dict[str, KeyRecord] = {}
    expiring: dict[str, int] = {}
    rev = 0
    ts = 1_000
    counts = {"put": 0, "delete": 0, "ttl_put": 0, "expire": 0, "bulk_put": 0,
              "bulk_delete": 0, "compact": 0, "compact_steps": 0, "publishes": 0,
              "changes": 0}
    started.set()
    # The clock starts when both readers have mapped the store: under load a spawned
    # reader can take seconds to start, and a writer that ran out its time before then
    # would leave them nothing to check.
    if not go.wait(60):
        raise RuntimeError("the readers never reported ready")
    deadline = time.monotonic() + seconds
    last_compact = time.monotonic()

    def record(key: str, expires: int = 0) -> KeyRecord:
        old = live.get(key)
        version = 1 if old is None else old.version + 1
        create = rev if old is None else old.create_revision
        return KeyRecord(key, _value(key, version, rev, rng.randrange(0, 300)), 0, create, rev,
                         version, expires)

    while time.monotonic() < deadline:
        rev += 1
        ts += 1
        changes: list[Change] = []
        op = rng.random()
        if op < 0.45:
            key = f"k{rng.randrange(N_KEYS)}"
            r = record(key)
            changes.append(Change(ChangeType.PUT, Space.USER, key, r, rev, ts))
            counts["put"] += 1
        elif op < 0.60:
            key = f"k{rng.randrange(N_KEYS)}"
            if key in live:
                changes.append(Change(ChangeType.DELETE, Space.USER, key, None, rev, ts))
                counts["delete"] += 1
        elif op < 0.75:
            key = f"t{rng.randrange(N_KEYS // 3)}"
            r = record(key, ts + rng.randrange(1, 40))
            changes.append(Change(ChangeType.PUT, Space.USER, key, r, rev, ts))
            counts["ttl_put"] += 1
        elif op < 0.90:
            g = rng.randrange(N_GROUPS)
            for m in range(GROUP_SIZE):
                key = f"g{g}/{m}"
                changes.append(Change(ChangeType.PUT, Space.USER, key, record(key), rev, ts))
            counts["bulk_put"] += 1
        elif op < 0.97:
            g = rng.randrange(N_GROUPS)
            if f"g{g}/0" in live:
                for m in range(GROUP_SIZE):
                    key = f"g{g}/{m}"
                    changes.append(Change(ChangeType.DELETE, Space.USER, key, None, rev, ts))
                counts["bulk_delete"] += 1
        # Expiry, as the leader proposes it: keys due at ts.
        due = [k for k, e in expiring.items() if e <= ts]
        for key in due[:50]:
            changes.append(Change(ChangeType.EXPIRE, Space.USER, key, None, rev, ts))
            counts["expire"] += 1
        for ch in changes:
            if ch.record is None:
                live.pop(ch.key, None)
                expiring.pop(ch.key, None)
            else:
                live[ch.key] = ch.record
                if ch.record.expires_at_ms:
                    expiring[ch.key] = ch.record.expires_at_ms
                else:
                    expiring.pop(ch.key, None)
        pub.publish(changes, rev, rev, ts)
        counts["publishes"] += 1
        counts["changes"] += len(changes)
        # Incremental compaction, as the raft worker runs it: one step between publishes
        # (a tiny budget here, so that a compaction spans many publishes). A compaction
        # starts when dead records pass half the arena, at most every
        # COMPACT_MIN_INTERVAL_S (a shorter interval than the raft worker's), and is
        # forced every COMPACT_FORCE_S so short runs exercise it too.
        # The intervals run from the last switch (as in the raft worker).
        if pub.compacting:
            counts["compact_steps"] += 1
            if pub.compact_step(STEP_BUDGET_S):
                counts["compact"] += 1
                last_compact = time.monotonic()
            continue
        now = time.monotonic()
        if now - last_compact >= COMPACT_FORCE_S:
            pub.begin_compaction()
        elif now - last_compact >= COMPACT_MIN_INTERVAL_S:
            pub.maybe_begin_compaction(min_dead_ratio=0.5, min_used_bytes=1 << 20)
    stats = pub.stats()
    counts["generation"] = stats.generation
    pub.close()
    out.put(("writer", counts, []))


def reader(
    node: str, token: str, seed: int, ready: Event, stop: Event, out: Queue[Report],
    node_view: bool,
) -> None:
    rng = random.Random(seed)
    view_kind = NodeView if node_view else ShmView  # a node's compact index, or a client's
    view = view_kind.attach(SegmentNames(node, token), mono_ns=lambda: 0)  # entry time only
    ready.set()
    floor: dict[str, int] = {}  # key -> revision it must be above (absent) or at least (seen)
    errors: list[str] = []
    counts = {"reads": 0, "values_checked": 0, "absent": 0, "groups_checked": 0,
              "groups_present": 0}

    def absent(key: str) -> None:
        counts["absent"] += 1
        floor[key] = max(floor.get(key, 0), view.synced_status().revision + 1)

    def seen(key: str, revision: int) -> None:
        counts["values_checked"] += 1
        if revision < floor.get(key, 0):
            errors.append(f"{key} went back to revision {revision} < {floor[key]}")
        floor[key] = max(floor.get(key, 0), revision)

    def check_record(key: str, rec: KeyRecord | None) -> None:
        if rec is None:
            absent(key)
            return
        got = msgpack.unpackb(rec.value)
        if got[:3] != [key, rec.version, rec.mod_revision]:
            errors.append(f"value {got[:3]} does not match record of {key} {rec}")
        seen(key, rec.mod_revision)
        now = view.synced_status().leader_time_ms
        if rec.expires_at_ms and rec.expires_at_ms <= now:
            errors.append(f"{key} expired at {rec.expires_at_ms} served at {now}")

    def check_bytes(key: str, raw: bytes | None) -> None:
        if raw is None:
            absent(key)
            return
        got = msgpack.unpackb(raw)
        if got[0] != key:
            errors.append(f"value of {got[0]} returned for {key}")
        seen(key, got[2])

    while not stop.is_set() and len(errors) < 20:
        kind = rng.random()
        counts["reads"] += 1
        if kind < 0.4:
            key = f"k{rng.randrange(N_KEYS)}" if kind < 0.25 else f"t{rng.randrange(N_KEYS // 3)}"
            check_record(key, view.record(key))
        elif kind < 0.7:
            key = f"k{rng.randrange(N_KEYS)}" if kind < 0.6 else f"t{rng.randrange(N_KEYS // 3)}"
            check_bytes(key, view.get_encoded(key))
        else:
            g = rng.randrange(N_GROUPS)
            keys = [f"g{g}/{m}" for m in range(GROUP_SIZE)]
            raws = view.get_many_encoded(keys)
            counts["groups_checked"] += 1
            decoded = [None if r is None else msgpack.unpackb(r) for r in raws]
            present = [d for d in decoded if d is not None]
            if present and len(present) != GROUP_SIZE:
                errors.append(f"group g{g} half present: {[d is not None for d in decoded]}")
            elif present:
                counts["groups_present"] += 1
                revs = {d[2] for d in present}
                if len(revs) != 1:
                    errors.append(f"group g{g} mixes revisions {sorted(revs)}")
                if [d[0] for d in present] != keys:
                    errors.append(f"group g{g} values name other keys")
    counts.update(rebuilds=view.rebuilds, overflows=view.overflows, remaps=view.remaps,
                  retries=view.retries, max_retries=view.max_retries,
                  status_collisions=view.status_collisions,
                  generation_races=view.generation_races, lineage_races=view.lineage_races, settled_behind=view.settled_behind,
                  directory_loads=view.directory_loads,
                  applied_changes=view.applied_changes)
    view.close()
    out.put(("reader", counts, errors[:20]))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(SECONDS + 90)
def test_readers_see_no_torn_or_impossible_values_when_writer_runs_flat_out(
    names: SegmentNames,
) -> None:
    """
    Two reader processes verify every value while a writer publishes at full speed: a
    client's view (small values inline) and a node's (NodeView: an OffsetTable).
    """
    print(f"seed={SEED} seconds={SECONDS}")
    create_store(names, ring_capacity=1024, initial_bytes=64 << 10)
    ctx = multiprocessing.get_context("spawn")
    out: Queue[Report] = ctx.Queue()
    stop = ctx.Event()
    started = ctx.Event()
    go = ctx.Event()
    ready = [ctx.Event() for _ in (1, 2)]
    w = ctx.Process(target=writer, args=(names.node, names.token, SECONDS, SEED, started, go, out))
    readers = [
        ctx.Process(target=reader, args=(names.node, names.token, SEED + i, ready[i - 1], stop, out,
                                         i == 2))
        for i in (1, 2)
    ]
    procs = [w, *readers]
    try:
        w.start()
        assert started.wait(60)
        for r in readers:
            r.start()
        assert all(event.wait(60) for event in ready)
        go.set()
        results = [out.get(timeout=SECONDS + 60)]
        stop.set()
        results += [out.get(timeout=60) for _ in readers]
        for p in procs:
            p.join(30)
            assert 0 == p.exitcode
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        out.close()
        out.join_thread()
    writer_counts = next(counts for kind, counts, _ in results if kind == "writer")
    reader_results = [(counts, errors) for kind, counts, errors in results if kind == "reader"]
    print(f"writer {writer_counts}")
    for counts, _ in reader_results:
        print(f"reader {counts}")
    assert [[], []] == [errors for _, errors in reader_results]
    for counts, _ in reader_results:
        assert counts["values_checked"] > 0 and counts["groups_present"] > 0
        # A reader never waits for the writer: it retries only when the writer published
        # 1,023 times (a status slot came round), grew twice or compacted during its
        # status read or rebuild, i.e. when the OS stalled it there; never twice in a row
        # (a broken protocol or a livelock would).
        reasons = counts["status_collisions"] + counts["generation_races"] + counts["lineage_races"]
        assert counts["retries"] == reasons
        assert counts["max_retries"] <= 1, counts
    assert writer_counts["compact"] > 0 and writer_counts["generation"] > 2
    # Each compaction ran in many steps, with publishes in between.
    assert writer_counts["compact_steps"] > 5 * writer_counts["compact"]
