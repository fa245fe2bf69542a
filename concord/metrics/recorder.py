"""
The process-wide metrics recorder: prometheus_client in multiprocess mode, batched.

Each node process that records metrics calls `setup(process_id, directory)` once, right
after the supervisor forked it and before it records anything. From then on its metrics
live in mmap'd files `<kind>_<process_id>.db` in `directory`, which the `metrics` process
merges on every scrape (concord.node.metrics_server). The id is the child's name in the
supervision tree ("raft", "writer", "door", "reader0", ...), never its pid: a restarted
process reopens its predecessor's files, so counters continue from where they were
(never backwards) and restarts add no files.

Hot paths record into plain Python numbers (`Counter.add`, `Histogram.observe`: an
integer add, a bisect); `flush_due(now)` pushes the deltas to the mmap'd values at most
every FLUSH_INTERVAL_S, from each process's own loop. A scrape therefore sees values at
most that old (plus the loop's poll timeout).

Until `setup()` runs, `RECORDER.enabled` is False and nothing here imports
prometheus_client: processes with metrics off, tests and clients pay one attribute check.
Never call `setup()` in a process that may fork a child that also records (the child
would write the same files): the raft worker's snapshot and backup children record nothing.
"""

from __future__ import annotations

import bisect
import os
import time
from pathlib import Path
from typing import Protocol

from concord.metrics.families import FAMILIES, Family, Kind

__all__ = ["FLUSH_INTERVAL_S", "RECORDER", "Counter", "Gauge", "Histogram", "Recorder"]

#: Longest a recorded value waits before a scrape can see it.
FLUSH_INTERVAL_S = 0.25


class _Value(Protocol):
    """prometheus_client's per-sample value (MultiProcessValue's MmapedValue)."""

    def inc(self, amount: float) -> None: ...


class _Settable(Protocol):
    def set(self, value: float) -> None: ...


