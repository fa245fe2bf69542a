"""
Segment lifetime: what the supervisor calls to create a node's store and to remove it.

The supervisor owns the segments (docs/architecture.md): it calls `create_store` before starting
the raft worker and read workers, and `unlink_store` once they have all exited (also after
a failed start). The writer creates later generations itself, but always records the
highest generation number in the control header *before* creating it, so `unlink_store`
finds every segment even if the writer crashed half-way through a growth.

Never called by readers. Creating and unlinking here never involves Python's resource
tracker (see layout.py).

The owner lock (crash-safe reclaim). `create_store` takes an exclusive flock on the
control segment before its magic is written and keeps that descriptor open until
`unlink_store` in the same process; processes forked from the creator (the node's
children) inherit it, so the lock lasts while any process of the owner's tree lives,
however it ends (SIGKILL included). `reclaim_dead_stores`, run when any node starts on
the host, unlinks every store whose control segment it can lock: its owner tree is gone.
A control segment without its magic is being created (the creator locks it at once)
unless older than RECLAIM_GRACE_S; generations whose control segment is gone are leftovers
of an interrupted unlink, reclaimed once that old.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable

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
#: A control segment with no magic yet, or a generation without a control segment, is
#: reclaimed only when it was not modified for this long (it may be being created).
RECLAIM_GRACE_S = 30.0
_PREFIX = "concord-"
_CTL_SUFFIX = "-ctl"

#: control segment name -> the descriptor holding its owner lock (this process created it).
_owner_locks: dict[str, int] = {}


def _lock_owner(ctl: str) -> None:
    """Take the owner lock of a control segment just created by this process."""
    try:
        fd = os.open(os.path.join(DEV_SHM, ctl), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # no /dev/shm view of the segments (not Linux): no crash-safe reclaim
    # NB: blocking: a reclaim_dead_stores that locked it first lets go at once (no magic).
    fcntl.flock(fd, fcntl.LOCK_EX)
    _owner_locks[ctl] = fd


def _release_owner(ctl: str) -> None:
    fd = _owner_locks.pop(ctl, None)
    if fd is not None:
        os.close(fd)


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
        _lock_owner(names.ctl)
        gen = create_segment(names.gen(0), initial_gen_capacity(initial_bytes))
    except BaseException:
        ctl.close()
        unlink_segment(names.ctl)
        _release_owner(names.ctl)
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
    _release_owner(names.ctl)
    # Belt and braces (Linux): any other segment of ours, e.g. generations left after
    # the control segment was lost before max_gen could be read.
    for name in store_segments(names):
        if unlink_segment(name):
            removed.append(name)
    logger.info("shm store unlinked base=%s segments=%d", names.base, len(removed))
    return removed


def reclaim_dead_stores(keep: Callable[[str], bool] = lambda base: False) -> list[str]:
    """
    Unlink the stores on this host whose owner tree is gone (module docstring).

    Args:
        keep: base name (`concord-<node>-<token>`) -> True to spare a store whose lock is
            free (e.g. its owner may be a running node of a version that takes none).

    Returns:
        The base names of the stores reclaimed (wholly or only leftover generations).
    """
    try:
        names = os.listdir(DEV_SHM)
    except FileNotFoundError:
        return []
    reclaimed: list[str] = []
    ctls = {n for n in names if n.startswith(_PREFIX) and n.endswith(_CTL_SUFFIX)}
    for ctl in sorted(ctls):
        base = ctl[:-len(_CTL_SUFFIX)]
        if ctl not in _owner_locks and _reclaim_if_dead(ctl, base, keep):
            reclaimed.append(base)
    now = time.time()
    for name in sorted(names):
        base, sep, gen = name.rpartition("-g")
        if (name.startswith(_PREFIX) and sep and gen.isdigit()
                and base + _CTL_SUFFIX not in ctls and _idle_for(name, now) > RECLAIM_GRACE_S
                and not keep(base) and unlink_segment(name)):
            logger.warning("shm generation without control segment reclaimed name=%s", name)
            if base not in reclaimed:
                reclaimed.append(base)
    return reclaimed


def _reclaim_if_dead(ctl: str, base: str, keep: Callable[[str], bool]) -> bool:
    try:
        fd = os.open(os.path.join(DEV_SHM, ctl), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # gone meanwhile, or another user's
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # the owner's tree lives
        created = os.pread(fd, len(CTL_MAGIC), 0) == CTL_MAGIC
        if not created and _idle_for(ctl, time.time()) <= RECLAIM_GRACE_S:
            return False  # being created: its creator locks it next
        if keep(base):
            return False
        # NB: held until every segment is unlinked, so two reclaimers never race.
        removed = _unlink_base(base)
        logger.warning("shm store of a dead node reclaimed base=%s segments=%d", base,
                       len(removed))
        return True
    finally:
        os.close(fd)


def _idle_for(name: str, now: float) -> float:
    try:
        return now - os.stat(os.path.join(DEV_SHM, name)).st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink_base(base: str) -> list[str]:
    """Unlink every generation of `base`, then its control segment."""
    gens = []
    for name in os.listdir(DEV_SHM):
        stem, sep, gen = name.rpartition("-g")
        if stem == base and sep and gen.isdigit():
            gens.append(name)
    removed = [n for n in sorted(gens) if unlink_segment(n)]
    if unlink_segment(base + _CTL_SUFFIX):
        removed.append(base + _CTL_SUFFIX)
    return removed


__all__ = ["RECLAIM_GRACE_S", "create_store", "reclaim_dead_stores", "store_segments",
           "unlink_store"]
