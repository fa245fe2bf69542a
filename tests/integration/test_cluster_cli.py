"""`python -m concord.cluster up|status|down` over a copy of conf/cluster."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from concord.net.client import request
from supervisor import parse_ready_line
from tests.helpers import wait_until
from tests.integration.cluster import DEV_SHM, ROOT, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "concord.cluster", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_dev_cluster_serves_when_brought_up_and_leaves_nothing_when_down(tmp_path: Path) -> None:
    """up starts three nodes, status reports them, down stops every process."""
    folder = tmp_path / "cluster"
    shutil.copytree(ROOT / "conf" / "cluster", folder, ignore=shutil.ignore_patterns("data", "run"))
    originals: dict[str, int] = {}
    for config in sorted(folder.glob("*.toml")):
        for port in re.findall(r"_port = (\d+)", config.read_text()):
            originals.setdefault(port, 0)
    mapping = dict(zip(originals, free_ports(len(originals))))
    for config in folder.glob("*.toml"):
        config.write_text(re.sub(r"_port = (\d+)", lambda m: f"_port = {mapping[m.group(1)]}",
                                 config.read_text()))
    pids: list[int] = []
    try:
        started = cli("up", "--dir", str(folder))
        assert 0 == started.returncode, started.stderr
        pids = [int((folder / "run" / f"n{i}.pid").read_text()) for i in (1, 2, 3)]
        _, endpoints = parse_ready_line((folder / "run" / "n1.ready").read_text().strip())

        def leader_known() -> bool:
            out = cli("status", "--dir", str(folder)).stdout
            return out.count("running") == 3 and "role=leader" in out

        wait_until(leader_known, 20, lambda: cli("status", "--dir", str(folder)).stdout)
        reply = request(endpoints["client"], {"op": "put", "key": "a", "value": 1})
        if reply.get("error") == "not_leader":
            reply = request(str(reply["leader"]), {"op": "put", "key": "a", "value": 1})
        assert True is reply["ok"]
        assert (folder / "data" / "n1" / "wal").is_dir()
    finally:
        stopped = cli("down", "--dir", str(folder))
    assert 0 == stopped.returncode, stopped.stderr
    assert [] == [p for p in pids if psutil.pid_exists(p)
                  and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert [] == [n for n in DEV_SHM.iterdir()
                  if any(n.name.startswith(f"concord-n{i}-{p}x") for i in (1, 2, 3) for p in pids)]
    assert 1 == cli("status", "--dir", str(folder)).returncode
