"""
The cyclic garbage collector's settings of a long-running worker process.

CPython's collector runs a young-generation pass every 700 net container allocations and
a full pass whenever the objects that survived since the last one grew by a quarter. A
raft worker allocates a few dozen containers per entry (the Entry, the kv command and
record, the shm and change-stream changes, the messages), nearly all of them freed by
reference counting, and holds everything start-up built (modules, the recovered state
machine) for its whole life. Measured under 128-client puts (docs/benchmarks.md "The
raft worker's garbage collector"), the collector cost each raft worker about 3 us of
CPU per entry, most of it full passes over objects that never become garbage.

`settle_after_start` is called once, when start-up is over: `gc.freeze()` moves every
tracked object into the permanent generation (never scanned again; still freed by
reference counting), and the young generation's threshold is raised so that most
temporary containers die before a pass sees them. Cyclic garbage made later is still
collected, a little later. Cyclic garbage start-up left, and what start-up built and is
later dropped inside a reference cycle, is not (nothing the worker keeps forms cycles:
records, entries and changes are plain values). NB: no `gc.collect()` before the freeze:
with a million keys restored it would stall the loop's first turn for a full pass.
The start-up restore itself is frozen earlier, as soon as it is built
(`concord.bulk.long_lived_build`), so the log replay before the loop does not traverse it.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "GEN1_THRESHOLD", "GEN2_THRESHOLD", "settle_after_start"]

#: Net container allocations between young-generation passes (CPython's default: 700).
GEN0_THRESHOLD = 10_000
#: Young passes per middle-generation pass, middle passes per full pass (defaults: 10, 10).
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def settle_after_start() -> int:
    """
    Freeze what start-up built, raise the thresholds (see the module docstring).

    Returns:
        The number of objects frozen (`gc.get_freeze_count()`).
    """
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    return gc.get_freeze_count()
