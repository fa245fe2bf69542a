"""`python -m concord.cluster up|status|down` over a copy of conf/cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from concord.client.raw import request
from supervisor import parse_ready_line
from tests.helpers import wait_until
from tests.integration.cluster import DEV_SHM, ROOT, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "concord.cluster", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=None if env is None else {**os.environ, **env})


def dev_cluster(tmp_path: Path) -> Path:
    """A copy of conf/cluster on free ports."""
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
    return folder


def supervisor_pid(folder: Path, name: str) -> int:
    return int((folder / "run" / f"{name}.pid").read_text().split()[0])


@pytest.mark.timeout(120)
def test_dev_cluster_serves_when_brought_up_and_leaves_nothing_when_down(tmp_path: Path) -> None:
    """up starts three nodes, status reports them, down stops every process."""
    folder = dev_cluster(tmp_path)
    pids: list[int] = []
    try:
        started = cli("up", "--dir", str(folder))
        assert 0 == started.returncode, started.stderr
        pids = [supervisor_pid(folder, f"n{i}") for i in (1, 2, 3)]
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


def kill_supervisor(pid: int) -> None:
    """SIGKILL a node's supervisor alone; wait until its children exited (the lifeline)."""
    proc = psutil.Process(pid)
    children = proc.children(recursive=True)
    proc.kill()
    wait_until(lambda: proc.status() == psutil.STATUS_ZOMBIE if proc.is_running() else True,
               10, f"supervisor {pid} still running")
    _, alive = psutil.wait_procs(children, timeout=10)
    assert [] == alive


@pytest.mark.timeout(180)
def test_up_restarts_a_node_when_its_supervisor_crashed(tmp_path: Path) -> None:
    """up after a SIGKILLed supervisor starts that node again: its pid (a zombie nobody
    reaps, or a pid reused by another process) does not count as running."""
    folder = dev_cluster(tmp_path)
    started: list[int] = []
    # A live process that is not a node: the pid file of a crashed node will name it.
    impostor = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)
    try:
        assert 0 == cli("up", "--dir", str(folder)).returncode
        started += [supervisor_pid(folder, f"n{i}") for i in (1, 2, 3)]
        kill_supervisor(started[0])  # the pid may stay a zombie: our child is `cli`
        again = cli("up", "--dir", str(folder))
        assert 0 == again.returncode, again.stderr
        assert "n1: concord ready" in again.stdout and "n2: already running" in again.stdout
        restarted = supervisor_pid(folder, "n1")
        assert restarted != started[0]
        started.append(restarted)
        kill_supervisor(restarted)
        pid_file = folder / "run" / "n1.pid"
        pid_file.write_text(f"{impostor.pid}\n")  # the pid now names another live process
        third = cli("up", "--dir", str(folder))
        assert 0 == third.returncode, third.stderr
        assert "n1: concord ready" in third.stdout, third.stdout
        started.append(supervisor_pid(folder, "n1"))
        assert "n1: running" in cli("status", "--dir", str(folder)).stdout
    finally:
        stopped = cli("down", "--dir", str(folder))
        impostor_alive = impostor.poll() is None
        assert impostor.stdin is not None
        impostor.stdin.close()
        impostor.wait(timeout=10)
    assert 0 == stopped.returncode, stopped.stderr
    assert impostor_alive  # neither up nor down took it for the node
    assert [] == [p for p in started if psutil.pid_exists(p)
                  and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert [] == [n for n in DEV_SHM.iterdir() if any(f"-{p}x" in n.name for p in started)]


@pytest.mark.timeout(180)
def test_status_speaks_with_token_and_server_key_when_auth_and_curve_are_on(tmp_path: Path) -> None:
    """status on an [auth] + CURVE cluster: each config's bootstrap token and client key by
    default; CONCORD_TOKEN / --token as the concord command; a bad token is shown refused."""
    from concord.auth.tokens import new_token
    from concord.net.curve import write_key_pair

    folder = dev_cluster(tmp_path)
    admin, _ = new_token()
    (folder / "admin.token").write_text(admin + "\n")
    os.chmod(folder / "admin.token", 0o600)
    write_key_pair(folder, "clients")
    for config in folder.glob("*.toml"):
        config.write_text(config.read_text() + '\n[auth]\nenabled = true\n'
                          'bootstrap_token_file = "admin.token"\n\n'
                          '[curve]\nclient_secret_key_file = "clients.key"\n')
    pids: list[int] = []
    try:
        started = cli("up", "--dir", str(folder))
        assert 0 == started.returncode, started.stderr
        pids = [supervisor_pid(folder, f"n{i}") for i in (1, 2, 3)]
        wait_until(lambda: "role=leader" in cli("status", "--dir", str(folder)).stdout, 30,
                   lambda: cli("status", "--dir", str(folder)).stdout)
        given = cli("status", "--dir", str(folder), "--token", admin,
                    "--server-key", str(folder / "clients.pub"))
        assert 3 == given.stdout.count("term="), given.stdout
        wrong, _ = new_token()
        refused = cli("status", "--dir", str(folder), env={"CONCORD_TOKEN": wrong})
        assert 3 == refused.stdout.count("(refused: unauthorized:"), refused.stdout
    finally:
        stopped = cli("down", "--dir", str(folder))
    assert 0 == stopped.returncode, stopped.stderr
    assert [] == [p for p in pids if psutil.pid_exists(p)
                  and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
