"""
/metrics on a real 3-node cluster under load, through a leader change and a read-worker
restart (issue 20, "Done when"): the text parses with prometheus_client's parser, no
counter ever goes backwards, at most one node is leader per term and exactly one once
the cluster is stable, the values move as the cluster works, and every series the
shipped dashboard and alert rules read (deploy/) is exported by the running nodes.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from concord.metrics import FAMILIES, Kind
from concord.client.raw import request
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory
from tests.metrics.promql import deploy_metric_names

Series = tuple[str, tuple[tuple[str, str], ...]]
Scrape = dict[Series, float]

#: Sample names whose value must never decrease (counters, histogram buckets/sum/count).
MONOTONIC = (
    {f.name for f in FAMILIES if f.kind is Kind.COUNTER}
    | {f"{f.name}{s}" for f in FAMILIES if f.kind is Kind.HISTOGRAM
       for s in ("_bucket", "_sum", "_count")}
)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert 200 == response.status
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def scrape(url: str) -> Scrape:
    """One GET of `url`, parsed by prometheus_client's text parser."""
    text = fetch(url)
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0.0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Scrape, name: str, **labels: str) -> float:
    """The sum of every sample `name` whose labels include `labels`."""
    return sum(v for (n, lbl), v in samples.items()
               if n == name and set(labels.items()) <= set(lbl))


