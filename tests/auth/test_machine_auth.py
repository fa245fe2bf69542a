"""Auth at apply time: every replica decides a write from the log alone, identically."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from concord.auth.tenants import key_prefix
from concord.auth.tokens import Credential, new_token
from concord.kv import KvStateMachine, encode_command, expire_command
from concord.kv.machine import Applied


class Log:
    """Applies commands to several replicas at increasing indexes and timestamps."""

    def __init__(self, replicas: int = 1) -> None:
        self.machines = [KvStateMachine() for _ in range(replicas)]
        self.index = 0
        self.ts_ms = 1_000

    @property
    def sm(self) -> KvStateMachine:
        return self.machines[0]

    def do(self, op: str, args: Mapping[str, object], auth: Credential | None = None) -> dict:  # type: ignore[type-arg]
        self.index += 1
        data = encode_command(op, args, auth=auth)
        results = [m.apply(self.index, self.ts_ms, data) for m in self.machines]
        assert all(r.result == results[0].result for r in results)
        assert len({m.state_hash() for m in self.machines}) == 1
        return dict(results[0].result)

    def refused(self, code: str, op: str, args: Mapping[str, object],
                auth: Credential | None = None) -> None:
        """The write is refused with `code` and changes no data."""
        before = self.sm.data_hash()
        result = self.do(op, args, auth)
        assert code == result.get("error"), result
        assert before == self.sm.data_hash()

    def token(self, role: str, admin: Credential, tenant: str | None = None,
              ttl: float | None = None) -> Credential:
        _, credential = new_token()
        args: dict[str, object] = {"id": credential.token_id, "hash": credential.secret_hash,
                                   "role": role, "tenant": tenant}
        if ttl is not None:
            args["ttl"] = ttl
        result = self.do("token_put", args, admin)
        assert "error" not in result, result
        return credential


def bootstrap(log: Log) -> Credential:
    _, admin = new_token()
    result = log.do("auth_bootstrap", {"id": admin.token_id, "hash": admin.secret_hash})
    assert admin.token_id == result["token_id"]
    return admin


def test_writes_are_open_until_bootstrap_and_need_a_token_after() -> None:
    """No token exists: auth inactive. After bootstrap a write without a token is refused."""
    log = Log()
    assert "error" not in log.do("put", {"key": "a", "value": 1})
    admin = bootstrap(log)
    log.refused("unauthorized", "put", {"key": "a", "value": 2})
    assert "error" not in log.do("put", {"key": "a", "value": 2}, admin)


def test_bootstrap_is_refused_when_a_token_exists() -> None:
    """One shot: a second bootstrap changes nothing."""
    log = Log()
    bootstrap(log)
    _, other = new_token()
    log.refused("forbidden", "auth_bootstrap", {"id": other.token_id, "hash": other.secret_hash})
    assert other.token_id not in log.sm.auth.tokens


def test_wrong_secret_is_unauthorized() -> None:
    log = Log()
    admin = bootstrap(log)
    forged = Credential(admin.token_id, b"\x00" * 32)
    log.refused("unauthorized", "put", {"key": "a", "value": 1}, forged)


def test_viewer_cannot_write_and_editor_cannot_administer() -> None:
    log = Log()
    admin = bootstrap(log)
    viewer = log.token("viewer", admin)
    editor = log.token("editor", admin)
    log.refused("forbidden", "put", {"key": "a", "value": 1}, viewer)
    assert "error" not in log.do("put", {"key": "a", "value": 1}, editor)
    _, cred = new_token()
    log.refused("forbidden", "token_put", {"id": cred.token_id, "hash": cred.secret_hash,
                                           "role": "admin", "tenant": None}, editor)


def test_revocation_holds_from_its_entry_on() -> None:
    log = Log(replicas=2)
    admin = bootstrap(log)
    editor = log.token("editor", admin)
    assert "error" not in log.do("put", {"key": "a", "value": 1}, editor)
    assert {"revoked": True, "revision": log.index + 1} == log.do(
        "token_revoke", {"token_id": editor.token_id}, admin)
    log.refused("unauthorized", "put", {"key": "a", "value": 2}, editor)


def test_token_expires_at_entry_time() -> None:
    """Expiry is decided by the entry's leader timestamp, like TTLs."""
    log = Log()
    admin = bootstrap(log)
    editor = log.token("editor", admin, ttl=5)
    log.ts_ms += 4_999
    assert "error" not in log.do("put", {"key": "a", "value": 1}, editor)
    log.ts_ms += 1
    log.refused("unauthorized", "put", {"key": "a", "value": 2}, editor)


