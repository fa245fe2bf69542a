"""
Prometheus metrics of a node (docs/observability.md).

- `families`: the one table of metric names, types, help and labels;
- `recorder`: the per-process recorder (prometheus_client multiprocess mode, stable
  per-process ids, batched hot-path increments);
- `node`: what each node process records, called from a few points of its loop;
- the `metrics` process serving the merged view on `[metrics] port` is concord/node/metrics_server.py.

Importing this package imports neither prometheus_client nor any node module.
"""

from __future__ import annotations

from concord.metrics.families import FAMILIES, Family, Kind, Writer, exposed_names
from concord.metrics.recorder import RECORDER

__all__ = ["FAMILIES", "Family", "Kind", "RECORDER", "Writer", "exposed_names"]
