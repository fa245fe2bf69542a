"""The metrics recorder: batching, stable ids, the families table, reply results."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from concord.metrics import FAMILIES, Kind, exposed_names
from concord.metrics.families import FAST_S, family
from concord.metrics.node import reply_result
from concord.metrics.recorder import Recorder
from concord.net.wire import error_reply, ok_reply

OBSERVED = (0.00005, 0.0003, 0.0003, 0.002, 0.2, 7.5, 0.0001, 2.5)


@pytest.fixture
def multiproc(tmp_path: Path) -> Iterator[Path]:
    """This test process in multiprocess mode for the test; restored afterwards."""
    saved_class, saved_env = values.ValueClass, os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    yield tmp_path
    values.ValueClass = saved_class
    if saved_env is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved_env


def merged(directory: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


def samples_of(text: str, name: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith(name))


def test_batched_histogram_exposes_what_observe_does_when_flushed(multiproc: Path) -> None:
    """Flushed local buckets give the exposition prometheus_client's observe() gives."""
    registry = CollectorRegistry()
    reference = Histogram("concord_server_request_duration_seconds", "h",
                          ("op", "consistency", "result"), registry=registry, buckets=FAST_S)
    for amount in OBSERVED:
        reference.labels("put", "none", "ok").observe(amount)
    expected = samples_of(generate_latest(registry).decode(),
                          "concord_server_request_duration_seconds_")
    rec = Recorder()
    rec.setup("door", multiproc)
    child = rec.histogram("concord_server_request_duration_seconds", "put", "none", "ok")
    for amount in OBSERVED[:3]:
        child.observe(amount)
    rec.flush()
    for amount in OBSERVED[3:]:
        child.observe(amount)
    count = 'concord_server_request_duration_seconds_count{consistency="none",op="put",result="ok"}'
    assert [f"{count} 3.0"] == samples_of(merged(multiproc), count)
    rec.flush()
    rec.flush()  # nothing new: no double counting
    got = [line for line in samples_of(merged(multiproc), "concord_server_request_duration_seconds_")
           if "_created" not in line]
    assert [line for line in expected if "_created" not in line] == got


def test_counter_continues_when_a_process_with_the_same_id_restarts(multiproc: Path) -> None:
    """A second recorder under the same id reopens the files: the count goes on, no new file."""
    first = Recorder()
    first.setup("reader0", multiproc)
    first.counter("concord_read_worker_requests_total", "reader0", "served").add(5)
    first.flush()
    files = sorted(os.listdir(multiproc))
    values.ValueClass.close_all_files()  # the process "dies"
    second = Recorder()
    second.setup("reader0", multiproc)
    second.counter("concord_read_worker_requests_total", "reader0", "served").add(2)
    second.flush()
    assert files == sorted(os.listdir(multiproc))
    line = 'concord_read_worker_requests_total{outcome="served",worker="reader0"} 7.0'
    assert line in merged(multiproc).splitlines()


def test_nothing_is_written_when_the_recorder_is_not_set_up(tmp_path: Path) -> None:
    """An inert recorder (metrics off) batches nowhere and touches no file."""
    rec = Recorder()
    rec.counter("concord_server_proposals_failed_total").add(3)
    rec.histogram("concord_disk_wal_fsync_duration_seconds").observe(0.1)
    rec.gauge("concord_server_term").set(4)
    rec.flush()
    assert not rec.enabled
    assert [] == os.listdir(tmp_path)


def test_recorder_refuses_a_family_when_kind_or_labels_do_not_match() -> None:
    """A typo in a hook is an error naming the family, not a silent new metric."""
    rec = Recorder()
    with pytest.raises(ValueError, match="concord_server_term is a gauge"):
        rec.counter("concord_server_term")
    with pytest.raises(KeyError, match="no metric family concord_nope"):
        rec.gauge("concord_nope")


def test_setup_refuses_a_process_id_when_it_is_not_a_plain_name(tmp_path: Path) -> None:
    """The id becomes a file name: no path separators, no pid-like surprises."""
    with pytest.raises(ValueError, match="alphanumeric"):
        Recorder().setup("../x", tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        Recorder().setup("raft", tmp_path / "missing")


@pytest.mark.parametrize("payload, expected", [
    (ok_reply(7, {"revision": 3}), "ok"),
    (ok_reply(2**40), "ok"),
    (error_reply(9, "not_found", "no key"), "not_found"),
    (error_reply(None, "not_leader", "x", "tcp://h:1"), "not_leader"),
    (error_reply(1, "made_up_code", "x"), "other"),
    (msgpack.packb({"ok": True, "id": 1}), "ok"),
    (msgpack.packb({"error": "timeout", "ok": False}), "timeout"),
    (b"\xc1garbage", "other"),
    (b"", "other"),
])
def test_reply_result_reads_ok_or_the_error_code_when_given_a_reply(
        payload: bytes, expected: str) -> None:
    """The fast peek and the full-unpack fallback agree with the reply's content."""
    assert expected == reply_result(payload)


def test_families_are_well_formed_when_listed() -> None:
    """Names are concord_*, counters end in _total, histograms have buckets."""
    for fam in FAMILIES:
        assert fam.name.startswith("concord_"), fam.name
        assert (fam.kind is Kind.COUNTER) == fam.name.endswith("_total"), fam.name
        assert (fam.kind is Kind.HISTOGRAM) == bool(fam.buckets), fam.name
    assert "concord_disk_wal_fsync_duration_seconds_bucket" in exposed_names()
    assert family("concord_server_has_leader").kind is Kind.GAUGE
