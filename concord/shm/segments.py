"""
Segment lifetime: what the supervisor calls to create a node's store and to remove it.

The supervisor owns the segments (DESIGN.md §2): it calls `create_store` before starting
the raft worker and read workers, and `unlink_store` once they have all exited (also after
a failed start). The writer creates later generations itself, but always records the
highest generation number in the control header *before* creating it, so `unlink_store`
finds every segment even if the writer crashed half-way through a growth.

Never called by readers. Creating and unlinking here never involves Python's resource
tracker (see layout.py).
"""

from __future__ import annotations

import logging
import os

from concord.shm.layout import (
    CTL_HEADER_SIZE,
    CTL_MAGIC,
    DEFAULT_RING_CAPACITY,
    FORMAT_VERSION,
    GEN_HEADER_SIZE,
    S_ARENA_END,
    status_base,
    W_MAX_GEN,
    W_RING_CAP,
    W_VERSION,
    SegmentNames,
    create_segment,
    ctl_size,
    initial_gen_capacity,
    open_segment,
    unlink_segment,
    write_gen_header,
)

logger = logging.getLogger(__name__)

DEV_SHM = "/dev/shm"
DEFAULT_INITIAL_BYTES = 1 << 20


def create_store(
    names: SegmentNames,
    ring_capacity: int = DEFAULT_RING_CAPACITY,
    initial_bytes: int = DEFAULT_INITIAL_BYTES,
) -> None:
    """
    Create the control segment and generation 0 of an empty store.

    Args:
        names: the node's segment names.
        ring_capacity: change-ring slots, a power of two >= 16. A reader that falls more
            than this many changes behind rebuilds from a scan.
        initial_bytes: arena bytes of generation 0 (it grows on demand).

    Raises:
        FileExistsError: a segment of this node and token already exists.
        ValueError: ring_capacity is not a power of two >= 16.
    """
    if ring_capacity < 16 or ring_capacity & (ring_capacity - 1):
        raise ValueError(f"ring_capacity {ring_capacity} must be a power of two >= 16")
    ctl = create_segment(names.ctl, ctl_size(ring_capacity))
    try:
        gen = create_segment(names.gen(0), initial_gen_capacity(initial_bytes))
    except BaseException:
        ctl.close()
        unlink_segment(names.ctl)
        raise
    try:
        write_gen_header(gen, 0, 0, len(gen))
        words = memoryview(ctl).cast("Q")
        try:
            words[W_VERSION] = FORMAT_VERSION
            words[W_RING_CAP] = ring_capacity
            words[W_MAX_GEN] = 0
            # seq = 0: slot 0 is published; an empty store at generation 0.
            words[status_base(0) + S_ARENA_END] = GEN_HEADER_SIZE
        finally:
            words.release()
        # Magic last: a reader that sees it sees an initialized header.
        ctl[0:8] = CTL_MAGIC
    finally:
        gen.close()
        ctl.close()
    logger.info("shm store created base=%s ring_capacity=%d", names.base, ring_capacity)
    assert CTL_HEADER_SIZE % 8 == 0


def store_segments(names: SegmentNames) -> list[str]:
    """Names of this node's segments that exist now (control segment first)."""
    found: list[str] = []
    if os.path.isdir(DEV_SHM):
        found = sorted(n for n in os.listdir(DEV_SHM) if names.owns(n))
        if names.ctl in found:
            found.remove(names.ctl)
            found.insert(0, names.ctl)
    return found


def unlink_store(names: SegmentNames) -> list[str]:
    """
    Unlink every segment of the store: the control segment and generations 0..max_gen.

    Safe to call when some or all segments are already gone. Processes that still map a
    segment keep their mapping; the memory is freed when the last one unmaps.

    Returns:
        The names actually unlinked.
    """
    max_gen = 0
    try:
        ctl = open_segment(names.ctl)
    except FileNotFoundError:
        ctl = None
    if ctl is not None:
        try:
            words = memoryview(ctl).cast("Q")
            try:
                max_gen = int(words[W_MAX_GEN]) if len(ctl) >= CTL_HEADER_SIZE else 0
            finally:
                words.release()
        finally:
            ctl.close()
    removed = [n for n in (names.gen(g) for g in range(max_gen + 1)) if unlink_segment(n)]
    if unlink_segment(names.ctl):
        removed.append(names.ctl)
    # Belt and braces (Linux): any other segment of ours, e.g. generations left after
    # the control segment was lost before max_gen could be read.
    for name in store_segments(names):
        if unlink_segment(name):
            removed.append(name)
    logger.info("shm store unlinked base=%s segments=%d", names.base, len(removed))
    return removed


__all__ = ["create_store", "store_segments", "unlink_store"]
