"""The fixed CI seed set: every seed must pass every check (nightly runs draw new seeds)."""

from __future__ import annotations

import multiprocessing

import pytest

from concord.sim.__main__ import replay_command, run_one
from concord.sim.cluster import DEFAULT_DURATION_MS

#: (nodes, seeds): 300 three-node and 200 five-node runs, all fault kinds and buggify on.
CI_SEEDS: tuple[tuple[int, range], ...] = ((3, range(1000, 1300)), (5, range(5000, 5200)))


def ci_jobs() -> list[tuple[int, int, int, bool, bool]]:
    return [(seed, nodes, DEFAULT_DURATION_MS, True, False) for nodes, seeds in CI_SEEDS for seed in seeds]


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ci_seeds_pass_all_checks_when_run_with_faults_and_buggify() -> None:
    """500 fixed seeds (3 and 5 nodes): no safety, linearizability or progress violation."""
    jobs = ci_jobs()
    assert 500 <= len(jobs)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(run_one, jobs, chunksize=8)
    failures = [
        f"seed={seed} nodes={nodes} buggify=on: {problems[0]}\n"
        f"  replay: {replay_command(seed, nodes, DEFAULT_DURATION_MS, True)}"
        for seed, nodes, problems, _, _, _ in results
        if problems
    ]
    assert [] == failures
