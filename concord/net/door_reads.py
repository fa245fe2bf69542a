"""
Reads the front door answers itself ("inline"), from its own view of the node's shared
memory, instead of sending them to a read worker: one process wake-up and no backend
hop for a lookup of a few microseconds (docs/architecture.md "Inline reads").

Which requests: a READ op whose spec says `inline` (concord.net.wire `OPS`, the one op
table: ops whose cost is bounded by the keys they name), at `eventual` or `leader`
consistency, naming at most `MAX_INLINE_KEYS` keys. The same ops and limits at `strong`
consistency (`is_strong_inline`) are answered too, but only after a read barrier from the
raft worker (concord.net.door_strong). Everything else (ranges, queries,
scans, indexes: cost unbounded) still goes to a read worker, so the door never stalls
other clients' writes behind a long read.

What answers them: an `InlineReads` the door is given (the node's
concord.node.shm_reads.ShmReads, the read workers' own code and checks). It may answer,
hand the request to the raft worker (a `leader` read at a leader without its lease), or
decline it (the door then sends it to a read worker, as without inline reads).

The plainest read of all, a `get` of one key at `eventual` or `leader` with nothing else
in its map (`plain_get`), is offered to `InlineReads.answer_get` straight from its payload,
before the door decodes it into a `Request`: one msgpack decode and a few type checks
instead of the whole validation, and the stored value's bytes spliced into the reply. It
answers only what the full path would answer with the same reply (a value found, auth
off, `leader` under the lease); anything else, and every other request, takes the full
path (decode_request, then `answer`), which names the fault or refuses.

Pure: no sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import msgpack

from concord.net.wire import OPS, OpSpec, Request

__all__ = ["MAX_INLINE_KEYS", "InlineReads", "Verdict", "is_inline", "is_strong_inline", "plain_get"]

#: The most keys an inline read may name (`get_many`); more go to a read worker.
MAX_INLINE_KEYS = 64


class Verdict(enum.Enum):
    """What an `InlineReads` does with a request instead of answering it."""

    HAND_OFF = "hand_off"
    """The raft worker must answer (exactly as a read worker's HANDOFF)."""

    DECLINE = "decline"
    """A read worker must answer (e.g. the view is not attached, a rate-limited tenant)."""


class InlineReads(Protocol):
    """Answers the front door's inline reads (module docstring). Called from the door's loop only."""

    def answer(self, request: Request) -> bytes | Verdict:
        """The reply payload for a validated read request, or what to do with it instead."""
        ...

    @property
    def ready(self) -> bool:
        """Whether `answer_strong` can serve now (the view is attached)."""
        ...

    def answer_get(self, request_id: int, key: str, consistency: str) -> bytes | None:
        """
        The reply to a `plain_get` request (its id, key and level), if answering it needs
        none of the full path's checks, refusals or errors (module docstring); else None:
        the door then decodes the request and asks `answer`.
        """
        ...

    def answer_strong(self, request: Request, index: int) -> bytes | Verdict:
        """
        The reply to a validated `strong` read whose barrier answered `index`, read from
        a state at `index` or later, or DECLINE if the view cannot reach `index` (the
        raft worker must answer it).
        """
        ...

    def answer_strong_get(self, request_id: int, key: str, index: int) -> bytes | None:
        """
        The reply to a plain `strong` get whose barrier answered `index` that
        `answer_strong` would give as well, read from a state at `index` or later, when
        `answer_get` would give one at `eventual` from there; else None: the door then
        asks `answer_strong`.
        """
        ...

    def keep_up(self) -> None:
        """Called on every pass of the door's loop: keep the view near the writer."""
        ...

    def close(self) -> None: ...


def _bounded(request: Request, registry: Mapping[str, OpSpec]) -> bool:
    """An inline op naming at most MAX_INLINE_KEYS keys."""
    if not registry[request.op].inline:
        return False
    keys = request.args.get("keys")
    return not isinstance(keys, list) or len(keys) <= MAX_INLINE_KEYS


def is_inline(request: Request, registry: Mapping[str, OpSpec]) -> bool:
    """Whether the door may answer `request` itself: an inline op, not strong, few keys."""
    return request.consistency != "strong" and _bounded(request, registry)


def is_strong_inline(request: Request, registry: Mapping[str, OpSpec]) -> bool:
    """Whether the door may answer `request` itself after a barrier: `is_inline` but strong."""
    return request.consistency == "strong" and _bounded(request, registry)


# NB: plain_get below hard-codes the shape of a `get` from the op table; check it here.
assert OPS["get"].inline and OPS["get"].required == ("key",)
assert {"key", "consistency"} <= set(OPS["get"].arg_index)
_unpackb = msgpack.unpackb


def plain_get(payload: bytes) -> tuple[int, str, str] | None:
    """
    (id, key, consistency) of a request that is exactly `{"op": "get", "id": int, "key":
    str}` plus, optionally, `"consistency": "eventual" | "leader" | "strong"` (absent:
    leader), in any order; None for any other payload, valid or not (the full path
    decides). NB: a `strong` one must not be answered before a read barrier
    (concord.net.door_strong.hold_plain_strong).

    What decode_request would accept as the same Request: one msgpack map with str keys
    (the bare unpackb refuses other keys, and trailing bytes), op and id of their wire
    types (bool is not an int), a str key and a consistency the op table allows. The
    caller bounds the payload's size first.
    """
    try:
        obj = _unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None  # the full path names the fault
    if type(obj) is not dict or obj.get("op") != "get":
        return None
    request_id = obj.get("id")
    key = obj.get("key")
    if type(request_id) is not int or type(key) is not str:
        return None
    size = len(obj)
    if size == 3:
        return request_id, key, "leader"
    consistency = obj.get("consistency")
    if size == 4 and (consistency == "eventual" or consistency == "leader"
                      or consistency == "strong"):
        return request_id, key, consistency
    return None
