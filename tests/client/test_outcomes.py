"""Classifying replies into the closed set of outcomes, and error mapping (pure, no sockets)."""

from __future__ import annotations

import pytest

from concord.client.plan import Outcome, classify as _classify, error_from_reply, server_timeout_ms as _server_timeout_ms
from concord.errors import (
    ERROR_CLASSES,
    ConditionFailedError,
    NoLeaderError,
    NotLeaderError,
    RemoteProtocolError,
    RequestTimeoutError,
    ShuttingDownError,
    StorageUnavailableError,
)


def err(code: str, leader: str | None = None) -> dict[str, object]:
    return {"id": 7, "ok": False, "error": code, "message": f"m {code}", "leader": leader}


@pytest.mark.parametrize("code", sorted(ERROR_CLASSES))
def test_error_class_from_table_when_code_known(code: str) -> None:
    """Every wire code maps to its ERROR_CLASSES class with message and request id."""
    exc = error_from_reply(err(code))
    assert ERROR_CLASSES[code] is type(exc)
    assert ("m " + code, 7) == (exc.message, exc.request_id)


def test_leader_hint_kept_when_not_leader() -> None:
    """not_leader carries the leader endpoint; an empty hint counts as none."""
    exc = error_from_reply(err("not_leader", "tcp://h:1"))
    assert isinstance(exc, NotLeaderError) and "tcp://h:1" == exc.leader_hint
    exc = error_from_reply(err("not_leader", ""))
    assert isinstance(exc, NotLeaderError) and None is exc.leader_hint
    exc = error_from_reply(err("not_leader", "10.0.0.2:7400"))
    assert isinstance(exc, NotLeaderError) and "tcp://10.0.0.2:7400" == exc.leader_hint


@pytest.mark.parametrize("reply, outcome, cls", [
    (None, Outcome.TIMEOUT, type(None)),
    ({"id": 7, "ok": True}, Outcome.OK, type(None)),
    (err("not_leader", "tcp://h:1"), Outcome.NOT_LEADER, NotLeaderError),
    (err("no_leader"), Outcome.DROPPED, NoLeaderError),
    (err("shutting_down"), Outcome.DROPPED, ShuttingDownError),
    (err("storage_unavailable"), Outcome.DROPPED, StorageUnavailableError),
    (err("timeout"), Outcome.TIMEOUT, RequestTimeoutError),
    (err("condition_failed"), Outcome.OK, ConditionFailedError),
])
def test_outcome_classified_when_reply_arrives(
    reply: dict[str, object] | None, outcome: Outcome, cls: type
) -> None:
    """Replies fall into OK (answered, maybe with a final error), NOT_LEADER, DROPPED or TIMEOUT."""
    got, error = _classify(reply, 7)
    assert (outcome, cls) == (got, type(error))


def test_remote_protocol_error_raised_when_ok_missing() -> None:
    """A reply map without a boolean ok is a protocol violation."""
    with pytest.raises(RemoteProtocolError):
        _classify({"id": 7}, 7)


def test_server_timeout_below_wait_when_attempt_long_or_short() -> None:
    """The server is asked to answer before the client stops listening (door grace 100 ms)."""
    assert 700 == _server_timeout_ms(1.0)
    assert 250 == _server_timeout_ms(0.4)
    assert 100 == _server_timeout_ms(0.25)  # the default first attempt: the door answers at 200 ms
    assert 80 == _server_timeout_ms(0.2)
    assert 1 == _server_timeout_ms(0.0)
