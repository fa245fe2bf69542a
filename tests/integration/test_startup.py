"""Start-up and shutdown of `python -m concord.supervisor`: clear failures, clean exits."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from concord.storage.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, RawRecord, read_record
from tests.integration.cluster import (
    BASE_SETTINGS,
    DEV_SHM,
    ROOT,
    MemberPorts,
    NodeProc,
    StartFailed,
    free_ports,
    render_config,
)
from tests.integration.conftest import ClusterFactory
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_supervisor(config: Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "concord.supervisor", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.timeout(60)
def test_startup_stops_with_message_when_config_has_unknown_key(tmp_path: Path) -> None:
    """An unknown key: one line naming it on stderr, exit 2, nothing started."""
    config = tmp_path / "bad.toml"
    config.write_text('[node]\nid = "n1"\nbogus = 1\n')
    result = run_supervisor(config)
    assert 2 == result.returncode
    assert "" == result.stdout
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines)
    assert "node.bogus" in lines[0]


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback TCP port this test holds (listening) until the block ends."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


@pytest.mark.timeout(60)
def test_startup_stops_with_message_when_port_is_in_use(tmp_path: Path) -> None:
    """A fixed client port another process holds: a message naming it, non-zero exit."""
    with held_port() as port:
        config = tmp_path / "n.toml"
        config.write_text(f'[node]\nid = "n1"\ndata_dir = "data"\n[[cluster.members]]\n'
                          f'id = "n1"\nclient_port = {port}\n')
        result = run_supervisor(config)
    assert 0 != result.returncode
    assert "" == result.stdout
    assert f"port {port}" in result.stderr and "already in use" in result.stderr


@pytest.mark.timeout(60)
def test_startup_stops_with_message_when_metrics_port_is_in_use(tmp_path: Path) -> None:
    """[metrics] port held by another process: exit 3 naming metrics.port, nothing started."""
    with held_port() as port:
        config = tmp_path / "n.toml"
        config.write_text(f'[node]\nid = "n1"\ndata_dir = "data"\n[metrics]\nenabled = true\n'
                          f'port = {port}\n')
        result = run_supervisor(config)
    assert 3 == result.returncode
    assert "" == result.stdout
    assert f"metrics.port: port {port} on 127.0.0.1 is already in use" in result.stderr


def _records(path: Path) -> list[RawRecord]:
    data = path.read_bytes()
    out: list[RawRecord] = []
    offset = SEGMENT_HEADER_SIZE
    while offset < len(data):
        record = read_record(data, offset)
        assert isinstance(record, RawRecord), record
        out.append(record)
        offset += RECORD_HEADER_SIZE + len(record.payload)
    return out


@pytest.mark.timeout(90)
def test_startup_stops_naming_file_when_wal_record_is_corrupt(cluster: ClusterFactory) -> None:
    """A byte flipped in a middle WAL record: start-up fails naming the file and offset."""
    c = cluster(1)
    for i in range(20):
        assert True is c.request("n1", {"op": "put", "key": f"k{i}", "value": i})["ok"]
    c.stop()
    node = c.nodes["n1"]
    (segment,) = sorted((node.data_dir / "wal").glob("*.wal"))
    records = _records(segment)
    middle = records[len(records) // 2]
    raw = bytearray(segment.read_bytes())
    raw[middle.offset + RECORD_HEADER_SIZE] ^= 0xFF
    segment.write_bytes(bytes(raw))
    node.launch()
    with pytest.raises(StartFailed) as failed:
        node.wait_ready()
    assert 0 != failed.value.code
    assert str(segment) in failed.value.stderr
    assert f"offset {middle.offset}" in failed.value.stderr


@pytest.mark.timeout(60)
def test_every_process_exits_when_supervisor_gets_sigterm(cluster: ClusterFactory) -> None:
    """SIGTERM: exit 0, every child gone, no /dev/shm segment or ipc folder left."""
    c = cluster(1, read_workers=2)
    node = c.nodes["n1"]
    assert True is c.request("n1", {"op": "put", "key": "a", "value": 1})["ok"]
    node.remember_children()
    assert 5 == len(node.pids) - 1  # writer, raft, 2 readers, door
    status = c.status("n1")
    assert status is not None
    shm = status["shm"]
    assert isinstance(shm, dict)
    assert Path("/dev/shm", str(shm["ctl"])).exists()
    assert 0 == node.terminate()
    assert [] == node.alive_pids()
    assert [] == node.shm_segments()
    assert not Path("/dev/shm", str(shm["ctl"])).exists()
    assert [] == node.ipc_folders()


def leftovers_of(supervisor_pid: int) -> list[str]:
    """/dev/shm segments and temp-dir ipc folders named after a supervisor's pid."""
    tag = f"-{supervisor_pid}x"
    return ([n for n in os.listdir(DEV_SHM) if n.startswith("concord-") and tag in n]
            + [p.name for p in Path(tempfile.gettempdir()).glob(f"concord-*{tag}*")])


@pytest.mark.timeout(60)
def test_children_exit_and_leave_nothing_when_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the supervisor alone: its children exit through the lifeline, and by
    then the last of them removed the node's shm segments and ipc folder."""
    # NB: a node id no other test uses: a start of the same id would sweep the leftovers.
    node = single_node(tmp_path, f"orphan{os.getpid()}")
    node.launch()
    assert node.proc is not None
    supervisor_pid = node.proc.pid
    try:
        node.wait_ready()
        children = [psutil.Process(p) for p in node.pids if p != supervisor_pid]
        assert [] != children and [] != leftovers_of(supervisor_pid)
        psutil.Process(supervisor_pid).kill()
        node.proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert [] == alive
        assert [] == leftovers_of(supervisor_pid)
    finally:
        node.kill_tree()
        for name in leftovers_of(supervisor_pid):
            shutil.rmtree(Path(tempfile.gettempdir()) / name, ignore_errors=True)
            (DEV_SHM / name).unlink(missing_ok=True)


