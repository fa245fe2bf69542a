"""concord.node.gc_settings: the raft worker's collector settings after start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from concord.node import gc_settings

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: the settings are process-wide and would change this one's.
_PROBE = """
import gc, json
from concord.node.gc_settings import settle_after_start
kept = [[i] for i in range(1000)]  # start-up's state: lists are tracked containers
before = gc.get_threshold()
frozen = settle_after_start()
young = [o for o in gc.get_objects(0) if o is kept]  # the frozen are in no generation
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                  "count": gc.get_freeze_count(), "kept_tracked": len(young),
                  "enabled": gc.isenabled()}))
"""


@pytest.mark.slow
def test_settle_after_start_freezes_and_raises_thresholds() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    got = json.loads(out.stdout)
    assert got["before"] == [700, 10, 10]  # CPython's defaults: the probe starts clean
    assert got["after"] == [gc_settings.GEN0_THRESHOLD, gc_settings.GEN1_THRESHOLD,
                            gc_settings.GEN2_THRESHOLD]
    assert got["frozen"] == got["count"] >= 1000  # at least the probe's own lists
    assert got["kept_tracked"] == 0
    assert got["enabled"] is True  # collection still runs for what comes later
