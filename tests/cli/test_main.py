"""The CLI's option handling and exit-code table, without a cluster."""

from __future__ import annotations

import pytest

from concord.cli.main import (
    DEFAULT_ENDPOINT,
    EXIT_CHECK_FAILED,
    EXIT_REFUSED,
    EXIT_UNKNOWN,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    Context,
    build_parser,
    exit_code_of,
)
from concord.errors import (
    ConditionFailedError,
    ConfigError,
    CorruptionError,
    NoLeaderError,
    NotFoundError,
    RequestTimeoutError,
    UnknownResultError,
)


def test_context_takes_endpoints_and_token_from_env_when_flags_are_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CONCORD_ENDPOINTS (host:port gets tcp://) and CONCORD_TOKEN; flags win over both."""
    monkeypatch.setenv("CONCORD_ENDPOINTS", "127.0.0.1:1, tcp://127.0.0.1:2")
    monkeypatch.setenv("CONCORD_TOKEN", "t-env")
    ctx = Context(build_parser().parse_args(["get", "k"]))
    assert (["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], "t-env") == (ctx.endpoints, ctx.token)
    ctx = Context(build_parser().parse_args(["-e", "h:3", "--token", "t-flag", "get", "k"]))
    assert (["tcp://h:3"], "t-flag") == (ctx.endpoints, ctx.token)
    assert "t-flag" == ctx.client.token  # the client puts it in every request's `token` field
    ctx.close()


def test_context_uses_the_well_known_endpoint_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """No flag, no env: tcp://127.0.0.1:7379 (conf/node.toml's client port)."""
    monkeypatch.delenv("CONCORD_ENDPOINTS", raising=False)
    monkeypatch.delenv("CONCORD_TOKEN", raising=False)
    ctx = Context(build_parser().parse_args(["get", "k"]))
    assert ([DEFAULT_ENDPOINT], None) == (ctx.endpoints, ctx.token)


@pytest.mark.parametrize(("exc", "code"), [
    (CliError("bad"), EXIT_USAGE),
    (ConfigError("bad config"), EXIT_USAGE),
    (NotFoundError("key 'k' not found"), EXIT_REFUSED),
    (ConditionFailedError("key 'k' exists"), EXIT_REFUSED),
    (RequestTimeoutError("no reply"), EXIT_UNREACHABLE),
    (NoLeaderError("no leader"), EXIT_UNREACHABLE),
    (UnknownResultError("no answer"), EXIT_UNKNOWN),
    (CorruptionError("backup x: SHA-256 mismatch"), EXIT_CHECK_FAILED),
])
def test_exit_code_follows_the_documented_table_when_a_command_fails(exc: BaseException, code: int) -> None:
    """docs/cli.md's exit codes."""
    assert code == exit_code_of(exc)


def test_judge_names_the_diverged_node_when_one_hash_differs_from_the_majority() -> None:
    """check hash's verdicts: the odd one out is DIVERGED; without a majority nobody is ok."""
    from concord.cli.cluster import judge

    rows: list[dict[str, object]] = [
        {"node": "n1", "hash": "aa"}, {"node": "n2", "hash": "bb"}, {"node": "n3", "hash": "aa"}]
    assert ["n2"] == judge(rows)
    assert ["ok", "DIVERGED", "ok"] == [r["verdict"] for r in rows]
    split: list[dict[str, object]] = [
        {"node": "n1", "hash": "aa"}, {"node": "n2", "hash": "bb"}, {"node": "n3", "hash": None}]
    assert ["n1", "n2"] == judge(split)
    assert ["no majority", "no majority"] == [r["verdict"] for r in split[:2]]