def single_node(tmp_path: Path, node_id: str) -> NodeProc:
    """A one-node config with OS-chosen ports under tmp_path/node_id (not started)."""
    folder = tmp_path / node_id
    folder.mkdir()
    config = folder / "node.toml"
    config.write_text(render_config(node_id, folder / "data", [MemberPorts(node_id, 0, 0, 0)],
                                    BASE_SETTINGS))
    return NodeProc(node_id, config, folder / "data", folder / "node.log")


@pytest.mark.timeout(60)
def test_harness_removes_store_and_ipc_folder_of_a_whole_killed_node(cluster: ClusterFactory) -> None:
    """A tree SIGKILLed at once cleans nothing up: its store and ipc folder are the test
    harness's to remove (concord.chaos.procs `remove_killed_leftovers`), and it does."""
    c = cluster(1)
    node = c.nodes["n1"]
    node.kill_tree()
    # NB: SIGKILLed children are reparented, not reaped here: they end a moment later.
    wait_until(lambda: not node.alive_pids(), 20, lambda: f"alive: {node.alive_pids()}")
    assert node.shm_segments(killed=True) and node.ipc_folders(killed=True)
    node.remove_killed_leftovers()
    assert [] == node.shm_segments(killed=True)
    assert [] == node.ipc_folders(killed=True)


@pytest.mark.timeout(60)
def test_next_node_start_reclaims_leftovers_when_a_whole_node_was_killed(
    tmp_path: Path,
) -> None:
    """SIGKILL of a node's every process at once (no child left to clean up): the next
    start of a node with ANOTHER id on the host removes its segments and ipc folder."""
    dead = single_node(tmp_path, f"dead{os.getpid()}")
    other = single_node(tmp_path, f"next{os.getpid()}")
    dead.launch()
    assert dead.proc is not None
    dead_pid = dead.proc.pid
    try:
        dead.wait_ready()
        assert [] != leftovers_of(dead_pid)
        dead.remember_children()
        tree = [psutil.Process(p) for p in sorted(dead.pids)]
        for proc in tree:  # frozen first: no child may see its lifeline fire and clean up
            proc.suspend()
        dead.kill_tree()
        assert [] != leftovers_of(dead_pid)
        other.launch()
        other.wait_ready()
        assert [] == leftovers_of(dead_pid)
        assert 0 == other.terminate()
    finally:
        other.kill_tree()
        dead.kill_tree()
        for name in leftovers_of(dead_pid):
            shutil.rmtree(Path(tempfile.gettempdir()) / name, ignore_errors=True)
            (DEV_SHM / name).unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_shipped_node_config_runs_when_started_as_is(tmp_path: Path) -> None:
    """conf/node.toml as shipped (data dir in a tmp copy; its well-known ports swapped for
    free ones, never hard-coded in a test): ready line, put/get, SIGTERM."""
    conf = tmp_path / "conf"
    conf.mkdir()
    text = (ROOT / "conf" / "node.toml").read_text()
    for old, new in zip(("7379", "7380", "7381", "7382", "7383"), free_ports(5)):
        text = text.replace(f"port = {old}", f"port = {new}")
    (conf / "node.toml").write_text(text)
    node = NodeProc("node", conf / "node.toml", conf / "data" / "node", tmp_path / "node.log")
    node.launch()
    try:
        endpoints = node.wait_ready()
        assert {"client", "peer", "events", "metrics", "http"} <= set(endpoints)
        from concord.client.raw import request

        def put_ok() -> bool:
            return bool(request(endpoints["client"], {"op": "put", "key": "a", "value": 1})
                        .get("ok"))

        from tests.helpers import wait_until

        wait_until(put_ok, 15, lambda: node.stderr()[-2000:])
        # A leader read needs the lease of the new leader's first heartbeat round.
        wait_until(lambda: request(endpoints["client"], {"op": "get", "key": "a"}).get("value")
                   == 1, 15, "leader read never served")
        assert (conf / "data" / "node" / "wal").is_dir()
        import urllib.request

        with urllib.request.urlopen(endpoints["metrics"], timeout=5) as response:
            assert b"concord_server_is_leader 1.0" in response.read()
    finally:
        code = node.terminate()
    assert 0 == code
    assert [] == node.alive_pids()
    assert [] == node.shm_segments()


@pytest.mark.timeout(60)
def test_second_node_stops_when_data_dir_is_in_use(cluster: ClusterFactory) -> None:
    """Two nodes never share a data dir: the second one exits naming the lock."""
    c = cluster(1)
    first = c.nodes["n1"]
    config = first.config_path.with_name("second.toml")
    text = first.config_path.read_text()
    for key in ("client_port", "peer_port", "events_port"):
        text = text.replace(f"{key} = ", f"{key} = 0 # ", 1)
    config.write_text(text)
    result = run_supervisor(config)
    assert 3 == result.returncode
    assert "in use by another running node" in result.stderr
    assert True is c.request("n1", {"op": "put", "key": "a", "value": 1})["ok"]
