"""
Hostile frames for the wire fuzzer (tests/fault/test_fuzz_wire.py), from one seeded RNG.

`FrameGen(seed)` makes, deterministically for a seed:
- `client_message()`: a client-port message (a list of frames, as a DEALER sends it) and
  what a correct node must answer: the request id the reply must carry (None: nil) and
  whether the request must be refused (every map naming a mutating op is built so that
  validation must refuse it: the fuzzer never changes data by design, so any `ok: true`
  to a mutating op is a validation hole);
- `peer_message()`: a peer-port message (header frame + payload, or garbage);
- `events_message()`: a frame an XSUB sends to the events port (subscriptions or garbage).

Payload shapes: random bytes, truncated msgpack, msgpack that is not a map, maps of the
op table (concord.net.wire.OPS) with hostile values (huge and negative ints past 64 bits'
msgpack range edges, NaN and inf, deep nesting, bytes for str, maps with non-str keys,
ext types), byte-level mutations of such maps, and envelopes with extra, empty or missing
frames.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgpack

from concord.storage import codec
from concord.storage.codec import MAX_UINT
from concord.ids import NodeId
from concord.net.wire import DEFAULT_MAX_REQUEST_BYTES, OPS, Backend
from concord.raft.messages import Entry, EntryType, Message, MessageType

__all__ = ["ClientCase", "FrameGen", "MUTATING_OPS", "NODE_IDS"]

NODE_IDS = (b"n1", b"n2", b"n3")
#: Ops the fuzzer never sends in a form that could be valid: they change data, members or
#: leadership (each such request carries an undeclared argument, always invalid_request).
MUTATING_OPS = frozenset(
    name for name, spec in OPS.items()
    if spec.backend is Backend.RAFT and name not in ("status", "members", "events"))
_HUGE_INTS = (2**64 - 1, 2**63, 2**63 - 1, -(2**63), -1, 0, 2**31, -(2**31) - 1)


@dataclass(frozen=True, slots=True)
class ClientCase:
    """One client message and what its reply must be."""

    frames: list[bytes]
    request_id: int | None  # the id the reply must carry; None: nil
    must_refuse: bool  # the reply must be ok: false (a mutating op)


class FrameGen:
    """Seeded hostile frames; the same seed gives the same frames in the same order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- values ------------------------------------------------------------------------

    def value(self, depth: int = 0) -> object:
        """A hostile msgpack value."""
        r = self.rng
        kind = r.randrange(14 if depth < 4 else 10)
        if kind == 0:
            return r.choice(_HUGE_INTS)
        if kind == 1:
            return r.choice((float("nan"), float("inf"), -float("inf"), -0.0, 1e308))
        if kind == 2:
            return r.randbytes(r.randrange(0, 40))
        if kind == 3:
            return "".join(chr(r.randrange(0x20, 0x2FFF)) for _ in range(r.randrange(0, 12)))
        if kind == 4:
            return None
        if kind == 5:
            return r.choice((True, False))
        if kind == 6:
            return "x" * r.choice((0, 1, 1025, 5000))
        if kind == 7:
            return r.randrange(-1000, 1000)
        if kind == 8:
            return msgpack.ExtType(r.randrange(0, 128), r.randbytes(r.randrange(0, 8)))
        if kind == 9:
            return r.choice(("leader", "strong", "eventual", "weird", "n1", "a", ""))
        if kind == 10:
            return [self.value(depth + 1) for _ in range(r.randrange(0, 5))]
        if kind == 11:
            return {self.key_like(): self.value(depth + 1) for _ in range(r.randrange(0, 4))}
        if kind == 12:
            # A non-str map key; a tuple packs as an array, unhashable when decoded as a list.
            return {self.rng.choice((1, b"k", None, 2.5, True, (1, 2), 2**64 - 1)): 1}
        return self.nested(r.randrange(10, 400))

    def key_like(self) -> object:
        r = self.rng
        return r.choice(("op", "id", "key", "value", "ttl", "items", "keys", "where", "range",
                         "consistency", "timeout_ms", "seq", "client_id", "limit", "x", ""))

    def nested(self, depth: int) -> object:
        out: object = 0
        for _ in range(depth):
            out = [out] if self.rng.random() < 0.5 else {"v": out}
        return out

    def not_a_str(self) -> object:
        """A value that is never a str (for the key of a mutating op)."""
        while True:
            v = self.value(1)
            if not isinstance(v, str):
                return v

    # -- client payloads ---------------------------------------------------------------

    def request_map(self) -> tuple[dict[object, object], bool]:
        """(map, it names a mutating op and must be refused)."""
        r = self.rng
        op: object = r.choice(list(OPS)) if r.random() < 0.9 else self.value(1)
        req: dict[object, object] = {}
        if r.random() < 0.9:
            req["op"] = op
        id_roll = r.random()
        if id_roll < 0.8:
            req["id"] = r.randrange(0, 2**62)
        elif id_roll < 0.9:
            req["id"] = self.value(1)
        spec = OPS.get(op) if isinstance(op, str) else None
        if spec is not None:
            for arg in spec.args:
                if r.random() < 0.7:
                    req[arg.name] = self.value()
        for _ in range(r.randrange(0, 3)):
            req[r.choice(("token", "ns", "timeout_ms", "client_id", "seq", "traceparent",
                          "zz", "consistency"))] = self.value()
        if "timeout_ms" in req:
            req["timeout_ms"] = r.choice((0, -1, 1, 2**64 - 1, "5", None, 1.5))
        must_refuse = isinstance(op, str) and op in MUTATING_OPS
        if must_refuse:
            # Never valid: an undeclared argument is always invalid_request.
            req["zz_not_an_arg"] = self.value(2)
            if "key" in req or r.random() < 0.5:
                req["key"] = self.not_a_str()
        return req, must_refuse

    def client_payload(self) -> tuple[bytes, bool]:
        """(payload, the request names a mutating op and must be refused)."""
        r = self.rng
        kind = r.randrange(10)
        if kind == 0:
            return r.randbytes(r.randrange(0, 64)), False
        if kind == 1:
            packed = _pack(self.request_map()[0])
            return packed[: r.randrange(0, max(1, len(packed)))], False  # truncated
        if kind == 2:
            return _pack(self.value()), False  # not a map (or a map of junk)
        if kind == 3:
            depth = r.choice((100, 1000, 10000, 100000))
            return b"\x81\xa1v" * depth + b"\xc0", False  # deeply nested maps
        if kind == 4:
            mutated = bytearray(_pack(self.request_map()[0]))
            for _ in range(r.randrange(1, 4)):
                if mutated and r.random() < 0.6:
                    mutated[r.randrange(len(mutated))] = r.randrange(256)
                else:
                    mutated.insert(r.randrange(len(mutated) + 1), r.randrange(256))
            # A mutated mutating op may have become valid: not required to be refused.
            return bytes(mutated), False
        req, must_refuse = self.request_map()
        return _pack(req), must_refuse

    def client_message(self) -> ClientCase:
        """One DEALER message: frames and what its reply must carry."""
        r = self.rng
        payload, must_refuse = self.client_payload()
        shape = r.randrange(20)
        if shape < 13:
            frames = [b"", payload]
        elif shape < 15:
            frames = [payload] if payload else [b"x"]
        else:
            frames = [r.choice((b"", payload)) for _ in range(r.randrange(1, 8))] + [payload]
        return ClientCase(frames, expected_reply_id(frames), must_refuse)

    # -- peer and events -----------------------------------------------------------------

    def peer_message(self) -> list[bytes]:
        """Frames a hostile DEALER sends to a peer port."""
        r = self.rng
        sender = r.choice(NODE_IDS + (b"n9", b"", r.randbytes(r.randrange(1, 8))))
        version = r.choice((2, 2, 2, 1, 0, 255))
        kind = r.choice((1, 1, 2, 0, 7))
        header = bytes((version, kind)) + sender
        roll = r.randrange(10)
        if roll < 4:
            payload = _pack(self.value())
        elif roll < 6:
            payload = _pack([r.randrange(0, 12), self.value(), self.value(), r.choice(_HUGE_INTS),
                             [self.value() for _ in range(r.randrange(0, 4))]])
        elif roll < 8:
            payload = r.randbytes(r.randrange(0, 200))
        else:
            payload = b""
        shape = r.randrange(10)
        if shape < 6:
            return [header, payload]
        if shape < 7:
            return [header]
        if shape < 8:
            return [header, payload, r.randbytes(r.randrange(0, 10))]
        if shape < 9:
            return [b"", header, payload]
        return [r.randbytes(r.randrange(0, 10)) for _ in range(r.randrange(1, 5))]

    def forged_raft(self, to: bytes) -> list[bytes]:
        """
        A well-formed raft message from a member's id with a term past codec.MAX_UINT
        (and maybe other counters): the decoder must refuse it. Every other counter is
        small, so nothing about it could pass as current if the term were refused.
        """
        r = self.rng
        frm = r.choice([n for n in NODE_IDS if n != to])
        big = r.choice((MAX_UINT + 1, 2**63, 2**64 - 1))
        small = r.randrange(0, 4)
        mtype = r.choice((MessageType.HEARTBEAT, MessageType.VOTE, MessageType.PRE_VOTE,
                          MessageType.APPEND, MessageType.HEARTBEAT_RESP))
        entries = (Entry(big, r.choice((small, big)), EntryType.NORMAL, b"", small),) \
            if mtype is MessageType.APPEND else ()
        msg = Message(mtype, NodeId(to.decode()), NodeId(frm.decode()), term=big,
                      log_term=r.choice((small, big)), index=r.choice((small, big)),
                      entries=entries, commit=r.choice((small, big)))
        return [bytes((2, 1)) + frm, codec.encode_message(msg)]

    def typed_write(self, request_id: int) -> dict[str, object]:
        """
        A write whose arguments have the right types but extreme values (ttl 1e308, seq
        2**64 - 1, values nested near the limit...), on keys under "fuzzw/" only. It may
        be accepted: it is sent after the data check.
        """
        r = self.rng
        extreme = (1e308, 1.7e305, 2**64 - 1, 2**63, 2**62, 1e-300, 5e-324, 0.5, 1)
        key = f"fuzzw/{r.randrange(50)}"
        # NB: at most 600 items of 4 KiB: over max_request_bytes (an invalid_request with
        # id nil), under the hard limit that closes the connection (docs/protocol.md).
        value = r.choice((self.nested(r.randrange(1, 70)), "v" * r.choice((0, 1, 2**12)),
                          2**64 - 1, -(2**63), 1e308, b"\x00" * 1000, [None] * 100))
        op = r.choice(("put", "touch", "put_many", "touch_many", "put_if", "delete_if",
                       "delete", "delete_many", "create_index", "drop_index", "delete_where"))
        req: dict[str, object] = {"op": op, "id": request_id}
        if op in ("put", "touch", "put_if", "delete_if", "delete"):
            req["key"] = key
        if op in ("put", "put_if"):
            req["value"] = value
        if op in ("put", "put_if", "touch") or (op == "touch" and r.random() < 0.5):
            req["ttl"] = r.choice(extreme)
        if op in ("put_if", "delete_if"):
            cond = r.choice(("version", "mod_revision", "expected", "absent"))
            req[cond] = {"version": r.choice(extreme[2:5]), "mod_revision": r.choice(extreme[2:5]),
                         "expected": value, "absent": True}[cond]
        if op == "put_many":
            req["items"] = [[f"fuzzw/{i}", value, r.choice(extreme)] for i in range(r.randrange(1, 600))]
        if op == "touch_many":
            req["items"] = [[f"fuzzw/{i}", r.choice(extreme)] for i in range(r.randrange(1, 600))]
        if op == "delete_many":
            req["keys"] = [f"fuzzw/{i}" for i in range(r.randrange(1, 600))]
        if op in ("create_index", "drop_index"):
            req["name"] = r.choice(("fz", "fz2", "x" * 129))
        if op == "create_index":
            req["field"] = r.choice(("a", "a.b.c", "", "." * 70))
        if op == "delete_where":
            req["prefix"] = "fuzzw/"
            req["pattern"] = r.choice(("(a*)*b", "[", ".*", "\\"))
            req["limit"] = r.choice(extreme[2:5])
        if r.random() < 0.3:
            req["client_id"] = r.choice(("fz", "", "x" * 300))
            req["seq"] = r.choice((0, 2**64 - 1, 2**63, 2**62))
        if r.random() < 0.2:
            req["timeout_ms"] = r.choice((1, 120000, 2**64 - 1))
        return req

    def events_message(self) -> bytes:
        """One frame an XSUB sends upstream: (un)subscriptions or junk."""
        r = self.rng
        roll = r.randrange(4)
        if roll == 0:
            return b"\x01" + r.randbytes(r.randrange(0, 30))
        if roll == 1:
            return b"\x00" + r.randbytes(r.randrange(0, 30))
        if roll == 2:
            return r.randbytes(r.randrange(0, 60))
        return _pack(self.value())

    def garbage(self) -> bytes:
        """Raw bytes for a plain TCP connection (a broken ZMTP greeting, or noise)."""
        r = self.rng
        if r.random() < 0.5:
            return r.randbytes(r.randrange(1, 200))
        greeting = bytearray(b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00NULL" + b"\x00" * 48)
        greeting[r.randrange(len(greeting))] = r.randrange(256)
        return bytes(greeting) + r.randbytes(r.randrange(0, 100))

    def identity(self) -> bytes | None:
        """A routing id for a fuzz connection: none, unique, or from a colliding pool."""
        r = self.rng
        roll = r.random()
        if roll < 0.5:
            return None
        if roll < 0.75:
            return b"u" + r.randbytes(15)
        return r.choice(NODE_IDS + (b"c1", b"c2"))


class _ExtRefused(Exception):
    pass


def _refuse_ext(code: int, data: bytes) -> object:
    raise _ExtRefused(code)


def expected_reply_id(frames: list[bytes]) -> int | None:
    """
    The id a correct node's reply must carry (docs/protocol.md, "Answered or refused"):
    the request's when the envelope is well formed, the payload is at most
    max_request_bytes (the test clusters keep the default) and decodes as one msgpack
    value that is a map with an integer id, else None (nil). Decoded here independently of
    the node's code, with the msgpack library's own rules.
    """
    if len(frames) == 2 and frames[0] == b"":
        payload = frames[1]
    elif len(frames) == 1 and frames[0] != b"":
        payload = frames[0]
    else:
        return None
    if len(payload) > DEFAULT_MAX_REQUEST_BYTES:  # refused unread
        return None
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, _ExtRefused):
        return None
    if not isinstance(obj, dict):
        return None
    rid = obj.get("id")
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def _pack(obj: object) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        data = msgpack.packb(repr(obj)[:100], use_bin_type=True)
    return data
