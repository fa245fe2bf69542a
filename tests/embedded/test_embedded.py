"""concord.start(): a node as a child of the application."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import concord
from concord.errors import EmbeddedNodeError
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


def _node_shm(node_id: str, pid: int) -> list[str]:
    """The segments of one node's store: concord-<node>-<supervisor pid>x<hex>-..."""
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"concord-{node_id}-{pid}x")]


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_module_api_reaches_node_when_started_embedded(tmp_path: Path) -> None:
    """start() serves the module-level API; stop() leaves no process and no segment."""
    with concord.start(data_dir=tmp_path / "data") as node:
        assert node.running()
        assert [] != _node_shm(node.node_id, node.pid)
        tree = _tree(node.pid)
        revision = concord.put("flags/dark-mode", True, ttl=60)
        assert True is concord.get("flags/dark-mode", consistency="strong")
        assert revision == node.client.get("flags/dark-mode", meta=True).revision
    assert [] == [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert [] == _node_shm(node.node_id, node.pid)
    with pytest.raises(concord.errors.ConcordError):
        concord.get("flags/dark-mode")  # no default client any more


def test_data_survives_when_restarted_on_same_data_dir(tmp_path: Path) -> None:
    """A second start() on the same data dir sees what the first one acknowledged."""
    with concord.start(data_dir=tmp_path / "data", set_default=False) as node:
        node.client.put_many([("a", 1), ("b", 2)])
    with concord.start(data_dir=tmp_path / "data", set_default=False) as node:
        assert {"a": 1, "b": 2} == node.client.get_many(["a", "b"], consistency="strong")


def test_start_fails_clearly_when_config_is_bad(tmp_path: Path) -> None:
    """A bad config stops start() with the node's own message naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text('[node]\nid = "n1"\nbogus = 1\n')
    with pytest.raises(EmbeddedNodeError, match="bogus"):
        concord.start(config, set_default=False)


def test_node_exits_when_application_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the application that started the node stops the node: no orphan, no
    segment, and nothing left in the temp folder (no generated config file)."""
    tmp = tmp_path / "tmp"  # the application's and the node's temp folder
    tmp.mkdir()
    script = (
        "import sys, concord\n"
        f"node = concord.start(data_dir={str(tmp_path / 'data')!r}, set_default=False)\n"
        "print(node.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    app = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    try:
        assert app.stdout is not None
        node_pid = int(app.stdout.readline())
        tree = _tree(node_pid)
        app.send_signal(signal.SIGKILL)
        app.wait()

        def all_gone() -> bool:
            return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)

        wait_until(all_gone, 30, describe=lambda: str([p.pid for p in tree if p.is_running()]))
        assert [] == _node_shm("node", node_pid)
        assert [] == os.listdir(tmp)
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()
        if app.stdin is not None:
            app.stdin.close()
        if app.stdout is not None:
            app.stdout.close()
