"""
Randomized equivalence: after every applied entry, the read path over shared memory
answers exactly as the state machine does (seeded: CONCORD_SEED, default 1121; the seed
is printed).

Writes, deletes, TTL puts and touches, bulk puts and deletes, index creation and drops,
and expiry entries are applied to a real `KvStateMachine`; their changes are published
through `Publisher`; a reader checks a rotating set of reads. The ring is small (64
slots) and the writer compacts at random (at once, or incrementally: one step per entry
while the entries go on), so readers also rebuild from directories and scans along the
way, and the reader regularly stays away long enough to be overtaken.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from concord.kv.commands import encode_request
from concord.kv.config import KvConfig
from concord.kv.machine import KvStateMachine
from concord.shm.reader import Reader
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.view import ShmView

SEED = int(os.environ.get("CONCORD_SEED", "1121"))
STEPS = 1500


def _requests(rng: random.Random) -> Iterator[dict[str, object]]:
    def key() -> str:
        return f"{rng.choice('abc')}:{rng.randrange(40):02d}"

    def value() -> object:
        return rng.choice(
            [{"n": rng.randrange(10), "tag": rng.choice("xyz")}, rng.randrange(100), "s" * 300,
             None, [1, 2], {1: "int key"}]
        )

    while True:
        r = rng.random()
        if r < 0.35:
            yield {"op": "put", "key": key(), "value": value()}
        elif r < 0.45:
            yield {"op": "put", "key": key(), "value": value(), "ttl": rng.choice([0.002, 0.05])}
        elif r < 0.55:
            yield {"op": "delete", "key": key()}
        elif r < 0.62:
            yield {"op": "touch", "key": key(), "ttl": rng.choice([0.003, 1.0])}
        elif r < 0.72:
            keys = dict.fromkeys(key() for _ in range(rng.randrange(1, 6)))
            yield {"op": "put_many", "items": [[k, value()] for k in keys]}
        elif r < 0.78:
            yield {"op": "delete_many", "keys": list(dict.fromkeys(key() for _ in range(5)))}
        elif r < 0.81:
            yield {"op": "create_index", "name": rng.choice(["by_n", "by_tag"]),
                   "field": rng.choice(["n", "tag"])}
        elif r < 0.83:
            yield {"op": "drop_index", "name": rng.choice(["by_n", "by_tag"])}
        else:
            yield {"op": "expire"}


READS: list[tuple[str, dict[str, object]]] = [
    ("get_all", {"limit": 1000}),
    ("keys", {"prefix": "b:"}),
    ("query", {"where": ["ge", "n", 5]}),
    ("count", {"contains": "1"}),
    ("get_many", {"keys": [f"a:{i:02d}" for i in range(40)]}),
    ("list_indexes", {}),
    ("index_lookup", {"name": "by_n", "range": [3, None]}),
    ("index_lookup", {"name": "by_tag", "value": "x"}),
    ("get", {"key": "c:07", "meta": True}),
    ("get", {"key": "b:05"}),
    ("get_many", {"keys": ["c:01", "c:02", "a:03"]}),
    ("get_with_ttl", {"key": "a:03"}),
]


@pytest.mark.slow
def test_reader_answers_like_state_machine_when_random_writes_applied(
    store: SegmentNames,
) -> None:
    """Every read over shm equals the state machine's, at every step of a random run."""
    print(f"seed={SEED} steps={STEPS}")
    rng = random.Random(SEED)
    machine = KvStateMachine(KvConfig(compress_threshold_bytes=128))
    pub = Publisher.attach(store)
    view = ShmView.attach(store, mono_ns=lambda: 0)  # time is the entries' ts alone
    reader = Reader(view, machine.config)
    ts = 10_000
    try:
        for index, request in zip(range(1, STEPS + 1), _requests(rng)):
            ts += rng.choice([0, 1, 2, 5])
            if request["op"] == "expire":
                data = machine.expiry_command(ts) or b""
            else:
                data = encode_request(request)
            applied = machine.apply(index, ts, data)
            pub.publish(applied.changes, index, machine.revision, ts)
            away = (index // 100) % 4 == 3  # 100 entries unread: the 64-slot ring overtakes
            if pub.compacting:
                pub.compact_step(0.0)  # one chunk per entry, as the raft worker steps
            elif rng.random() < 0.03 and not away:
                if rng.random() < 0.5:
                    pub.compact()
                else:
                    pub.begin_compaction()
            if away:
                continue
            op, args = READS[index % len(READS)]
            assert machine.read(op, args, ts) == reader.serve(op, args), (index, request, op)
            assert machine.revision == view.status().revision
        for op, args in READS:
            assert machine.read(op, args, ts) == reader.serve(op, args), op
        print(f"rebuilds={view.rebuilds} directory_loads={view.directory_loads} "
              f"overflows={view.overflows} keys={len(view)}")
        assert view.rebuilds > 3 and view.directory_loads > 0 and view.overflows > 0
    finally:
        view.close()
        pub.close()
