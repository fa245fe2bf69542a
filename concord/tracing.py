"""
OpenTelemetry tracing of sampled requests (docs/observability-tracing.md).

A request's W3C `traceparent` (wire envelope field) is carried from the client through
the front door, the raft worker, the log writer and the peers, and each stage records
spans through `opentelemetry-api`; the SDK and its exporters are an optional extra
(`pip install 'concord-kv[tracing]'`), set up in each node process after the fork
(`setup_process`). Off by default (`[tracing] enabled`).

Sampling is decided once, where a trace enters Concord, and followed everywhere after:
a request whose traceparent has the sampled flag is traced; one whose traceparent is
not sampled is not; one without a traceparent is traced with probability
`[tracing] sample_ratio` (the front door then starts the trace). Downstream stages look
only at the flag (`is_sampled`, a string test), so an untraced request costs one
comparison per stage.

Spans (names, parents, attributes: docs/observability-tracing.md):

    concord.client/<op>       the Python client, for a call made inside an active span
    concord.door/<op>         front door: request received -> reply sent
    concord.raft/<op>         raft worker (any node that handles it): request -> reply
    concord.raft.append       a follower: traced entry received -> persisted
    concord.wal.fsync         log writer: traced entries received -> written and fsynced
                              (concord.wal.write when the batch needed no fsync)

Across processes the context travels as a traceparent string: in the request payload
(client -> door -> backends), in the log writer's TRACE message (raft worker -> writer,
concord/node/log_writer.py) and in a traced APPEND's optional trace map (leader ->
followers, concord/storage/codec.py), which is sent only for sampled entries.

This module imports opentelemetry lazily: a node with tracing off, and a client that
never imported opentelemetry, pay nothing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager, cast

from concord.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.trace import Span, Tracer

    from concord.config import TracingSection

__all__ = [
    "NodeTracing", "TRACER_NAME", "client_span", "current_traceparent", "is_sampled",
    "setup_process", "traceparent_of",
]

log = logging.getLogger(__name__)

TRACER_NAME = "concord"
_OTEL_TRACE = "opentelemetry.trace"


def is_sampled(traceparent: str | None) -> bool:
    """True for a well-formed-length W3C traceparent whose sampled flag is set."""
    return (traceparent is not None and len(traceparent) == 55
            and traceparent[-1] in "13579bdf")


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span` (version 00)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parent_context(traceparent: str | None) -> object:
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    if traceparent is None:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


# -- the client side ------------------------------------------------------------------


def current_traceparent() -> str | None:
    """
    The traceparent of the caller's active, recording span, or None. Costs a dict
    lookup when the application never imported opentelemetry.
    """
    if _OTEL_TRACE not in sys.modules:
        return None
    from opentelemetry import trace  # noqa: PLC0415

    span = trace.get_current_span()
    if not span.is_recording():
        return None
    return traceparent_of(span)


def client_span(op: str) -> ContextManager[object]:
    """
    A `concord.client/<op>` span around one client call, made current (so the request
    carries its traceparent), when the caller is inside a recording span; else nothing.
    """
    if _OTEL_TRACE not in sys.modules:
        return nullcontext()
    from opentelemetry import trace  # noqa: PLC0415

    if not trace.get_current_span().is_recording():
        return nullcontext()
    return trace.get_tracer(TRACER_NAME).start_as_current_span(
        f"concord.client/{op}", kind=trace.SpanKind.CLIENT, attributes={"concord.op": op})


# -- node processes -------------------------------------------------------------------


class NodeTracing:
    """One node process's tracer (made by `setup_process`). Not thread-safe."""

    def __init__(self, provider: TracerProvider, ratio: float, node: str, process: str) -> None:
        self.provider = provider
        self.ratio = ratio
        self.node = node
        self.process = process
        self.tracer: Tracer = provider.get_tracer(TRACER_NAME)
        self._random = random.Random()

    def wants(self, traceparent: str | None) -> bool:
        """Whether a request entering here is traced (module docstring, "Sampling")."""
        if traceparent is None:
            return self.ratio > 0.0 and self._random.random() < self.ratio
        return is_sampled(traceparent)

    def start(self, name: str, parent: str | None, attributes: Mapping[str, object] | None = None,
              start_ns: int | None = None, server: bool = False) -> Span:
        """A span under the remote `parent` traceparent (None: a new trace)."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        return self.tracer.start_span(
            name, context=_parent_context(parent),  # type: ignore[arg-type]
            kind=SpanKind.SERVER if server else SpanKind.INTERNAL,
            attributes=dict(attributes or {}),  # type: ignore[arg-type]
            start_time=start_ns,
        )

    def shutdown(self) -> None:
        """Export what is buffered and stop (call before the process exits)."""
        self.provider.shutdown()


def setup_process(section: TracingSection, node: str, process: str) -> NodeTracing | None:
    """
    The tracer of one node process, per `[tracing]`, or None when tracing is off. Call
    in the child, after the fork (the SDK's export thread must be the child's own).

    Raises:
        ConfigError: tracing is on but the SDK (or the OTLP exporter) is not installed.
    """
    if not section.enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("tracing.enabled: needs the OpenTelemetry SDK: "
                          "pip install 'concord-kv[tracing]'") from exc
    exporter: SpanExporter
    if section.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415, E501
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise ConfigError("tracing.exporter: \"otlp\" needs opentelemetry-exporter-otlp-proto-grpc") from exc
        exporter = OTLPSpanExporter(endpoint=section.otlp_endpoint or None)
    else:
        # NB: duck-typed (export, shutdown, force_flush): a subclass would import the SDK
        # with this module.
        exporter = cast("SpanExporter", JsonLinesExporter(
            Path(section.file_dir) / f"{node}-{process}-{os.getpid()}.jsonl"))
    resource = Resource.create({"service.name": "concord", "service.instance.id": node,
                                "concord.node": node, "concord.process": process})
    # The decision was made where the trace entered (NodeTracing.wants / the client):
    # downstream, a sampled parent is always followed.
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    log.info("tracing on node=%s process=%s exporter=%s ratio=%s", node, process,
             section.exporter, section.sample_ratio)
    return NodeTracing(provider, section.sample_ratio, node, process)


def span_to_map(span: ReadableSpan) -> dict[str, object]:
    """One span as a line of the file exporter (format in docs/observability-tracing.md)."""
    ctx = span.get_span_context()
    parent = span.parent
    resource = span.resource.attributes if span.resource is not None else {}
    assert ctx is not None
    return {
        "v": 1,
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "node": resource.get("concord.node"),
        "process": resource.get("concord.process"),
    }


class JsonLinesExporter:
    """
    An OpenTelemetry SpanExporter that appends one JSON line per span to `path` (file
    exporter of `[tracing] exporter = "file"`; no collector needed; tests read it).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415

        text = "".join(json.dumps(span_to_map(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(text)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_spans(folder: Path) -> list[dict[str, object]]:
    """Every span the file exporters wrote in `folder` (all processes)."""
    spans: list[dict[str, object]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                spans.append(json.loads(line))
            except ValueError:
                continue  # a line being written
    return spans