class Watcher:
    """Scrapes every node and checks each scrape against the previous one of that node."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.last: dict[str, Scrape] = {}
        self.leaders: dict[int, set[str]] = {}  # term -> nodes that said is_leader=1 in it
        self.scrapes = 0

    def round(self) -> dict[str, Scrape]:
        now = {nid: scrape(node.endpoints["metrics"]) for nid, node in self.c.nodes.items()}
        for nid, samples in now.items():
            self.scrapes += 1
            before = self.last.get(nid, {})
            for series, old in before.items():
                if series[0] in MONOTONIC:
                    assert series in samples, f"{nid}: {series} vanished"
                    assert samples[series] >= old, f"{nid}: {series} went back {old} -> {samples[series]}"
            if value(samples, "concord_server_is_leader") == 1:
                term = int(value(samples, "concord_server_term"))
                self.leaders.setdefault(term, set()).add(nid)
            self.last[nid] = samples
        for term, nodes in self.leaders.items():
            assert len(nodes) <= 1, f"term {term} had leaders {nodes}"
        return now

    def stable(self) -> dict[str, Scrape]:
        """Scrape until every node names the same term, has a leader, and one node leads."""
        got: dict[str, dict[str, Scrape]] = {}

        def agreed() -> bool:
            now = got["now"] = self.round()
            terms = {value(s, "concord_server_term") for s in now.values()}
            has = [value(s, "concord_server_has_leader") for s in now.values()]
            leading = [n for n, s in now.items() if value(s, "concord_server_is_leader") == 1]
            return len(terms) == 1 and has == [1.0] * len(now) and len(leading) == 1

        wait_until(agreed, 20, lambda: f"last scrapes={ {n: _brief(s) for n, s in got.get('now', {}).items()} }")
        return got["now"]


def _brief(samples: Scrape) -> dict[str, float]:
    return {n: value(samples, n) for n in ("concord_server_term", "concord_server_has_leader",
                                            "concord_server_is_leader")}


class Load:
    """Writes to the leader and reads from every node in a thread until stopped."""

    def __init__(self, c: Cluster) -> None:
        self.endpoints = [node.client for node in c.nodes.values()]
        self.stop = threading.Event()
        self.acked = 0
        self.thread = threading.Thread(target=self._run, name="metrics-load", daemon=True)

    def _run(self) -> None:
        leader = self.endpoints[0]
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                reply = request(leader, {"op": "put", "key": f"m/{i % 50}", "value": i}, timeout_ms=2000)
                if reply.get("ok"):
                    self.acked += 1
                elif isinstance(reply.get("leader"), str):
                    leader = str(reply["leader"])
                else:
                    leader = self.endpoints[i % len(self.endpoints)]
                for consistency in ("eventual", "leader", "strong"):
                    request(self.endpoints[i % len(self.endpoints)],
                            {"op": "get", "key": f"m/{i % 50}", "consistency": consistency},
                            timeout_ms=2000)
                # A range: a read worker's, where the door answers the gets itself.
                request(self.endpoints[i % len(self.endpoints)],
                        {"op": "count", "prefix": "m/", "consistency": "eventual"}, timeout_ms=2000)
            except Exception:  # noqa: BLE001 - a leader change or a restarting worker
                leader = self.endpoints[i % len(self.endpoints)]

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def _child_pid(c: Cluster, node_id: str, child: str) -> int:
    """The pid of a node's child, from the supervisor's last `child started` line."""
    found = re.findall(rf"child started name={child} pid=(\d+)", c.nodes[node_id].stderr())
    assert found, f"{node_id}: no {child} start logged"
    return int(found[-1])


def _metrics_files(c: Cluster, node_id: str) -> list[str]:
    pid = c.nodes[node_id].proc.pid  # type: ignore[union-attr]
    folders = glob.glob(f"/tmp/concord-{node_id}-{pid}x*/metrics")
    assert 1 == len(folders), folders
    return sorted(os.listdir(folders[0]))


@pytest.fixture
def metered(cluster: ClusterFactory) -> Iterator[Cluster]:
    yield cluster(n=3, metrics={"enabled": True})


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_metrics_move_as_they_should_when_leader_changes_and_a_read_worker_restarts(
        metered: Cluster) -> None:
    """Scrapes parse; counters never go back; one leader per term; values follow events."""
    c = metered
    watch = Watcher(c)
    start = watch.stable()
    first_leader = c.wait_leader()
    with Load(c) as load:
        # Under load: every node commits and applies, requests are counted by op.
        wait_until(lambda: all(
            value(s, "concord_server_proposals_applied_total")
            >= value(start[n], "concord_server_proposals_applied_total") + 20
            for n, s in watch.round().items()), 30, "applied counters did not move under load")
        # A leader change: every node sees it; still one leader per term.
        before = watch.round()
        reply = c.request(first_leader, {"op": "transfer_leader"})
        assert reply.get("ok"), reply
        after = watch.stable()
        new_leader = c.wait_leader()
        assert first_leader != new_leader
        for nid, samples in after.items():
            assert value(samples, "concord_server_leader_changes_seen_total") > value(
                before[nid], "concord_server_leader_changes_seen_total"), nid
        assert 1.0 == value(after[new_leader], "concord_server_is_leader")
        # A read-worker restart on a follower: its counters continue, no new files.
        victim = next(n for n in c.ids if n != new_leader)
        files = _metrics_files(c, victim)
        served_before = value(watch.round()[victim], "concord_read_worker_requests_total",
                              outcome="served", worker="reader0")
        old_pid = _child_pid(c, victim, "reader0")
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: _child_pid(c, victim, "reader0") != old_pid, 20, "reader0 not restarted")
        wait_until(lambda: value(watch.round()[victim], "concord_read_worker_requests_total",
                                 outcome="served", worker="reader0") > served_before,
                   30, "the restarted read worker's counter did not move on")
        assert files == _metrics_files(c, victim)
        acked = load.acked
        wait_until(lambda: load.acked > acked + 20, 30, "writes stopped after the restart")
    final = watch.stable()
    assert load.acked > 0
    leader = final[new_leader]
    # Counted by the door of the node each put reached: after the transfer, puts sent to
    # the old leader are forwarded by it (raft.forward_to_leader), never seen by the new
    # leader's door.
    assert sum(total(final[n], "concord_server_request_duration_seconds_count", op="put",
                     result="ok") for n in c.ids) > 0
    for follower in (n for n in c.ids if n != new_leader):
        assert value(leader, "concord_network_peer_round_trip_time_seconds_count", to=follower) > 0
    for nid, samples in final.items():
        assert total(samples, "concord_disk_wal_fsync_duration_seconds_count") > 0, nid
        assert total(samples, "concord_server_reads_served_total", by="read_worker") > 0, nid
        assert total(samples, "concord_server_reads_served_total", by="door") > 0, nid
    c.wait_converged()
    keys = {nid: (st or {}).get("keys") for nid, st in c.statuses().items()}
    wait_until(lambda: keys == {nid: value(s, "concord_store_keys")
                                for nid, s in watch.round().items()},
               10, lambda: f"keys by status={keys}")
    assert watch.scrapes > 20
    # deploy/: every series the dashboard and the alert rules read is exported here.
    # (per-tenant series exist once a tenant does: this cluster has none, auth is off)
    exported = {name for samples in final.values() for name, _ in samples}
    per_tenant = {f.name for f in FAMILIES if "tenant" in f.labels}
    assert per_tenant and set() == deploy_metric_names() - exported - per_tenant
    # Prometheus's own linter accepts the names, types and help texts (when installed).
    promtool = shutil.which("promtool")
    if promtool is not None:
        text = fetch(c.nodes[new_leader].endpoints["metrics"])
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=60, check=False)
        assert 0 == lint.returncode, lint.stdout + lint.stderr
