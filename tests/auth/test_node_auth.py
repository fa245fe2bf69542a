"""The raft worker's request checks (concord.node.auth.NodeAuth): the fast paths refuse
exactly what the slow ones do, and a token parsed once per request is still checked
against the tables of the moment."""

from __future__ import annotations

import pytest

from concord.auth.rules import Effect, Perm, Rule, allows_key
from concord.auth.state import Principal
from concord.auth.tokens import Credential, new_token
from concord.config import AuthSection
from concord.errors import ForbiddenError, UnauthorizedError
from concord.kv import KvStateMachine, decode_command, encode_command
from concord.net.wire import decode_request, encode_request
from concord.node.auth import NodeAuth


def _node_auth() -> tuple[NodeAuth, KvStateMachine, str, Credential]:
    """A NodeAuth over a machine with an admin (bootstrap) and an editor token."""
    kv = KvStateMachine()
    _, admin = new_token()
    kv.apply(1, 1, encode_command("auth_bootstrap", {"id": admin.token_id, "hash": admin.secret_hash}))
    editor, cred = new_token()
    kv.apply(2, 1, encode_command("token_put", {
        "id": cred.token_id, "hash": cred.secret_hash, "role": "editor", "tenant": None,
        "ttl_ms": 0, "description": ""}, auth=admin))
    auth = NodeAuth(AuthSection(enabled=True), kv, lambda: 5, lambda: 0.0)
    return auth, kv, editor, admin


def test_revocation_holds_when_the_same_request_is_checked_again() -> None:
    """The once-per-request parse of a token never skips the table check: revoked is refused."""
    auth, kv, editor, admin = _node_auth()
    request = decode_request(encode_request("put", 1, key="k", value=1, token=editor))
    principal = auth.admit(request)
    assert principal is not None
    command = decode_command(auth.write_command(request, principal))
    token_id = editor.split("_")[2]
    assert Credential(token_id, kv.auth.tokens[token_id].secret_hash) == command.auth
    kv.apply(3, 1, encode_command("token_revoke", {"token_id": token_id}, auth=admin))
    assert kv.auth.tokens[token_id].revoked_ms
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.admit(request)
    other = decode_request(encode_request("put", 1, key="k", value=1, token=editor))
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.admit(other)


def test_root_editor_is_kept_out_of_tenant_keys_when_its_role_grants_every_key() -> None:
    """The fast path of a role that grants every key still refuses tenant keys to a root token."""
    editor = Principal("0" * 16, "editor", (Rule("*", Perm.WRITE, Effect.ALLOW),), None)
    editor.check_keys(["a", "b"], Perm.WRITE)
    with pytest.raises(ForbiddenError, match="tenant keys"):
        editor.check_keys(["a", "\x1fblue\x1fk"], Perm.READ)
    with pytest.raises(ForbiddenError):
        Principal("0" * 16, "viewer", (Rule("*", Perm.READ, Effect.ALLOW),), None).check_keys(
            ["a"], Perm.WRITE)


@pytest.mark.parametrize("key", ["f:", "f:a", "f:secret", "f:secretx", "g:1", "x", ""])
@pytest.mark.parametrize("perm", list(Perm))
def test_allows_key_matches_the_most_specific_rule_when_rules_overlap(key: str, perm: Perm) -> None:
    """allows_key (inlined walk) agrees with a naive most-specific-rule evaluation."""
    rules = (Rule("f:*", Perm.WRITE, Effect.ALLOW), Rule("f:secret", Perm.READ, Effect.DENY),
             Rule("g:*", Perm.READ, Effect.ALLOW), Rule("f:s*", Perm.ADMIN, Effect.ALLOW))

    def naive() -> bool:
        applicable = [r for r in rules if (r.perm >= perm if r.effect is Effect.ALLOW else r.perm <= perm)
                      and (key.startswith(r.pattern[:-1]) if r.pattern.endswith("*") else key == r.pattern)]
        if not applicable:
            return False
        top = max((len(r.pattern.rstrip("*")), 0 if r.pattern.endswith("*") else 1) for r in applicable)
        winners = [r for r in applicable
                   if (len(r.pattern.rstrip("*")), 0 if r.pattern.endswith("*") else 1) == top]
        return all(r.effect is Effect.ALLOW for r in winners)

    assert naive() == allows_key(rules, key, perm)
