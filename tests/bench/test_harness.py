"""Smoke tests of the benchmark harness (bench/): not timed tests, only that it runs and cleans up."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from array import array
from pathlib import Path

import pytest

from bench.drivers import LoadResult
from bench.load import percentile, summarize
from bench.report import report
from bench.scenarios import Size, run
from bench.shm_get import PATHS
from bench.systems import ROOT

TINY = Size("tiny", runs=1, latency_ops=20, seconds=0.3, keys=50, restart_keys=200, failovers=1,
            shm_seconds=0.1, shm_keys=200)


def _has_concord_node() -> bool:
    return (ROOT / "concord" / "node" / "raft_worker.py").exists()


def _concord_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("concord-n")}


def _orphaned(segments: set[str]) -> set[str]:
    """The segments whose owning supervisor ("concord-<node>-<pid>x<hex>-...") is gone:
    leaks, as opposed to the live stores of clusters other tests run meanwhile."""
    out = set()
    for name in segments:
        pid = name.split("-")[2].partition("x")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            out.add(name)
        except PermissionError:
            pass  # alive, another user's
    return out


def test_percentile_picks_nearest_rank_when_values_are_sorted() -> None:
    """p50 and p99 of 1..100 are the nearest ranks."""
    values = [float(i) for i in range(1, 101)]
    assert (50.0, 99.0) == (percentile(values, 0.5), percentile(values, 0.99))


def test_summarize_merges_processes_when_several_report() -> None:
    """Throughput is all acknowledged requests over the longest process's time."""
    a = LoadResult(100, 0, 1.0, array("d", [1.0] * 100))
    b = LoadResult(300, 2, 2.0, array("d", [3.0] * 300), "timeout: x")
    s = summarize([a, b], clients=8, processes=2)
    assert (400, 2, 200.0, 3.0, "timeout: x") == (s.ok, s.errors, s.ops_per_s, s.p50_us, s.first_error)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_short_run_measures_concord_and_cleans_up_when_the_node_exists(tmp_path: Path) -> None:
    """A tiny run of every scenario against Concord alone writes results and leaves nothing behind."""
    if not _has_concord_node():
        pytest.skip(f"no concord/node/raft_worker.py under {ROOT} yet")
    before = _concord_segments()
    path = run("tiny", ["concord"], {"write_latency", "write_throughput", "read_latency",
                                     "read_throughput", "shm_reads", "failover", "restart"},
               size=TINY, out_dir=tmp_path)
    res = json.loads(path.read_text())["results"]
    tput = res["write_throughput"]["concord"]
    assert ["1", "64", "128"] == sorted(tput, key=int)
    assert all(r[0]["ok"] > 0 and r[0]["errors"] == 0 for r in tput.values())
    assert {f"{level}@{k}" for level in ("eventual", "leader", "strong") for k in (1, 64, 128)} == set(
        res["read_throughput"]["concord"])
    shm = res["shm_reads"]["concord"]
    assert set(PATHS) == set(shm)
    assert shm["client.get eventual"][0]["served_from_shm"] > 0
    assert all(200 == runs[0]["keys"] for runs in shm.values())  # its own key count, all loaded
    assert 0 < res["failover"]["concord"]["ms"][0]["ms"] < 20_000
    assert res["restart"]["concord"]["200"][0]["restart_s"] > 0
    assert set() == _orphaned(_concord_segments() - before)
    md = report("tiny", in_dir=tmp_path, out_dir=tmp_path)
    assert "writes/s, 128 clients" in md.read_text()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_etcd_and_redis_answer_when_their_binaries_are_installed(tmp_path: Path) -> None:
    """The peers start, take writes and reads from the load generator, and stop."""
    missing = [b for b in ("etcd", "redis-server") if shutil.which(b) is None]
    if missing or importlib.util.find_spec("grpc") is None:
        pytest.skip(f"peer not installed: {missing or 'grpcio'} (python -m bench setup)")
    path = run("tiny", ["etcd", "redis"], {"write_throughput", "read_throughput"}, size=TINY,
               out_dir=tmp_path)
    res = json.loads(path.read_text())["results"]
    for system in ("etcd", "redis"):
        assert all(r[0]["ok"] > 0 and r[0]["errors"] == 0 for r in res["write_throughput"][system].values())
    assert {f"{level}@{k}" for level in ("serializable", "linearizable") for k in (1, 64, 128)} == set(
        res["read_throughput"]["etcd"])


def test_etcd_protobuf_encodings_match_the_wire_format_when_built_by_hand() -> None:
    """The hand-encoded Put/Range requests and the RangeResponse walk of bench/etcd_grpc.py."""
    from bench.etcd_grpc import encode_put, encode_range, range_kv_count

    assert b"\x0a\x01k\x12\x02vv" == encode_put(b"k", b"vv")
    assert b"\x0a\x01k" == encode_range(b"k", False)
    assert b"\x0a\x01k\x38\x01" == encode_range(b"k", True)
    long_key = b"x" * 200  # a two-byte length varint
    assert encode_put(long_key, b"").startswith(b"\x0a\xc8\x01" + long_key)
    header = b"\x0a\x04\x08\x01\x10\x02"  # field 1 (ResponseHeader), 4 bytes
    kv = b"\x12\x05\x0a\x01k\x2a\x00"  # field 2 (KeyValue {key: "k", value: ""})
    assert 0 == range_kv_count(header + b"\x20\x00")  # count = 0
    assert 1 == range_kv_count(header + kv + b"\x20\x01")
    assert 2 == range_kv_count(kv + kv)
