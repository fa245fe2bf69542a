"""Fixtures of the CLI tests: run `concord` as a subprocess against a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster import ROOT, Cluster
from tests.integration.conftest import cluster  # noqa: F401  (the cluster fixture)

ClusterFactory = Callable[..., Cluster]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)

    def rows(self) -> list[dict[str, object]]:
        """The output of `-w json` of a listing: a list of objects."""
        value = self.json()
        assert isinstance(value, list) and all(isinstance(row, dict) for row in value), value
        return value


def run_cli(*args: str, endpoints: str | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None, timeout_s: float = 60.0,
            cwd: Path = ROOT) -> Run:
    """`python -m concord.cli ARGS` with this checkout on PYTHONPATH."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    argv = [sys.executable, "-m", "concord.cli"]
    if endpoints is not None:
        argv += ["-e", endpoints]
    proc = subprocess.run([*argv, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout_s, env=full_env, cwd=cwd)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def three(cluster: ClusterFactory) -> Iterator[tuple[Cluster, Callable[..., Run]]]:  # noqa: F811
    """A running 3-node cluster and a `concord` runner pointed at all its nodes."""
    c = cluster(3)
    endpoints = ",".join(node.client for node in c.nodes.values())

    def concord(*args: str, **kw: object) -> Run:
        return run_cli(*args, endpoints=endpoints, **kw)  # type: ignore[arg-type]

    yield c, concord
