"""The exception tree: wire codes and pickling across processes."""

from __future__ import annotations

import pickle

import pytest

from concord import errors


def _all_error_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [errors.ConcordError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_error_round_trips_when_pickled(cls: type[BaseException]) -> None:
    """Every error survives pickling, because errors cross process boundaries."""
    if issubclass(cls, errors.ClientError):
        exc: BaseException = cls("boom 1", 7)
    else:
        exc = cls("boom 1")
    back = pickle.loads(pickle.dumps(exc))
    assert type(exc) is type(back)
    assert str(exc) == str(back)
    if isinstance(exc, errors.ClientError):
        assert isinstance(back, errors.ClientError)
        assert exc.request_id == back.request_id


def test_not_leader_keeps_hint_when_pickled() -> None:
    """The leader hint crosses process boundaries."""
    exc = errors.NotLeaderError("not leader", 3, "tcp://127.0.0.1:7401")
    back = pickle.loads(pickle.dumps(exc))
    assert "tcp://127.0.0.1:7401" == back.leader_hint


def test_every_wire_code_maps_to_a_class() -> None:
    """Each docs/protocol.md error code decodes to a ClientError subclass with that code."""
    codes = {
        "not_found", "condition_failed", "not_leader", "no_leader", "timeout",
        "unauthorized", "forbidden", "quota_exceeded", "invalid_request", "invalid_key",
        "value_too_large", "too_many_items", "shutting_down", "storage_unavailable",
    }
    assert codes == set(errors.ERROR_CLASSES)
    for code, cls in errors.ERROR_CLASSES.items():
        assert code == cls.code


def test_config_error_is_a_value_error() -> None:
    """ConfigError subclasses the builtin it resembles."""
    assert issubclass(errors.ConfigError, ValueError)
