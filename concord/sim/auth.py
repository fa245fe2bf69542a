"""
The simulator with auth on (`--auth`): the real state machine with its auth tables, set
up through the log, every workload write carrying a token, and a revocation program.

Pure and deterministic: the tokens are fixed credentials (the secret's hash only, as
the log carries), not drawn from `secrets`.

- `KvAuthAdapter` is `KvAdapter` whose writes carry the workload's editor token.
- `AuthRun` proposes the setup (bootstrap admin, the workload's editor token, the
  revokee's token) before the workload starts, then writes the revokee's key through
  whichever node leads, revokes the revokee once one of its writes is acknowledged, and
  keeps writing with it across leader changes and crashes. Checked at the end on every
  live replica: the revocation is applied, and no revokee write applied after it (the
  key's mod_revision is below the revoking entry's index). Auth state crosses snapshots
  and restarts like every record: the checker's state-machine safety covers it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from concord.auth.state import TOKEN_PREFIX
from concord.auth.tokens import Credential
from concord.kv import KvStateMachine, encode_command
from concord.node.driver import ReplyStatus
from concord.sim.checks import Violation
from concord.sim.machine import KvAdapter

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation

__all__ = ["AuthRun", "KvAuthAdapter"]


def _credential(token_id: str, secret: str) -> Credential:
    return Credential(token_id, hashlib.sha256(secret.encode()).digest())


ADMIN: Final = _credential("00000000000000a1", "sim-admin")
WRITER: Final = _credential("00000000000000e1", "sim-writer")
REVOKEE: Final = _credential("00000000000000f1", "sim-revokee")
REVOKEE_KEY: Final = "__revokee__"


class KvAuthAdapter(KvAdapter):
    """KvAdapter whose writes carry the workload's token (module docstring)."""

    name = "kv-auth"

    credential = WRITER


def setup_commands() -> list[bytes]:
    """Bootstrap the admin, then the workload's and the revokee's editor tokens."""
    commands = [encode_command("auth_bootstrap", {"id": ADMIN.token_id, "hash": ADMIN.secret_hash})]
    for cred in (WRITER, REVOKEE):
        commands.append(encode_command("token_put", {
            "id": cred.token_id, "hash": cred.secret_hash, "role": "editor", "tenant": None},
            auth=ADMIN))
    return commands


class AuthRun:
    """The setup and the revocation program of one simulation (module docstring)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._setup = setup_commands()
        self._setup_rid: int | None = None
        self._setup_at = 0
        self._then: Callable[[], None] = lambda: None
        self._revoke_rid: int | None = None
        self._revokee_acked = False
        self._writes = 0

    def start(self, then: Callable[[], None]) -> None:
        """Propose the setup; call `then` (start the workload) once it is applied."""
        self._then = then
        self.sim.loop.after(0, self._propose_setup)

    def _propose_setup(self) -> None:
        sim = self.sim
        results = sim._control_results
        if self._setup_rid is not None and results.get(self._setup_rid) is ReplyStatus.OK:
            sim.trace("auth setup applied")
            self._then()
            sim.loop.after(200, self._revokee_write)
            return
        leader = sim.leader()
        # Propose again when the last round was answered without OK or is overdue (its
        # reply lost with a crashed leader). Re-applying is harmless: a second bootstrap
        # or token_put is refused at apply and changes nothing.
        overdue = sim.loop.now >= self._setup_at + 500
        if leader is not None and leader.driver is not None and (
                self._setup_rid is None or self._setup_rid in results or overdue):
            for data in self._setup:  # in order; the last one's OK means all applied
                self._setup_rid = sim._control_request("auth setup")
                leader.driver.submit_write(self._setup_rid, data, prompt_commit=True)
            self._setup_at = sim.loop.now
            leader.process()
        sim.loop.after(50, self._propose_setup)

    def _revokee_write(self) -> None:
        sim = self.sim
        if sim.loop.now >= sim.config.duration_ms - 100:
            return
        leader = sim.leader()
        if leader is not None and leader.driver is not None:
            self._writes += 1
            rid = sim._control_request("revokee write")
            data = encode_command("put", {"key": REVOKEE_KEY, "value": self._writes}, auth=REVOKEE)
            leader.driver.submit_write(rid, data)
            if self._revoke_rid is None and self._writes >= 3:
                self._revoke_rid = sim._control_request("revoke")
                leader.driver.submit_write(self._revoke_rid, encode_command(
                    "token_revoke", {"token_id": REVOKEE.token_id}, auth=ADMIN),
                    prompt_commit=True)  # as the node proposes auth changes
            leader.process()
        sim.loop.after(sim.nemesis_rng.randint(20, 120), self._revokee_write)

    def check(self) -> None:
        """The revocation holds on every live replica (module docstring)."""
        sim = self.sim
        if self._revoke_rid is None:
            return  # the run ended before the program revoked (short runs)
        revoked_on = 0
        for node in sim.nodes.values():
            machine = node.machine
            if not isinstance(machine, KvStateMachine) or not node.alive:
                continue
            token = machine.auth.tokens.get(REVOKEE.token_id)
            record = next((r for r in machine.system_records()
                           if r.key == TOKEN_PREFIX + REVOKEE.token_id), None)
            if token is None or record is None or not token.revoked_ms:
                continue  # not applied that far here: nor anything after it
            revoked_on += 1
            written = machine.get_record(REVOKEE_KEY)
            if written is not None and written.mod_revision > record.mod_revision:
                sim.checker.violations.append(Violation(
                    "auth_revocation", sim.loop.now,
                    f"{node.id}: a write of the revoked token applied at index "
                    f"{written.mod_revision}, after its revocation at {record.mod_revision}"))
        if revoked_on == 0 and sim._control_results.get(self._revoke_rid) is ReplyStatus.OK:
            sim.checker.violations.append(Violation(
                "auth_revocation", sim.loop.now, "an acknowledged revocation is applied nowhere"))
