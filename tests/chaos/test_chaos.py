"""Short chaos runs against real node processes (python -m concord.chaos)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from concord.chaos.procs import ROOT
from concord.chaos.run import ChaosOptions, run_chaos


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_short_run_finds_no_violation_when_the_build_is_sound() -> None:
    """20 s, 3 nodes, every fault kind: writes acknowledged, every check passes, nothing left."""
    report = run_chaos(ChaosOptions(nodes=3, duration_s=20.0, seed=20261121))
    print(report.render())
    assert [] == report.violations
    assert [] == report.errors
    assert ([], []) == (report.leftover_pids, report.leftover_segments)
    assert report.ops[("put", "ok")] > 0
    assert report.linearizability is not None and report.linearizability.keys
    assert report.logs is not None and report.logs.checked > 0
    assert sum(report.faults.values()) > 0
    assert report.lock is not None and report.lock.checked > 0  # holds of the lock recipe
    assert report.faults["holders"] > 0  # lock holders SIGKILLed
    assert report.counter is not None and report.counter.checked > 0  # acknowledged increments


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_short_run_works_with_its_bootstrap_token_when_auth_is_on() -> None:
    """--auth: every request of the run (clients, status poller, nemeses, lock holders,
    incrementers) carries the nodes' bootstrap token, so writes, holds and increments succeed."""
    report = run_chaos(ChaosOptions(nodes=3, duration_s=15.0, seed=16, auth=True))
    print(report.render())
    assert [] == report.violations
    assert [] == report.errors
    assert ([], []) == (report.leftover_pids, report.leftover_segments)
    assert report.ops[("put", "ok")] > 0
    assert report.ops[("get[strong]", "ok")] > 0
    assert report.leader_changes + sum(report.faults.values()) > 0  # the poller and nemeses talked
    assert report.lock is not None and report.lock.checked > 0
    assert report.counter is not None and report.counter.checked > 0
    assert report.options.replay_command().endswith("--seed 16 --auth")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_short_run_reports_a_violation_when_leader_reads_skip_the_leader_check() -> None:
    """The deliberately broken build (faults.unsafe_leader_reads): stale reads are caught."""
    report = run_chaos(ChaosOptions(nodes=3, duration_s=20.0, seed=9, unsafe_leader_reads=True))
    print(report.render())
    assert report.linearizability is not None and report.linearizability.violations
    assert not report.ok
    assert "replay: python -m concord.chaos --nodes 3 --duration 20 --seed 9 --unsafe-leader-reads" \
        in report.render()
    assert ([], []) == (report.leftover_pids, report.leftover_segments)
    assert report.workdir is not None  # kept for the post-mortem; removed here
    shutil.rmtree(report.workdir, ignore_errors=True)


def end_tree(proc: subprocess.Popen[str]) -> None:
    """End `proc` and every process under it: SIGTERM (node supervisors then remove their
    shared memory), SIGKILL for any still alive after 10 s. Only this test's own tree."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sigint_ends_every_process_and_prints_the_report_when_sent_mid_run(tmp_path: Path) -> None:
    """SIGINT during a run: the report for what ran is printed and no process survives."""
    proc = subprocess.Popen([sys.executable, "-m", "concord.chaos", "--nodes", "3",
                             "--duration", "600", "--seed", "3", "--dir", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    tree: set[int] = set()
    try:
        assert proc.stdout is not None
        for _ in range(10_000):  # bounded: until the first acknowledged write
            line = proc.stdout.readline()
            seen.append(line)
            if not line or "put: success" in line:
                break
        tree = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # the run did not end (a failure): end everything it started
            end_tree(proc)
    text = "".join(seen) + out
    assert any("put: success" in line for line in seen), text[-3000:]
    assert 0 == proc.returncode, text[-3000:]
    assert "(interrupted)" in text and "verdict: PASS" in text, text[-3000:]
    assert "leftovers:" not in text
    alive = [p for p in tree if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert [] == alive


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_short_run_reports_two_holders_when_the_lock_is_a_plain_put() -> None:
    """The README's broken lock (put, no queue, no lease): the lock check catches it."""
    report = run_chaos(ChaosOptions(nodes=3, duration_s=10.0, seed=11, faults=("holders",),
                                    writers=0, readers=0, lockers=3, unsafe_lock=True))
    print(report.render())
    assert report.lock is not None and report.lock.violations
    assert any("two holders at once" in v for v in report.violations)
    assert ([], []) == (report.leftover_pids, report.leftover_segments)
    assert report.workdir is not None
    shutil.rmtree(report.workdir, ignore_errors=True)
