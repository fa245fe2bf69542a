"""Reply decoding into typed results (pure, no sockets)."""

from __future__ import annotations

import pytest

from concord.client.results import Event, event_from, int_field, pairs, ttl_field
from concord.errors import RemoteProtocolError


def test_event_decoded_when_type_is_name_or_change_number() -> None:
    """Event types arrive as names, or as ChangeType numbers, and read the same."""
    assert Event("put", "k", 1, 5, 10, 2.5) == event_from(
        {"type": "put", "key": "k", "value": 1, "revision": 5, "ts": 10, "ttl": 2.5}
    )
    assert Event("expire", "k", None, 6, 11, None) == event_from({"type": 2, "key": "k", "revision": 6, "ts": 11})


def test_remote_protocol_error_raised_when_reply_fields_wrong() -> None:
    """Missing or mistyped reply fields name the op and the field."""
    with pytest.raises(RemoteProtocolError, match="reply to put lacks field revision"):
        int_field({}, "put", "revision")
    with pytest.raises(RemoteProtocolError, match="not int"):
        int_field({"revision": True}, "put", "revision")
    with pytest.raises(RemoteProtocolError):
        ttl_field({"ttl": "soon"}, "ttl")
    with pytest.raises(RemoteProtocolError):
        pairs({"items": [["k"]]}, "query")
    with pytest.raises(RemoteProtocolError):
        event_from({"type": "put", "key": "k", "revision": 1})
    assert None is ttl_field({}, "get")
    assert (("a", 1),) == pairs({"items": [["a", 1]]}, "get_all")