def test_custom_role_allows_its_prefix_and_denies_the_rest() -> None:
    log = Log()
    admin = bootstrap(log)
    log.do("role_put", {"name": "flags", "rules": [["feature:*", "write", "allow"],
                                                    ["feature:locked", "write", "deny"]]}, admin)
    flags = log.token("flags", admin)
    assert "error" not in log.do("put", {"key": "feature:x", "value": 1}, flags)
    log.refused("forbidden", "put", {"key": "other", "value": 1}, flags)
    log.refused("forbidden", "put", {"key": "feature:locked", "value": 1}, flags)
    # Bulk ops are all or nothing.
    log.refused("forbidden", "put_many", {"items": [["feature:y", 1], ["other", 2]]}, flags)
    assert log.sm.get_record("feature:y") is None
    # delete_where needs the whole range: feature:locked lies inside "feature:".
    log.refused("forbidden", "delete_where", {"prefix": "feature:"}, flags)


def test_tenant_writes_land_in_its_keyspace_and_delete_where_stays_inside() -> None:
    log = Log()
    admin = bootstrap(log)
    log.do("tenant_put", {"name": "blue"}, admin)
    log.do("tenant_put", {"name": "red"}, admin)
    blue = log.token("editor", admin, tenant="blue")
    red = log.token("editor", admin, tenant="red")
    blue_key, red_key = key_prefix("blue") + "k", key_prefix("red") + "k"
    assert "error" not in log.do("put", {"key": blue_key, "value": 1}, blue)
    assert "error" not in log.do("put", {"key": red_key, "value": 2}, red)
    # A tenant token naming a key outside its tenant (a forged command) is refused.
    log.refused("forbidden", "put", {"key": red_key, "value": 3}, blue)
    log.refused("forbidden", "put", {"key": "root", "value": 3}, blue)
    assert {"deleted": 1, "revision": log.index + 1} == log.do(
        "delete_where", {"prefix": ""}, blue)
    assert log.sm.get_record(red_key) is not None


def test_quota_is_checked_at_apply_identically_on_every_replica() -> None:
    """quota_exceeded, exceeded by 0, the same on every replica; deletes free room."""
    log = Log(replicas=3)
    admin = bootstrap(log)
    log.do("tenant_put", {"name": "t", "max_keys": 2, "max_bytes": 1000}, admin)
    cred = log.token("editor", admin, tenant="t")
    p = key_prefix("t")
    assert "error" not in log.do("put", {"key": p + "a", "value": 1}, cred)
    assert "error" not in log.do("put", {"key": p + "a", "value": 2}, cred)  # overwrite: no new key
    assert "error" not in log.do("put", {"key": p + "b", "value": 1}, cred)
    log.refused("quota_exceeded", "put", {"key": p + "c", "value": 1}, cred)
    log.refused("quota_exceeded", "put_many", {"items": [[p + "a", 1], [p + "d", 1]]}, cred)
    assert 2 == log.sm.usage["t"].keys
    log.do("delete", {"key": p + "a"}, cred)
    assert "error" not in log.do("put", {"key": p + "c", "value": 1}, cred)
    log.refused("quota_exceeded", "put", {"key": p + "c", "value": "x" * 2000, "compress": False}, cred)


def test_auth_state_and_usage_survive_snapshot_and_restore() -> None:
    log = Log()
    admin = bootstrap(log)
    log.do("tenant_put", {"name": "t", "max_keys": 1}, admin)
    cred = log.token("editor", admin, tenant="t")
    log.do("put", {"key": key_prefix("t") + "a", "value": 1}, cred)
    log.do("token_revoke", {"token_id": admin.token_id}, admin)
    restored = KvStateMachine()
    restored.restore(log.sm.snapshot())
    assert log.sm.state_hash() == restored.state_hash()
    assert log.sm.usage == restored.usage
    assert log.sm.auth.tokens == restored.auth.tokens
    assert log.sm.auth.tenants == restored.auth.tenants
    log.machines.append(restored)
    log.refused("unauthorized", "put", {"key": "x", "value": 1}, admin)
    log.refused("quota_exceeded", "put", {"key": key_prefix("t") + "b", "value": 1}, cred)


def test_expire_needs_no_token() -> None:
    """The leader's expire entries carry no credential and still apply."""
    log = Log()
    admin = bootstrap(log)
    log.do("put", {"key": "a", "value": 1, "ttl": 1}, admin)
    log.ts_ms += 2_000
    log.index += 1
    applied: Applied = log.sm.apply(log.index, log.ts_ms, expire_command(["a"]))
    assert 1 == applied.result["expired"]


def test_role_and_tenant_commands_validate_their_fields() -> None:
    log = Log()
    admin = bootstrap(log)
    log.refused("invalid_request", "role_put", {"name": "admin", "rules": []}, admin)
    with pytest.raises(Exception):
        encode_command("role_put", {"name": "r", "rules": [["a*b", "read", "allow"]]}, auth=admin)
    _, cred = new_token()
    log.refused("invalid_request", "token_put", {"id": cred.token_id, "hash": cred.secret_hash,
                                                 "role": "nosuch", "tenant": None}, admin)
    log.refused("invalid_request", "token_put", {"id": cred.token_id, "hash": cred.secret_hash,
                                                 "role": "viewer", "tenant": "nosuch"}, admin)
