"""
`python -m concord.cluster up|status|down|reset [--dir DIR]`: a local dev cluster.

DIR defaults to `conf/cluster` when the current directory has it (a checkout), else to
`~/.concord/cluster`, where `up` first writes n1.toml..n3.toml (the same three nodes as
conf/cluster: client ports 7401-7403, peer 7501-7503, events 7601-7603), so the command
works from any directory after `pip install`. `reset` stops the nodes and deletes their
data and run files (a fresh, empty cluster at the next `up`).

`up` starts one `python -m concord.supervisor --config <dir>/<name>.toml` per TOML file
in the folder (n1.toml, n2.toml, n3.toml for conf/cluster), each in the background in its
own session, and waits for every ready line. Run files go to `<dir>/run/`:

    <name>.pid     the supervisor's pid and start time: "<pid> <create_time>\n"
                   (create_time as psutil reports it, seconds since the epoch)
    <name>.ready   its ready line (client, peer and events endpoints)
    <name>.log     its stderr (every process of that node logs there)

A node counts as running only if the process of its pid file is that node's supervisor:
alive and not a zombie, started at the recorded time, running `concord.supervisor` with
that node's config. A crashed node (its pid gone, a zombie nobody reaped, or the pid
reused by another process) is started again by `up`; `down` never signals a process
that is not the node's supervisor.

`status` prints one line per node (running or not, role, term, leader, applied index) and
exits 0 if every node runs. On a cluster with auth or CURVE it sends `--token` /
`CONCORD_TOKEN` and `--server-key` / `CONCORD_SERVER_KEY` (concord.credentials, as
the `concord` command), by default the token of each node config's [auth]
bootstrap_token_file / bootstrap_token_env and the public key of its [curve]
client_secret_key_file; `down` sends SIGTERM to each supervisor it started (by the
pid in its pid file), waits, then SIGKILL, and removes the pid files. Exit codes: 0 ok,
1 a node failed to start / is not running, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from concord import credentials
from concord.errors import ConcordError, ConfigError
from concord.client.raw import request
from concord.net.curve import CurveClient
import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from supervisor import parse_ready_line

__all__ = ["down", "main", "reset", "status", "up", "write_default_configs"]

DEFAULT_DIR = "conf/cluster"
#: Where `up` writes the three node configs when there is no conf/cluster here.
HOME_DIR = Path("~/.concord/cluster")

_NODE_TEMPLATE = """# Concord: node {id} of a local three-node cluster (written by python -m concord.cluster)
[node]
id = "{id}"
data_dir = "data/{id}"
{members}"""
_MEMBER_TEMPLATE = """
[[cluster.members]]
id = "n{i}"
host = "127.0.0.1"
client_port = {client}
peer_port = {peer}
events_port = {events}
"""


def write_default_configs(folder: Path) -> None:
    """n1.toml..n3.toml of the local three-node cluster into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    members = "".join(_MEMBER_TEMPLATE.format(i=i, client=7400 + i, peer=7500 + i, events=7600 + i)
                      for i in (1, 2, 3))
    for i in (1, 2, 3):
        (folder / f"n{i}.toml").write_text(_NODE_TEMPLATE.format(id=f"n{i}", members=members))


def _run_dir(folder: Path) -> Path:
    return folder / "run"


def _configs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


#: Tolerance when comparing start times (psutil derives them from clock ticks since boot).
_CREATE_TIME_SLACK_S = 0.5


def _write_pid(path: Path, pid: int) -> None:
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0  # already gone: the identity check will say so
    path.write_text(f"{pid} {created:.3f}\n")


