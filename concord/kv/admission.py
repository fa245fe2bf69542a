"""
Admission at apply: who may apply a command, and whether it fits its tenant's quota.

Once a token exists, every client write must carry a valid credential, checked against
the entry's timestamp (revocation and expiry hold on every replica from the entry on),
with the permission of its role and inside its tenant's keyspace; tenant usage (keys,
bytes, derived from the records) is checked against the tenant's quota. Called by
concord.kv.machine.KvStateMachine for every command; a refusal is the command's error
reply and changes nothing.

Pure and deterministic: no clock (time is the entry's), no IO.
"""

from __future__ import annotations

from collections.abc import Mapping

from concord.auth.commands import AuthCommand
from concord.auth.rules import Perm, common_prefix
from concord.auth.state import AuthState, Principal
from concord.auth.tenants import Usage
from concord.errors import ForbiddenError, QuotaExceededError
from concord.kv.commands import (
    Command,
    CreateIndex,
    Delete,
    DeleteIf,
    DeleteMany,
    DeleteWhere,
    DropIndex,
    Envelope,
    Expire,
    Incr,
    LeaseExpire,
    Put,
    PutIf,
    PutMany,
    Touch,
    TouchMany,
)
from concord.kv.leases import LEASE_COMMANDS
from concord.kv.record import KeyRecord
from concord.kv.scope import record_bytes
from concord.kv.values import pack_value


def admit(
    envelope: Envelope, ts: int, auth: AuthState, usage: Mapping[str, Usage],
    user: Mapping[str, KeyRecord],
) -> Principal | None:
    """
    The principal of a command at entry time `ts`, checked for what the command does.

    Raises:
        UnauthorizedError, ForbiddenError, QuotaExceededError.
    """
    command = envelope.command
    if isinstance(command, (Expire, LeaseExpire)):
        return None  # proposed by the leader only (never a client op)
    if isinstance(command, AuthCommand) and command.op == "auth_bootstrap":
        return None  # apply_auth refuses it once a token exists
    if envelope.auth is None and not auth.active:
        return None
    principal = auth.authenticate(envelope.auth, ts)
    if isinstance(command, AuthCommand):
        principal.check_cluster_admin(command.op)
        return principal
    if isinstance(command, DeleteWhere):
        query = command.query
        within = common_prefix(query.lo, query.hi) if query.lo and query.hi else ""
        prefix = query.prefix or ""
        principal.check_prefix(within if within.startswith(prefix) else prefix, Perm.WRITE)
    elif isinstance(command, (CreateIndex, DropIndex)):
        if principal.tenant is not None:
            raise ForbiddenError("tenant tokens cannot use secondary indexes")
        principal.check_prefix("", Perm.WRITE)
    elif isinstance(command, LEASE_COMMANDS):
        # A lease's expiry or revocation deletes whatever keys hold it: only a token
        # that may write every key may manage leases (never a tenant's).
        if principal.tenant is not None:
            raise ForbiddenError("tenant tokens cannot use leases")
        principal.check_prefix("", Perm.WRITE)
    else:
        keys = _command_keys(command)
        principal.check_stored_keys(keys, Perm.WRITE)
        if principal.tenant is not None:
            check_quota(principal.tenant, command, auth, usage, user)
    return principal


def check_quota(
    tenant: str, command: Command, auth: AuthState, usage: Mapping[str, Usage],
    user: Mapping[str, KeyRecord],
) -> None:
    """Raise QuotaExceededError if `command` would take `tenant` over its quota."""
    quota = auth.tenants.get(tenant)
    if quota is None:
        raise ForbiddenError(f"tenant {tenant!r} does not exist")
    if not (quota.max_keys or quota.max_bytes):
        return
    puts = (command.items if isinstance(command, PutMany)
            else (command.put,) if isinstance(command, PutIf)
            else (command,) if isinstance(command, Put)
            else (Put(command.key, pack_value(command.delta), 0, command.ttl_ms),)
            if isinstance(command, Incr) else ())
    new_keys = new_bytes = 0
    for put in puts:
        old = user.get(put.key)
        size = len(put.key.encode("utf-8")) + len(put.value)
        new_keys += old is None
        new_bytes += size - (0 if old is None else record_bytes(old))
    held = usage.get(tenant, Usage())
    if quota.max_keys and new_keys > 0 and held.keys + new_keys > quota.max_keys:
        raise QuotaExceededError(f"tenant {tenant!r} would hold {held.keys + new_keys} keys, "
                                 f"over its quota of {quota.max_keys}")
    if quota.max_bytes and new_bytes > 0 and held.bytes + new_bytes > quota.max_bytes:
        raise QuotaExceededError(f"tenant {tenant!r} would hold {held.bytes + new_bytes} "
                                 f"bytes, over its quota of {quota.max_bytes}")



def _command_keys(command: Command) -> list[str]:
    """The stored keys a key-naming write command changes (or reads, for its condition)."""
    if isinstance(command, (Put, Delete, Touch, DeleteIf, Incr)):
        return [command.key]
    if isinstance(command, PutIf):
        return [command.put.key]
    if isinstance(command, (PutMany, TouchMany)):
        return [item.key for item in command.items]
    if isinstance(command, DeleteMany):
        return list(command.keys)
    return []
