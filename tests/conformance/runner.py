"""
Replays the language-neutral transcripts of tests/conformance/transcripts against a node
(rules: tests/conformance/README.md). The Node.js example (examples/node/conformance.js)
implements the same rules; keep them in step.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Callable

import msgpack

TRANSCRIPTS = Path(__file__).parent / "transcripts"


class Mismatch(AssertionError):
    """A reply differs from its transcript."""


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def build(value: object, prefix: str, saved: dict[str, object]) -> object:
    """A transcript value ready to send: {p} replaced, {"$bin"}, {"$ref"} resolved."""
    if isinstance(value, str):
        return value.replace("{p}", prefix)
    if isinstance(value, list):
        return [build(v, prefix, saved) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(str(value["$bin"]))
        if set(value) == {"$ref"}:
            return saved[str(value["$ref"])]
        return {build(k, prefix, saved): build(v, prefix, saved) for k, v in value.items()}
    return value


def match(expected: object, actual: object, prefix: str, saved: dict[str, object], path: str) -> None:
    """Raise Mismatch unless `actual` matches `expected` (placeholders, captures)."""
    if isinstance(expected, str) and expected.startswith("$"):
        checks: dict[str, Callable[[object], bool]] = {
            "$int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "$number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "$str": lambda v: isinstance(v, str),
            "$any": lambda v: True,
        }
        if expected not in checks or not checks[expected](actual):
            raise Mismatch(f"{path}: {actual!r} is not {expected}")
        return
    if isinstance(expected, dict) and len(expected) == 1:
        (tag, arg), = expected.items()
        if tag == "$capture":
            saved[str(arg)] = actual
            return
        if tag == "$contains":
            if not isinstance(actual, str) or str(arg) not in actual:
                raise Mismatch(f"{path}: {actual!r} does not contain {arg!r}")
            return
        if tag in ("$ref", "$bin"):
            expected = build(expected, prefix, saved)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise Mismatch(f"{path}: {actual!r} is not a map")
        wanted = {build(k, prefix, saved): v for k, v in expected.items()}
        if set(wanted) != set(actual):
            raise Mismatch(f"{path}: keys {sorted(map(str, actual))} != {sorted(map(str, wanted))}")
        for key, sub in wanted.items():
            match(sub, actual[key], prefix, saved, f"{path}.{key}")
        return
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise Mismatch(f"{path}: {actual!r} is not a list of {len(expected)}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            match(e, a, prefix, saved, f"{path}[{i}]")
        return
    built = build(expected, prefix, saved)
    if type(built) is not type(actual) and not (isinstance(built, float) and isinstance(actual, int)):
        raise Mismatch(f"{path}: {actual!r} ({type(actual).__name__}) != {built!r}")
    if built != actual:
        raise Mismatch(f"{path}: {actual!r} != {built!r}")


def match_reply(expected: dict[str, object], reply: dict[str, object], prefix: str,
                saved: dict[str, object]) -> None:
    """The top level: every expected field matches; other fields may be present."""
    for key, sub in expected.items():
        if key not in reply:
            raise Mismatch(f"reply lacks field {key!r}: {reply!r}")
        match(sub, reply[key], prefix, saved, key)


def replay(transcript: dict[str, object], exchange: Callable[[bytes], bytes]) -> int:
    """Send every step through `exchange` (payload -> reply payload); returns steps run."""
    prefix = f"conf-{uuid.uuid4().hex[:8]}/"
    saved: dict[str, object] = {}
    steps = transcript["steps"]
    assert isinstance(steps, list)
    for n, step in enumerate(steps):
        if "send_raw_hex" in step:
            payload = bytes.fromhex(step["send_raw_hex"])
        else:
            payload = msgpack.packb(build(step["send"], prefix, saved), use_bin_type=True)
        reply = msgpack.unpackb(exchange(payload), raw=False)
        try:
            match_reply(step["expect"], reply, prefix, saved)
        except Mismatch as exc:
            raise Mismatch(f"{transcript['name']} step {n + 1}: {exc}") from None
    return len(steps)
