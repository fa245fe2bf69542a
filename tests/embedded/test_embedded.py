"""concord.start(): a node as a child of the application."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil
import pytest

import concord
from concord.errors import EmbeddedNodeError, UnauthorizedError
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


def test_client_and_status_watcher_use_the_config_credentials_when_auth_and_curve_are_on(
        tmp_path: Path) -> None:
    """start(config) of a node with [auth] and a CURVE client endpoint: its client and the
    telemetry status watcher speak with the config's bootstrap token and client key."""
    from concord import telemetry
    from concord.auth.tokens import new_token
    from concord.embedded import _single_node_config
    from concord.net.curve import write_key_pair

    admin, _ = new_token()
    (tmp_path / "admin.token").write_text(admin + "\n")
    os.chmod(tmp_path / "admin.token", 0o600)
    write_key_pair(tmp_path, "clients")
    config = tmp_path / "node.toml"
    config.write_text(_single_node_config("node", tmp_path / "data", 1)
                      + '\n[auth]\nenabled = true\nbootstrap_token_file = "admin.token"\n'
                      + '\n[curve]\nclient_secret_key_file = "clients.key"\n')
    seen: list[Mapping[str, object]] = []
    telemetry.attach("test-auth", "concord.node.status", lambda e, m, md: seen.append(md))
    try:
        with concord.start(config, set_default=False, status_interval_s=0.2) as node:
            def bootstrapped() -> bool:
                # NB: every request is unauthorized until the leader applied the token.
                try:
                    return "admin" == node.client.whoami()["role"]
                except UnauthorizedError:
                    return False

            wait_until(bootstrapped, 20, "the bootstrap token is never accepted")
            node.client.put("k", 1)
            assert 1 == node.client.get("k", consistency="strong")
            wait_until(lambda: any(md.get("role") == "leader" for md in seen), 20,
                       lambda: f"status events {seen[-3:]}")
    finally:
        telemetry.detach("test-auth")