class Counter:
    """A counter child, batched: `add()` is a Python add; `flush()` incs the delta."""

    __slots__ = ("_target", "pending")

    def __init__(self, target: _Value | None) -> None:
        self._target = target
        self.pending = 0.0

    def add(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending and self._target is not None:
            self._target.inc(self.pending)
        self.pending = 0.0


class Gauge:
    """A gauge child, written through at once but only when its value changes."""

    __slots__ = ("_target", "value")

    def __init__(self, target: _Settable | None) -> None:
        self._target = target
        self.value: float | None = None

    def set(self, value: float) -> None:
        if value != self.value:
            self.value = value
            if self._target is not None:
                self._target.set(value)


class Histogram:
    """
    A histogram child, batched: `observe()` counts into local buckets; `flush()` adds the
    counts to prometheus_client's per-bucket values.

    NB: prometheus_client has no public "add n observations" call; `flush()` increments
    the histogram child's `_sum` and `_buckets` values, which is exactly what its
    `observe()` does per observation (tests/metrics/test_recorder.py checks that the
    exposition is the same as with `observe()`).
    """

    __slots__ = ("_bounds", "_counts", "_sum", "_sum_value", "_bucket_values")

    def __init__(self, bounds: tuple[float, ...], child: object | None) -> None:
        self._bounds = bounds  # upper bounds without +Inf
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._sum_value: _Value | None = getattr(child, "_sum", None)
        self._bucket_values: list[_Value] = list(getattr(child, "_buckets", ()))

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        if self._sum_value is None:
            self._counts = [0] * len(self._counts)
            self._sum = 0.0
            return
        counts = self._counts
        for i, count in enumerate(counts):
            if count:
                self._bucket_values[i].inc(count)
                counts[i] = 0
        if self._sum:
            self._sum_value.inc(self._sum)
            self._sum = 0.0


class Recorder:
    """
    The metric families of this process (concord.metrics.families), batched children and
    the flush clock. One per process: `RECORDER`.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.process_id = ""
        self._metrics: dict[str, object] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Counter | Gauge | Histogram] = {}
        self._batched: list[Counter | Histogram] = []
        self._next_flush = 0.0

    def setup(self, process_id: str, directory: Path) -> None:
        """
        Switch this process to multiprocess mode with the stable id `process_id`.

        Raises:
            ValueError: `directory` is not a folder, or `process_id` is not a plain name.
        """
        if not process_id.replace("-", "").isalnum():
            raise ValueError(f"metrics process id must be alphanumeric, got {process_id!r}")
        if not directory.is_dir():
            raise ValueError(f"metrics directory {directory} is not a folder")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        from prometheus_client import values  # noqa: PLC0415 - only in metered processes

        # NB: every process of the tree writes under its stable name, not os.getpid().
        values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
            lambda: process_id)
        self.process_id = process_id
        self._metrics.clear()
        self._children.clear()
        self._batched.clear()
        self.enabled = True
        # Every unlabeled family this process writes exists from the start (at 0): a
        # series that appears only after its first event breaks rate() and alerts.
        kind = process_id.rstrip("0123456789")
        make = {Kind.COUNTER: self.counter, Kind.GAUGE: self.gauge, Kind.HISTOGRAM: self.histogram}
        for fam in FAMILIES:
            if fam.writer.value == kind and not fam.labels:
                make[fam.kind](fam.name)

    def _metric(self, fam: Family) -> object:
        metric = self._metrics.get(fam.name)
        if metric is None:
            import prometheus_client as prom  # noqa: PLC0415

            if fam.kind is Kind.COUNTER:
                metric = prom.Counter(fam.base, fam.help, fam.labels, registry=None)
            elif fam.kind is Kind.GAUGE:
                # NB: each gauge has ONE writer process (families.Writer), so "max" over
                # processes is its value. Not "mostrecent": a gauge never set yet (0 in
                # its file, timestamp 0) would be left out of the merged view.
                metric = prom.Gauge(fam.base, fam.help, fam.labels, registry=None,
                                    multiprocess_mode="max")
            else:
                metric = prom.Histogram(fam.base, fam.help, fam.labels, registry=None,
                                        buckets=fam.buckets)
            self._metrics[fam.name] = metric
        return metric

    def _target(self, fam: Family, labels: tuple[str, ...]) -> object | None:
        if not self.enabled:
            return None
        metric = self._metric(fam)
        return metric.labels(*labels) if labels else metric  # type: ignore[attr-defined]

    def counter(self, name: str, *labels: str) -> Counter:
        """The batched child of counter `name` with these label values (cached)."""
        key = (name, labels)
        child = self._children.get(key)
        if not isinstance(child, Counter):
            fam = _family(name, Kind.COUNTER, labels)
            child = Counter(self._target(fam, labels))  # type: ignore[arg-type]
            self._children[key] = child
            self._batched.append(child)
        return child

    def gauge(self, name: str, *labels: str) -> Gauge:
        """The write-through child of gauge `name` (cached)."""
        key = (name, labels)
        child = self._children.get(key)
        if not isinstance(child, Gauge):
            fam = _family(name, Kind.GAUGE, labels)
            target = self._target(fam, labels)
            child = Gauge(target)  # type: ignore[arg-type]
            self._children[key] = child
        return child

    def histogram(self, name: str, *labels: str) -> Histogram:
        """The batched child of histogram `name` (cached)."""
        key = (name, labels)
        child = self._children.get(key)
        if not isinstance(child, Histogram):
            fam = _family(name, Kind.HISTOGRAM, labels)
            child = Histogram(fam.buckets, self._target(fam, labels))
            self._children[key] = child
            self._batched.append(child)
        return child

    def flush_due(self, now: float | None = None) -> bool:
        """Flush if FLUSH_INTERVAL_S passed since the last flush; True if it flushed."""
        now = time.monotonic() if now is None else now
        if now < self._next_flush:
            return False
        self._next_flush = now + FLUSH_INTERVAL_S
        self.flush()
        return True

    def flush(self) -> None:
        """Write every batched delta to the process's metric files."""
        for child in self._batched:
            child.flush()


def _family(name: str, kind: Kind, labels: tuple[str, ...]) -> Family:
    for fam in FAMILIES:
        if fam.name == name:
            if fam.kind is not kind or len(fam.labels) != len(labels):
                raise ValueError(f"metric {name} is a {fam.kind.value} with labels "
                                 f"{fam.labels}, not a {kind.value} with {len(labels)}")
            return fam
    raise KeyError(f"no metric family {name} (concord/metrics/families.py)")


#: This process's recorder.
RECORDER = Recorder()
