"""A traced put shows spans from the client to the fsync on the leader and a follower."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concord.client import Client
from concord.tracing import read_spans
from tests.helpers import wait_until
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPORTER = InMemorySpanExporter()


def _provider() -> None:
    """The test process's SDK, once (OpenTelemetry allows one global provider)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


def _chain(spans: list[dict[str, object]], trace_id: str) -> dict[tuple[object, object], dict[str, object]]:
    """(node, name) -> span of the trace (the first of each)."""
    found: dict[tuple[object, object], dict[str, object]] = {}
    for s in spans:
        if s["trace_id"] == trace_id:
            name = str(s["name"]).split("/")[0]
            found.setdefault((s["node"], name), s)
    return found


@pytest.mark.timeout(120)
def test_spans_reach_the_fsync_on_leader_and_follower_when_a_put_is_traced(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """client -> door -> raft (leader) -> wal fsync (leader), and raft (leader) ->
    raft.append (follower) -> wal fsync (follower), one trace, each span the parent of
    the next; an untraced put (ratio 0, no traceparent) leaves no span."""
    _provider()
    folder = tmp_path / "traces"
    c = cluster(3, tracing={"enabled": True, "sample_ratio": 0.0, "file_dir": str(folder)})
    leader = c.wait_leader()
    tracer = trace.get_tracer("tests")
    with Client([c.nodes[leader].client], shm=False) as client:
        client.put("untraced", "x")
        with tracer.start_as_current_span("test-root") as root:
            revision = client.put("traced", "v")
        client.put("untraced-2", "y")
    trace_id = f"{root.get_span_context().trace_id:032x}"
    client_spans = [s for s in EXPORTER.get_finished_spans() if s.name == "concord.client/put"
                    and s.context is not None and s.context.trace_id == root.get_span_context().trace_id]
    assert 1 == len(client_spans)
    client_span_id = f"{client_spans[0].context.span_id:016x}"

    def traced_follower_fsync() -> dict[tuple[object, object], dict[str, object]] | None:
        found = _chain(read_spans(folder), trace_id)
        on_leader = {(leader, n) for n in ("concord.door", "concord.raft", "concord.wal.fsync")}
        followers = [n for n, name in found if name == "concord.wal.fsync" and n != leader
                     and (n, "concord.raft.append") in found]
        return found if followers and on_leader <= set(found) else None

    found = wait_until(traced_follower_fsync, 30, lambda: repr(read_spans(folder))[-2000:])
    door = found[(leader, "concord.door")]
    raft = found[(leader, "concord.raft")]
    wal = found[(leader, "concord.wal.fsync")]
    follower = next(n for n, name in found if name == "concord.wal.fsync" and n != leader
                    and (n, "concord.raft.append") in found)
    append = found[(follower, "concord.raft.append")]
    follower_wal = found[(follower, "concord.wal.fsync")]
    assert client_span_id == door["parent_span_id"]
    assert door["span_id"] == raft["parent_span_id"]
    assert raft["span_id"] == wal["parent_span_id"]
    assert raft["span_id"] == append["parent_span_id"]
    assert append["span_id"] == follower_wal["parent_span_id"]
    assert ("door", "raft", "writer", "raft", "writer") == (
        door["process"], raft["process"], wal["process"], append["process"], follower_wal["process"])
    assert revision == door["attributes"]["concord.revision"]  # type: ignore[index]
    assert revision == raft["attributes"]["concord.index"]  # type: ignore[index]
    assert {trace_id} == {str(s["trace_id"]) for s in read_spans(folder)}
