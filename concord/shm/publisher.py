"""
The single writer of the shared-memory store (used by the raft worker only).

`publish()` appends one immutable record per PUT/TOUCH, puts one ring slot per change,
then publishes the new status (applied index, revision, ring head, arena end, ...) in
one seqlock write, and only then marks superseded records dead. Readers therefore never
see a half-applied batch: everything a batch wrote becomes reachable through a single
header update. Growth copies the arena into a larger generation at the same offsets;
compaction copies live records only into a new lineage, in bounded steps between
publishes (`begin_compaction` / `compact_step`, see concord/shm/compactor.py). Both
switch readers over through the same header update, and the writer then unlinks the old
generation (readers that still map it keep a valid mapping).

Never reads the clock: leader time comes from the applied entries. Never unlinks the
control segment (the supervisor owns it).
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from concord.bulk import gc_paused
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.raft.state import Role
from concord.shm.arena import Arena
from concord.shm.bulkreset import ResetImage, check_sizes
from concord.shm.compactor import Compactor, Releaser
from concord.shm.layout import (
    CTL_MAGIC,
    FORMAT_VERSION,
    GEN_HEADER_SIZE,
    PAGE,
    S_APPLIED,
    S_ARENA_END,
    S_LEADER_LEN,
    S_CLOCK_ORIGIN,
    S_LEADER_TIME,
    S_LINEAGE,
    S_LIVE_GEN,
    S_PREV_HEAD,
    S_REVISION,
    S_RING_HEAD,
    S_ROLE,
    S_TERM,
    status_base,
    STATUS_WORDS,
    W_MAX_GEN,
    W_RING_CAP,
    W_SEQ,
    W_LEASE_UNTIL_NS,
    W_VERSION,
    W_WRITER_EPOCH,
    SegmentNames,
    create_segment,
    leader_words,
    open_segment,
    unlink_segment,
    set_gen_directory,
    write_gen_header,
    write_status_words,
)

logger = logging.getLogger(__name__)

_PUTS = (ChangeType.PUT, ChangeType.TOUCH)


@dataclass(slots=True)
class _ResetJob:
    """A reset in steps: its records, its image, its generation once created, its point."""

    spaces: list[tuple[int, list[KeyRecord]]]
    image: ResetImage
    point: tuple[int, int, int]  # applied index, revision, leader time (ms)
    gen: tuple[int, mmap.mmap] | None = None


@dataclass(frozen=True, slots=True)
class ArenaStats:
    """Writer-side accounting of the live generation."""

    generation: int
    lineage_gen: int
    capacity_bytes: int
    used_bytes: int
    live_bytes: int
    live_records: int
    directory_bytes: int


class Publisher(Arena):
    """
    The only writer of a node's store. Not thread-safe; one per node at a time.

    Use `Publisher.attach(names)` after the supervisor ran `create_store(names)`.
    """

    def __init__(
        self,
        names: SegmentNames,
        ctl: mmap.mmap,
        growth_factor: float,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._names = names
        self._mono_ns = mono_ns
        self._ctl = ctl
        self._words = memoryview(ctl).cast("Q")
        if bytes(ctl[0:8]) != CTL_MAGIC or self._words[W_VERSION] != FORMAT_VERSION:
            raise ValueError(
                f"segment {names.ctl} is not a concord store version {FORMAT_VERSION}"
            )
        self._growth = max(growth_factor, 1.1)
        self._ring_cap = int(self._words[W_RING_CAP])
        self._ring_mask = self._ring_cap - 1
        seq = int(self._words[W_SEQ])
        base = status_base(seq)
        # The writer's copy of the published status slot (it is the only writer).
        self._status: list[int] = self._words[base : base + STATUS_WORDS].tolist()
        self._head = self._status[S_RING_HEAD]
        self._gen = self._status[S_LIVE_GEN]
        self._lineage = self._status[S_LINEAGE]
        self._mm = open_segment(names.gen(self._gen), writable=True)
        self._mv = memoryview(self._mm)
        # NB: the segment's size, not the header's capacity: a writer that died between
        # growing the segment and updating the header left it larger.
        self._cap = len(self._mm)
        self._end = self._status[S_ARENA_END]
        # (space, key) -> offset of the key's live record, one dict per space.
        self._offsets: list[dict[str, int]] = [{} for _ in Space]
        self._live_bytes = 0
        self._dir_bytes = 0
        self._retired: list[tuple[str, mmap.mmap, memoryview]] = []
        self._compaction: Compactor | None = None
        self._reset_job: _ResetJob | None = None
        self._releaser = Releaser()
        #: Diagnostics of the last finished compaction: steps, longest step (s), total (s).
        self.last_compaction: tuple[int, float, float] | None = None
        self._recover()
        # A predecessor that died between creating a generation and publishing it, or
        # between publishing one and unlinking the one before, left segments nobody can
        # reach any more (readers that still map one keep their mapping).
        for gen in range(int(self._words[W_MAX_GEN]) + 1):
            if gen != self._gen and unlink_segment(names.gen(gen)):
                logger.warning("shm unlinked orphan generation gen=%d", gen)
        self._words[W_WRITER_EPOCH] += 1

    @classmethod
    def attach(
        cls,
        names: SegmentNames,
        growth_factor: float = 1.5,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> Publisher:
        """
        Attach as the writer to a store created by `segments.create_store`.

        `mono_ns` is this host's CLOCK_MONOTONIC (the clock of `cluster_now_ms` and of
        the published `clock_origin_ns`); tests inject a fake one.

        A restarted writer finds the state its predecessor published: it rebuilds its
        key -> offset map from a scan and finishes the predecessor's pending dead marks.
        Anything the predecessor wrote but never published is ignored (overwritten).

        Raises:
            FileNotFoundError: the store does not exist.
            ValueError: the control segment is not a concord store of this version.
        """
        ctl = open_segment(names.ctl, writable=True)
        try:
            return cls(names, ctl, growth_factor, mono_ns)
        except BaseException:
            ctl.close()
            raise

    # -- status -------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._status[S_APPLIED]

    @property
    def ring_head(self) -> int:
        return self._head

    def cluster_now_ms(self) -> int:
        """
        Cluster time now by the published status: the time the raft worker's own reads
        evaluate TTLs at, the same function readers compute (ShmView.now_ms; the rule
        and its properties are in layout.py, "Cluster time").
        """
        st = self._status
        return st[S_LEADER_TIME] + max(0, self._mono_ns() - st[S_CLOCK_ORIGIN]) // 1_000_000

    def _advance_clock(self, leader_time_ms: int) -> None:
        """
        Set the next status's leader time and clock origin so that cluster time on this
        host never goes backwards (layout.py, "Cluster time").
        """
        st = self._status
        now = self._mono_ns()
        prev_time, prev_origin = st[S_LEADER_TIME], st[S_CLOCK_ORIGIN]
        if prev_origin == 0 and prev_time == 0:  # a fresh store: the clock starts now
            origin = now
        else:
            origin = min(now, prev_origin + (leader_time_ms - prev_time) * 1_000_000)
        st[S_LEADER_TIME] = leader_time_ms
        st[S_CLOCK_ORIGIN] = max(0, origin)

    def stats(self) -> ArenaStats:
        """Sizes of the live generation, for compaction decisions and benchmarks."""
        return ArenaStats(
            generation=self._gen,
            lineage_gen=self._lineage,
            capacity_bytes=self._cap,
            used_bytes=self._end - GEN_HEADER_SIZE,
            live_bytes=self._live_bytes,
            live_records=sum(len(d) for d in self._offsets),
            directory_bytes=self._dir_bytes,
        )

    def set_status(
        self, term: int, leader_id: str | None, role: Role, leader_client: str | None = None
    ) -> None:
        """
        Publish term, leader id and role (SoftState changes), and the leader's client
        endpoint (the hint read workers give), in one status update.
        """
        st = self._status
        st[S_LEADER_LEN:S_CLOCK_ORIGIN] = leader_words(leader_id, leader_client)
        st[S_TERM] = term
        st[S_ROLE] = int(role)
        write_status_words(self._words, st)

    def set_lease(self, until_ns: int) -> None:
        """
        Publish the leader read lease: valid while time.monotonic_ns() < until_ns (0 ends
        it). One aligned word, independent of the status seqlock: readers check it
        together with role and term from the status.
        """
        self._words[W_LEASE_UNTIL_NS] = max(0, until_ns)

    # -- publishing ---------------------------------------------------------------

    def publish(
        self,
        changes: Sequence[Change],
        applied_index: int,
        revision: int,
        leader_time_ms: int,
    ) -> None:
        """
        Publish the changes of applied entries up to `applied_index`, atomically.

        Readers see either none or all of `changes` (one header update). Changes apply in
        order; a DELETE or EXPIRE of an absent key is ignored.

        Args:
            changes: from `concord.kv` apply(), in apply order (may be empty, e.g. for a
                no-op entry; applied_index still advances).
            applied_index: the last applied Raft index.
            revision: the store revision after these entries.
            leader_time_ms: leader timestamp of the last applied entry (readers hide keys
                with expires_at_ms <= this).
        """
        if self._reset_job is not None:
            raise RuntimeError("publish while a reset is in progress (finish or abort it first)")
        check_sizes(ch.record for ch in changes)  # before anything changes: all or none
        offsets = self._offsets
        dead: list[int] = []
        slots: list[int] = []
        if len(changes) > self._ring_cap // 2:
            # Too big for the ring to carry (a reader could never replay it whole): apply
            # it to the writer's map only and publish it as a new lineage. NB: no dead
            # marks here: a reader scanning the old lineage right now must not see any
            # effect of a batch that is not published.
            self._abort_compaction()
            for ch in changes:
                d = offsets[ch.space]
                old = d.pop(ch.key, None)
                if ch.record is not None and ch.type in _PUTS:
                    d[ch.key] = self._append(ch.space, ch.record)
                if old is not None:
                    self._live_bytes -= self._size_at(old)
            st = self._status
            st[S_APPLIED], st[S_REVISION] = applied_index, revision
            self._advance_clock(leader_time_ms)
            self.compact()
            return
        for ch in changes:
            d = offsets[ch.space]
            old = d.get(ch.key)
            rec = ch.record
            if rec is None or ch.type not in _PUTS:
                if old is None:
                    continue
                del d[ch.key]
                dead.append(old)
                slots.append(old << 2 | int(ch.type))
            else:
                off = self._append(ch.space, rec)
                d[ch.key] = off
                if old is not None:
                    dead.append(old)
                slots.append(off << 2 | int(ch.type))
        self._write_slots(slots)
        self._publish_header(applied_index, revision, leader_time_ms)
        self._mark_dead(dead)
        self._unlink_retired()
        if self._compaction is not None:  # the keys it must bring up to date
            dirty = self._compaction.dirty
            for ch in changes:
                dirty[ch.space].add(ch.key)

    def reset(
        self,
        spaces: Iterable[tuple[Space, Iterable[KeyRecord]]],
        applied_index: int,
        revision: int,
        leader_time_ms: int,
    ) -> None:
        """
        Replace the whole published state (after a snapshot install or a writer restart),
        in this call: `begin_reset`, then every step of it.

        Raises:
            ValueError: a record does not fit the format (nothing changed).
        """
        self.begin_reset(spaces, applied_index, revision, leader_time_ms)
        try:
            while not self.reset_step(float("inf")):
                pass
        except BaseException:
            self.abort_reset()
            raise

    def begin_reset(
        self,
        spaces: Iterable[tuple[Space, Iterable[KeyRecord]]],
        applied_index: int,
        revision: int,
        leader_time_ms: int,
    ) -> None:
        """
        Start replacing the whole published state with `spaces` at `applied_index`,
        built in steps (`reset_step`): readers see the state published before until the
        step that switches them to the new one, never a part of it. No `publish` until
        then (a reset in progress is abandoned by the next `begin_reset`).

        `spaces`: the records of each keyspace, as (space, records) pairs (a space given
        twice: its records in turn), taken here: the caller may change its own state
        afterwards. Every record must fit the format (keys <= 65535 UTF-8 bytes). A key
        given twice in one space: the last one wins.

        Bulk (concord.shm.bulkreset): the per-record work (encoding, checksums,
        directory) is done by C-level maps over the records' fields, with the GC paused
        in each step (1,000,000 records take about 2.5 s of CPU in all).
        """
        self._abort_compaction()
        self.abort_reset()
        by_space: list[list[KeyRecord]] = [[] for _ in Space]
        with gc_paused():
            for space, records in spaces:
                by_space[space].extend(records)
        pairs: list[tuple[int, list[KeyRecord]]] = [(sp, by_space[sp]) for sp in Space if by_space[sp]]
        # The writer's cluster time (cluster_now_ms) moves to the reset's at once: this
        # process serves from its own state meanwhile (never backwards: _advance_clock).
        self._advance_clock(leader_time_ms)
        self._reset_job = _ResetJob(pairs, ResetImage(pairs),
                                    (applied_index, revision, leader_time_ms))

    @property
    def resetting(self) -> bool:
        """A reset begun by `begin_reset` is not published yet (`reset_step` advances it)."""
        return self._reset_job is not None

    def reset_step(self, budget_s: float) -> bool:
        """
        Advance the reset in progress by about `budget_s` seconds of work (at least one
        step of about STEP_RECORDS records); publish it when it is complete.

        Returns:
            True if this call published it (readers now rebuild from the new
            generation); False if it is still in progress, or none runs.

        Raises:
            ValueError: a record does not fit the format (nothing published; the reset
                is abandoned).
        """
        job = self._reset_job
        if job is None:
            return False
        deadline = time.perf_counter() + budget_s
        with gc_paused():
            while True:
                image = job.image
                if image.duplicate:
                    # A key given twice in one space: keep the last record of each key.
                    last = [(sp, list({r.key: r for r in recs}.values())) for sp, recs in job.spaces]
                    job.image = image = ResetImage(last)
                if image.planned and job.gen is None:
                    job.gen = self._create_lineage(image.size)
                if image.done:
                    self._publish_reset(job)
                    return True
                image.step(None if job.gen is None else job.gen[1])
                if time.perf_counter() >= deadline:
                    return False

    def abort_reset(self) -> None:
        """Abandon the reset in progress, if any (its generation was never published)."""
        job, self._reset_job = self._reset_job, None
        if job is not None and job.gen is not None:
            gen, mm = job.gen
            mm.close()
            unlink_segment(self._names.gen(gen))

    def _publish_reset(self, job: _ResetJob) -> None:
        """Switch the writer and then readers to the reset's complete generation."""
        assert job.gen is not None
        image = job.image
        self._reset_job = None
        self._switch_lineage(*job.gen, end=image.end)
        self._offsets = image.offsets
        self._live_bytes = image.end - GEN_HEADER_SIZE
        self._place_directory(image.directory)
        self._publish_header(*job.point, lineage_only=True)
        self._unlink_retired()

    # -- compaction (see concord.shm.compactor) --------------------------------------------

    @property
    def compacting(self) -> bool:
        """
        True while compaction work remains: a compaction in progress, or what the last
        one replaced still being freed. Call `compact_step` to advance it.
        """
        return self._compaction is not None or self._releaser.pending

    def dead_ratio(self) -> float:
        """Share of the used arena taken by dead records (0.0 for an empty arena)."""
        used = self._end - GEN_HEADER_SIZE
        return (used - self._live_bytes - self._dir_bytes) / used if used > 0 else 0.0

    def maybe_begin_compaction(
        self, min_dead_ratio: float = 0.5, min_used_bytes: int = 1 << 20
    ) -> bool:
        """
        Start an incremental compaction if none runs and dead records take more than
        `min_dead_ratio` of a used arena of at least `min_used_bytes`. Cheap (it creates
        the new generation's segment); the work happens in `compact_step`, whose longest
        call copies a keyspace's key -> offset dict (about 10 ms at 1M keys).
        """
        if self._compaction is not None or self._reset_job is not None:
            return False  # a reset replaces the generation anyway
        if self._end - GEN_HEADER_SIZE < min_used_bytes or self.dead_ratio() <= min_dead_ratio:
            return False
        self.begin_compaction()
        return True

    def begin_compaction(self) -> None:
        """
        Start an incremental compaction (no-op if one runs): create the next generation,
        which starts a new lineage. Publishes carry on in the current one meanwhile.
        """
        if self._compaction is not None:
            return
        n = sum(len(d) for d in self._offsets)
        # Sparse (tmpfs allocates pages on first touch): room for every live record, the
        # directory, and records rewritten meanwhile; shrunk to size before it is
        # published, grown in place if ever short.
        need = self._live_bytes + self._live_bytes // 4 + 64 * n + PAGE
        cap = (GEN_HEADER_SIZE + need + PAGE - 1) // PAGE * PAGE
        gen = int(self._words[W_MAX_GEN]) + 1
        self._words[W_MAX_GEN] = gen  # before creating it, so unlink_store always finds it
        mm = create_segment(self._names.gen(gen), cap)
        write_gen_header(mm, gen, gen, cap)
        self._compaction = Compactor(mm, gen, self._ring_cap // 2, self._releaser)
        logger.info("shm compaction started gen=%d keys=%d live_bytes=%d", gen, n,
                    self._live_bytes)

    def compact_step(self, budget_s: float) -> bool:
        """
        Advance the compaction in progress by about `budget_s` seconds of work (at least
        one chunk: 256 keys or one directory piece); switch readers to the new lineage when
        it is complete.

        Returns:
            True if this call finished the compaction (readers now rebuild from the new
            generation's directory); False if it is still in progress, or none runs.
        """
        c = self._compaction
        if c is None:
            self._releaser.step(time.perf_counter() + budget_s)
            return False
        with gc_paused():
            if c.ready():
                # A call of its own: folding the last dirty keys and writing the delta's
                # ring slots is the one step whose size the budget does not bound.
                return self._finish_compaction()
            c.step(self._mv, self._offsets, time.perf_counter() + budget_s)
            if c.over_delta():
                self._restart_compaction("delta outgrew the ring")
            return False

    def maybe_compact(self, min_dead_ratio: float = 0.5, min_used_bytes: int = 1 << 20) -> bool:
        """
        Compact at once (all steps in one call) if dead records take more than
        `min_dead_ratio` of the used arena; True if it compacted.
        """
        if not self.maybe_begin_compaction(min_dead_ratio, min_used_bytes):
            return False
        self.compact()
        return True

    def compact(self) -> None:
        """
        Copy the live records into a new lineage generation and switch readers to it, in
        this call (finishing the compaction in progress, if any).

        Readers notice the lineage change and rebuild their local index from the new
        generation's directory.
        """
        self.begin_compaction()
        while not self.compact_step(float("inf")):
            pass
        self._releaser.release_all()

    def _finish_compaction(self) -> bool:
        """Switch to the compacted generation in one status update (compactor.py)."""
        c = self._compaction
        assert c is not None
        words = c.finish(self._mv, self._offsets, self._head)
        if len(words) > self._ring_cap // 2:
            self._restart_compaction("delta outgrew the ring")
            return False
        self._write_slots(words)
        old_name, old_mm, old_offsets = self._names.gen(self._gen), self._mm, self._offsets
        self._mv.release()
        self._mm = c.mm
        self._mv = memoryview(c.mm)
        self._gen = self._lineage = c.generation
        self._cap = len(c.mm)
        self._end = c.end
        self._offsets = c.new
        self._live_bytes = c.live_bytes
        self._dir_bytes = c.dir_bytes
        self._compaction = None
        st = self._status
        self._publish_header(st[S_APPLIED], st[S_REVISION], st[S_LEADER_TIME], lineage_only=True)
        # Readers that still map the old generation keep it; the writer lets go of its
        # mapping and of the old key -> offset maps in later steps (Releaser).
        unlink_segment(old_name)
        self._releaser.add(old_mm)
        for d in old_offsets:
            self._releaser.add(d)
        total_s = time.perf_counter() - c.started
        self.last_compaction = (c.steps, c.max_step_s, total_s)
        logger.info(
            "shm compacted gen=%d live_bytes=%d records=%d delta=%d steps=%d max_step_ms=%.1f "
            "elapsed_s=%.2f", self._gen, self._live_bytes, c.copied, len(words), c.steps,
            c.max_step_s * 1000, total_s,
        )
        return True

    def _abort_compaction(self) -> None:
        c = self._compaction
        if c is not None:
            self._compaction = None
            c.abort()
            unlink_segment(self._names.gen(c.generation))

    def _restart_compaction(self, why: str) -> None:
        logger.warning("shm compaction restarted reason=%r", why)
        self._abort_compaction()
        self.begin_compaction()

    def _place_directory(self, directory: bytes) -> None:
        if self._end + len(directory) > self._cap:
            self._grow(self._end - GEN_HEADER_SIZE + len(directory))
        off = self._end
        self._mm[off : off + len(directory)] = directory
        set_gen_directory(self._mm, off, self._head)
        self._end = off + len(directory)
        self._dir_bytes = len(directory)

    def close(self) -> None:
        """Unmap everything; never unlinks the live segments (the supervisor owns them)."""
        self.abort_reset()
        self._abort_compaction()
        self._releaser.release_all()
        self._unlink_retired()
        self._mv.release()
        self._mm.close()
        self._words.release()
        self._ctl.close()

    # -- internals (the arena primitives: concord.shm.arena) ----------------------

    def _publish_header(
        self, applied_index: int, revision: int, leader_time_ms: int, lineage_only: bool = False
    ) -> None:
        st = self._status
        # After a compaction or reset no dead marks are pending.
        st[S_PREV_HEAD] = self._head if lineage_only else st[S_RING_HEAD]
        st[S_APPLIED] = applied_index
        st[S_REVISION] = revision
        self._advance_clock(leader_time_ms)
        st[S_RING_HEAD] = self._head
        st[S_ARENA_END] = self._end
        st[S_LIVE_GEN] = self._gen
        st[S_LINEAGE] = self._lineage
        write_status_words(self._words, st)


__all__ = ["ArenaStats", "Publisher"]