def _supervisor(run: Path, config: Path) -> psutil.Process | None:
    """
    The running supervisor of `config`'s node per its pid file, or None: no pid file,
    the process gone or a zombie, or its pid now names another process (module
    docstring).
    """
    try:
        fields = (run / f"{config.stem}.pid").read_text().split()
        pid = int(fields[0])
        created = float(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        if created is not None and abs(proc.create_time() - created) > _CREATE_TIME_SLACK_S:
            return None
        cmdline = proc.cmdline()
    except psutil.Error:  # gone, a zombie, or not ours to inspect: not this node
        return None
    if "concord.supervisor" not in cmdline or str(config.resolve()) not in cmdline:
        return None
    return proc


def _reap(pid: int) -> None:
    """Collect a zombie if it is a child of this process (else its parent must)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def up(folder: Path, timeout_s: float = 30.0) -> int:
    """Start every node of `folder` that is not running; wait for the ready lines."""
    run = _run_dir(folder)
    run.mkdir(exist_ok=True)
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    for config in _configs(folder):
        name = config.stem
        running = _supervisor(run, config)
        if running is not None:
            print(f"{name}: already running pid={running.pid}")
            continue
        (run / f"{name}.ready").unlink(missing_ok=True)
        with open(run / f"{name}.ready", "wb") as out, open(run / f"{name}.log", "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "concord.supervisor", "--config", str(config.resolve())],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        _write_pid(run / f"{name}.pid", proc.pid)
        started.append((name, proc))
    deadline = time.monotonic() + timeout_s
    failed = 0
    for name, proc in started:
        ready = run / f"{name}.ready"
        while True:
            text = ready.read_text()
            if text.endswith("\n"):
                print(f"{name}: {text.strip()}")
                break
            if proc.poll() is not None:
                print(f"{name}: exited with code {proc.returncode} before ready; "
                      f"see {run / (name + '.log')}", file=sys.stderr)
                failed += 1
                break
            if time.monotonic() > deadline:
                print(f"{name}: not ready within {timeout_s}s; see {run / (name + '.log')}",
                      file=sys.stderr)
                failed += 1
                break
            time.sleep(0.05)
    return 1 if failed else 0


def _status_request(config: Path, token: str | None,
                    server_key: str | None) -> tuple[dict[str, object], CurveClient | None]:
    """
    `status` and its CURVE settings: --token / CONCORD_TOKEN and --server-key /
    CONCORD_SERVER_KEY, else the node config's bootstrap token and client key.
    """
    if token is None or server_key is None:
        default_token, default_key = credentials.node_credentials(config)
        token, server_key = token or default_token, server_key or default_key
    msg: dict[str, object] = {"op": "status"}
    if token is not None:
        msg["token"] = token
    return msg, CurveClient.of(server_key)


def status(folder: Path, token: str | None = None, server_key: str | None = None) -> int:
    """
    One line per node; 0 if every node runs. `token` and `server_key` (docs/cli.md "Global
    options") default to each node config's bootstrap token and client key.
    """
    run = _run_dir(folder)
    down_count = 0
    for config in _configs(folder):
        name = config.stem
        running = _supervisor(run, config)
        if running is None:
            print(f"{name}: not running")
            down_count += 1
            continue
        pid = running.pid
        line = ""
        try:
            line = (run / f"{name}.ready").read_text().strip()
        except OSError:
            pass
        if not line:
            print(f"{name}: starting pid={pid}")
            continue
        _, endpoints = parse_ready_line(line)
        msg, curve = _status_request(config, token, server_key)
        try:
            st = request(endpoints["client"], msg, timeout_ms=1000, retries=0, curve=curve)
        except ConcordError as exc:
            print(f"{name}: running pid={pid} client={endpoints['client']} (no answer: {exc})")
            continue
        if st.get("ok") is not True:
            print(f"{name}: running pid={pid} client={endpoints['client']} "
                  f"(refused: {st.get('error')}: {st.get('message')})")
            continue
        print(f"{name}: running pid={pid} client={endpoints['client']} role={st.get('role')} "
              f"term={st.get('term')} leader={st.get('leader')} applied={st.get('applied')}")
    return 1 if down_count else 0


def down(folder: Path, timeout_s: float = 15.0) -> int:
    """SIGTERM every node started by `up`, wait, SIGKILL what remains."""
    run = _run_dir(folder)
    procs: dict[str, psutil.Process] = {}
    for config in _configs(folder):
        running = _supervisor(run, config)
        if running is not None:
            try:
                running.send_signal(signal.SIGTERM)
                procs[config.stem] = running
            except psutil.NoSuchProcess:
                pass
        (run / f"{config.stem}.pid").unlink(missing_ok=True)
    deadline = time.monotonic() + timeout_s
    while procs and time.monotonic() < deadline:
        procs = {n: p for n, p in procs.items() if _still_running(p)}
        time.sleep(0.05)
    for name, proc in procs.items():
        print(f"{name}: did not stop within {timeout_s}s; SIGKILL pid={proc.pid}",
              file=sys.stderr)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # `up` made it a session (group) leader
        except ProcessLookupError:
            pass
    for config in _configs(folder):
        (run / f"{config.stem}.ready").unlink(missing_ok=True)
    print("cluster down")
    return 0


def _still_running(proc: psutil.Process) -> bool:
    """`proc` (checked to be the node's supervisor) has not exited yet."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return bool(proc.is_running())  # NB: is_running also compares create_time
    except psutil.Error:
        return False
    _reap(proc.pid)
    return False


def reset(folder: Path, timeout_s: float = 15.0) -> int:
    """`down`, then delete every node's data dir and run files."""
    down(folder, timeout_s)
    for name in ("data", "run"):
        shutil.rmtree(folder / name, ignore_errors=True)
    print(f"cluster reset: removed {folder / 'data'} and {folder / 'run'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concord.cluster",
                                     description="A local Concord dev cluster.")
    parser.add_argument("command", choices=("up", "status", "down", "reset"))
    parser.add_argument("--dir", default=None,
                        help=f"folder of node TOML files (default {DEFAULT_DIR} if present, "
                             f"else {HOME_DIR})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    credentials.add_options(parser)
    args = parser.parse_args(argv)
    if args.dir is not None:
        folder = Path(args.dir)
    elif Path(DEFAULT_DIR).is_dir():
        folder = Path(DEFAULT_DIR)
    else:
        folder = HOME_DIR.expanduser()
        if args.command == "up" and not _configs(folder):
            write_default_configs(folder)
    if args.command == "reset":
        return reset(folder, args.timeout) if folder.is_dir() else 0
    if not folder.is_dir() or not _configs(folder):
        print(f"concord.cluster: {folder} holds no *.toml node configs", file=sys.stderr)
        return 2
    if args.command == "up":
        return up(folder, args.timeout)
    if args.command == "status":
        try:
            return status(folder, credentials.token(args.token), credentials.server_key(args.server_key))
        except ConfigError as exc:
            print(f"concord.cluster: {exc}", file=sys.stderr)
            return 2
    return down(folder, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
