"""
Proof that the simulator catches bugs: plant a known mistake into a throw-away copy of
the code, run the fixed CI seed set (tests/sim/test_seeds.py) against it, and report the
first seed that caught it and which check fired. The repository is never modified.

    python bench/sim_plants.py [--plants a,b,...] [--workers 2]

Prints one line per plant: `plant=<name> caught=yes seed=<s> nodes=<n> check=<check>`
(or caught=NO after all 500 seeds), plus the seeds run and the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    name: str
    what: str
    path: str
    old: str
    new: str


PLANTS = [
    Plant(
        "commit_prev_term",
        "count replicas to commit an entry from a previous term (Raft Figure 8)",
        "concord/raft/log.py",
        "if max_index > self.committed and self.term_or_zero(max_index) == term:",
        "if max_index > self.committed:",
    ),
    Plant(
        "vote_without_log_check",
        "grant a vote without the log up-to-date check (Raft §5.4.1)",
        "concord/raft/election.py",
        "if can_vote and r.log.is_up_to_date(m.index, m.log_term):",
        "if can_vote:",
    ),
    Plant(
        "ack_before_persist",
        "send append/vote responses before the entries and vote are durable",
        "concord/raft/replication.py",
        "_AFTER_PERSIST_TYPES = frozenset({MT.APPEND_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP})",
        "_AFTER_PERSIST_TYPES: frozenset[MT] = frozenset()",
    ),
    Plant(
        "no_truncate_conflict",
        "follower keeps a conflicting suffix instead of truncating it (Raft §5.3)",
        "concord/raft/log.py",
        "self.append(entries[conflict - (index + 1) :])",
        "self.append([e for e in entries if e.index > self.last_index()])",
    ),
    Plant(
        "commit_beyond_last_new",
        "follower commits up to the leader's commit even past the entries it checked",
        "concord/raft/log.py",
        "self.commit_to(min(committed, last_new))",
        "self.commit_to(min(committed, self.last_index()))",
    ),
    Plant(
        "read_index_no_heartbeat",
        "serve ReadIndex at once, without the heartbeat round (thesis §6.4)",
        "concord/raft/reads.py",
        "if r.tracker.is_singleton() and r.id in r.tracker.config.voters:",
        "if True:",
    ),
    Plant(
        "read_index_before_term_commit",
        "serve ReadIndex before the leader committed an entry of its term (thesis §6.4)",
        "concord/raft/reads.py",
        "    if not r._committed_entry_in_current_term():\n"
        "        r.pending_read_index_messages.append(m)",
        "    if False:\n"
        "        r.pending_read_index_messages.append(m)",
    ),
    Plant(
        "leader_read_without_lease",
        "serve leader reads whenever the node is leader (no lease / quorum check)",
        "concord/node/driver_reads.py",
        "        if now >= d._lease_until_ms:\n",
        "        if False:\n",
    ),
    Plant(
        "lease_renewed_during_transfer",
        "the driver never sees a pending leader transfer: probes sent meanwhile renew the lease",
        "concord/raft/rawnode.py",
        "        return self.raft.lead_transferee\n",
        "        return None\n",
    ),
    Plant(
        "vote_within_lease",
        "followers grant votes while they still hear from a leader (check_quorum lease)",
        "concord/raft/core.py",
        "if not force and in_lease:",
        "if False:",
    ),
    Plant(
        "no_vote_hold_after_restart",
        "a restarted node votes at once, forgetting the lease it granted before the crash",
        "concord/node/driver.py",
        "if self._timer.now_ms() < self._vote_hold_until_ms:",
        "if False:",
    ),
    Plant(
        "read_index_minority",
        "release a ReadIndex round confirmed by fewer than a quorum of heartbeat answers",
        "concord/raft/core.py",
        "if acks is not None and self.tracker.vote_result(acks) == VoteResult.WON:",
        "if acks is not None and len(acks) >= len(self.tracker.config.voters) // 2:",
    ),
    Plant(
        "joint_commit_incoming_only",
        "count an entry committed in a joint configuration by the incoming majority alone",
        "concord/raft/quorum.py",
        "    return min(\n"
        "        majority_committed_index(incoming, acked), "
        "majority_committed_index(outgoing, acked)\n"
        "    )",
        "    return majority_committed_index(incoming, acked)",
    ),
    Plant(
        "snapshot_keeps_conflicting_suffix",
        "a snapshot install keeps the follower's (conflicting) entries after its index",
        "concord/raft/storage.py",
        "        self._ents = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)]",
        "        self._ents = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)] + [\n"
        "            e for e in self._ents if e.index > snapshot.meta.index\n"
        "        ]",
    ),
    Plant(
        "vote_before_persist",
        "answer a vote before the hard state that records it is durable",
        "concord/raft/replication.py",
        "_AFTER_PERSIST_TYPES = frozenset({MT.APPEND_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP})",
        "_AFTER_PERSIST_TYPES = frozenset({MT.APPEND_RESP, MT.PRE_VOTE_RESP})",
    ),
    Plant(
        "session_retry_reapplied",
        "apply a retried session write again instead of answering its first result",
        "concord/kv/sessions.py",
        "        if cached is not None:\n            return dict(cached)",
        "        if False:\n            return dict(cached)",
    ),
    Plant(
        "session_keeps_latest_only",
        "a session keeps only its latest result (min_seq ignored): a pipelined retry of an "
        "earlier write is refused although it was applied",
        "concord/kv/machine.py",
        "        min_seq = seq if envelope.min_seq is None else envelope.min_seq",
        "        min_seq = seq",
    ),
    Plant(
        "read_ignores_ttl",
        "reads return keys whose TTL ran out (expiry not applied to reads)",
        "concord/kv/query.py",
        "    return record.expires_at_ms == 0 or record.expires_at_ms > now_ms",
        "    return True",
    ),
    Plant(
        "version_not_bumped",
        "a put over a live key keeps its version instead of incrementing it",
        "concord/kv/writes.py",
        "            create_revision, version = old.create_revision, old.version + 1",
        "            create_revision, version = old.create_revision, old.version",
    ),
    Plant(
        "shm_resync_backwards",
        "a restarted raft worker republishes shared memory before catching up with it",
        "concord/node/core/node.py",
        "if view.applied_index < max(self.shm_applied, self.replay_until):",
        "if view.applied_index < self.replay_until:",
    ),
    Plant(
        "lease_before_apply",
        "publish the read lease while committed entries are not yet applied to shm",
        "concord/node/core/node.py",
        "if view.applied_term != view.term or view.applied_index < view.commit:",
        "if view.applied_term != view.term:",
    ),
    Plant(
        "kv_lease_revoke_keeps_keys",
        "revoking a lease drops the lease but leaves its keys in place",
        "concord/kv/leases.py",
        "changes = delete(table.remove(command.lease), index, ts, ChangeType.DELETE)",
        "changes = delete(table.remove(command.lease)[:0], index, ts, ChangeType.DELETE)",
    ),
    Plant(
        "kv_lease_expire_ignores_keepalive",
        "a lease_expire entry drops every lease it names, even one kept alive since the proposal",
        "concord/kv/leases.py",
        "if due is None or due.expires_at_ms > ts:",
        "if due is None:",
    ),
    Plant(
        "kv_lease_keepalive_no_extend",
        "a keepalive answers ok but leaves the lease's deadline where it was",
        "concord/kv/leases.py",
        "lease.expires_at_ms = ts + lease.ttl_ms",
        "lease.expires_at_ms = lease.expires_at_ms",
    ),
]

CI_SETS = [(3, 1000, 300), (5, 5000, 200)]


def run_plant(plant: Plant, workers: int) -> str:
    with tempfile.TemporaryDirectory(prefix="concord-plant-") as tmp:
        for package in ("concord", "supervisor"):  # concord imports supervisor
            shutil.copytree(ROOT / package, Path(tmp) / package)
        target = Path(tmp) / plant.path
        text = target.read_text()
        if text.count(plant.old) != 1:
            return f"plant={plant.name} NOT APPLIED (code moved: update the plant)"
        target.write_text(text.replace(plant.old, plant.new))
        env = dict(os.environ, PYTHONPATH=tmp)
        ran = 0
        started = time.monotonic()
        for nodes, start, count in CI_SETS:
            out = subprocess.run(
                [sys.executable, "-m", "concord.sim", "--seeds", str(count),
                 "--start-seed", str(start), "--nodes", str(nodes),
                 "--workers", str(workers), "--max-failures", "1"],
                cwd=tmp, env=env, capture_output=True, text=True, check=False,
            )
            summary = [ln for ln in out.stdout.splitlines() if ln.startswith("seeds=")]
            ran += int(summary[0].split()[0].split("=")[1]) if summary else 0
            failed = [ln for ln in out.stdout.splitlines() if "FAILED" in ln]
            if failed:
                line = failed[0]
                seed = line.split()[0].split("=")[1]
                check = line.split("FAILED: ")[1].split(" at ")[0].split(":")[0]
                return (f"plant={plant.name} caught=yes seed={seed} nodes={nodes} "
                        f"check={check} seeds_run={ran} "
                        f"wall_s={time.monotonic() - started:.0f}\n    {line[:300]}")
        return (f"plant={plant.name} caught=NO seeds_run={ran} "
                f"wall_s={time.monotonic() - started:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    chosen = [p for p in PLANTS if not args.plants or p.name in args.plants.split(",")]
    for plant in chosen:
        print(run_plant(plant, args.workers), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
