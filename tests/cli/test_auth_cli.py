"""`concord auth|token|role|tenant|quota` as a subprocess against a real 3-node cluster with auth."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.conftest import ClusterFactory, Run, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ok(run: Run) -> Run:
    assert 0 == run.code, run
    return run


@pytest.mark.timeout(300)
def test_auth_commands_round_trip_in_every_format(cluster: ClusterFactory, tmp_path: Path) -> None:  # noqa: F811
    """generate -> bootstrap file -> tenants, roles, tokens, quotas; refusals exit 1 in one line."""
    token = ok(run_cli("auth", "generate")).out.strip()
    assert token.startswith("sk_concord_")
    path = tmp_path / "admin.token"
    path.write_text(token)
    os.chmod(path, 0o600)
    c = cluster(3, start=False, auth={"enabled": True, "bootstrap_token_file": str(path)})
    c.token = token
    c.start()
    endpoints = ",".join(node.client for node in c.nodes.values())

    def concord(*args: str, env: dict[str, str] | None = None) -> Run:
        return run_cli(*args, endpoints=endpoints, env={"CONCORD_TOKEN": token, **(env or {})})

    assert "admin" == ok(concord("-w", "json", "auth", "whoami")).json()["role"]  # type: ignore[index]
    ok(concord("tenant", "create", "team", "--max-keys", "2"))
    ok(concord("role", "put", "flags", "--rule", "feature:*,write,allow"))
    assert "feature:*,write,allow" in ok(concord("-w", "table", "role", "list")).out
    created = ok(concord("-w", "json", "token", "create", "editor", "--tenant", "team")).json()
    assert isinstance(created, dict)
    team_token = str(created["token"])
    simple = ok(concord("token", "create", "flags")).out.strip()
    assert simple.startswith("sk_concord_")  # simple prints the secret alone
    listed = ok(concord("-w", "json", "token", "list")).json()
    assert isinstance(listed, list) and 3 == len(listed)
    assert all("token" not in row for row in listed)
    team = {"CONCORD_TOKEN": team_token, "CONCORD_NS": "team"}
    ok(concord("put", "a", "1", env=team))
    ok(concord("put", "b", "2", env=team))
    over = concord("put", "c", "3", env=team)
    assert 1 == over.code and "quota" in over.err and over.err.count("\n") == 1
    ok(concord("quota", "set", "team", "--max-keys", "3"))
    usage = ok(concord("-w", "json", "quota", "get", "team")).json()
    assert isinstance(usage, dict) and (3, 2) == (usage["max_keys"], usage["keys"])
    ok(concord("put", "c", "3", env=team))
    assert "3\n" == ok(concord("get", "c", "-c", "strong", env=team)).out
    ok(concord("token", "revoke", str(created["token_id"])))
    refused = concord("get", "c", "-c", "strong", env=team)
    assert 1 == refused.code and "revoked" in refused.err
    anonymous = run_cli("get", "c", endpoints=endpoints)
    assert 1 == anonymous.code and "authentication is required" in anonymous.err
