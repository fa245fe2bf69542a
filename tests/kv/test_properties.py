"""
Property tests: random command sequences through apply() against a plain dict model, and
replays of one log (with snapshot/restore mid-way) giving the same state hash.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord.kv import ChangeType, KeyRecord, KvStateMachine, Space, encode_command, expire_command
from concord.kv.values import values_equal
from tests.kv.helpers import KV_SETTINGS

KEYS = ["a", "b", "c", "d", "p:1", "p:2", "q"]
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["", "x", "yy"]),
    st.fixed_dictionaries({"g": st.integers(0, 2)}),
    st.just("z" * 1500),  # compressed
    st.none(),
    st.booleans(),
)
TTLS = st.sampled_from([None, None, 0.001, 0.5, 1, 3])
KEY = st.sampled_from(KEYS)
COND = st.one_of(
    st.fixed_dictionaries({"absent": st.just(True)}),
    st.fixed_dictionaries({"version": st.integers(0, 3)}),
    st.fixed_dictionaries({"mod_revision": st.integers(0, 6)}),
    st.fixed_dictionaries({"expected": VALUES}),
)


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    op = draw(
        st.sampled_from(
            ["put", "put", "put", "delete", "touch", "put_many", "delete_many", "touch_many",
             "put_if", "delete_if", "expire", "delete_where", "noop", "create_index",
             "drop_index", "garbage"]
        )
    )
    if op == "put":
        return op, {"key": draw(KEY), "value": draw(VALUES), "ttl": draw(TTLS)}
    if op in ("delete", "touch"):
        args: dict[str, object] = {"key": draw(KEY)}
        if op == "touch":
            args["ttl"] = draw(TTLS)
        return op, args
    if op == "put_many":
        keys = draw(st.lists(KEY, unique=True, max_size=4))
        return op, {"items": [[k, draw(VALUES), draw(TTLS)] for k in keys]}
    if op == "delete_many":
        return op, {"keys": draw(st.lists(KEY, max_size=4))}
    if op == "touch_many":
        keys = draw(st.lists(KEY, unique=True, min_size=1, max_size=3))
        return op, {"items": [[k, draw(TTLS)] for k in keys]}
    if op == "put_if":
        return op, {"key": draw(KEY), "value": draw(VALUES), "ttl": draw(TTLS), **draw(COND)}
    if op == "delete_if":
        return op, {"key": draw(KEY), **draw(COND)}
    if op == "expire":
        return op, {"extra": draw(st.lists(KEY, max_size=2))}
    if op == "delete_where":
        return op, draw(
            st.sampled_from([{"prefix": "p:"}, {"where": ["eq", "g", 1]}, {"limit": 1}])
        )
    if op in ("create_index", "drop_index"):
        return op, {"name": "g"}
    return op, {}


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[int, str, dict[str, object], tuple[str, int] | None]]:
    out = []
    for _ in range(draw(st.integers(1, 40))):
        dt = draw(st.sampled_from([0, 0, 1, 300, 700, 1200]))
        op, args = draw(commands())
        session = None
        if op not in ("expire", "noop", "garbage") and draw(st.integers(0, 3)) == 0:
            session = (draw(st.sampled_from(["c1", "c2"])), draw(st.integers(0, 3)))
        out.append((dt, op, args, session))
    return out


def _g(value: object) -> object:
    """The "g" field of a map value (None otherwise)."""
    return value.get("g") if isinstance(value, dict) else None


@dataclass(frozen=True)
class Row:
    value: object
    create_revision: int
    mod_revision: int
    version: int
    expires_at_ms: int


class Model:
    """The obvious dict-based reference implementation of the documented semantics."""

    def __init__(self) -> None:
        self.data: dict[str, Row] = {}
        self.revision = 0
        self.sessions: dict[str, tuple[int, dict[str, object]]] = {}

    def live(self, key: str, ts: int) -> Row | None:
        row = self.data.get(key)
        if row is None or (row.expires_at_ms and row.expires_at_ms <= ts):
            return None
        return row

    def _put(self, key: str, value: object, ttl: object, index: int, ts: int) -> None:
        old = self.live(key, ts)
        assert ttl is None or isinstance(ttl, (int, float))
        ttl_ms = 0 if ttl is None else max(1, int(-(-float(ttl) * 1000 // 1)))  # ceil
        self.data[key] = Row(
            value,
            index if old is None else old.create_revision,
            index,
            1 if old is None else old.version + 1,
            ts + ttl_ms if ttl_ms else 0,
        )

    def _cond(self, args: dict[str, object], key: str, ts: int) -> bool:
        row = self.live(key, ts)
        if "absent" in args:
            return row is None
        if "version" in args:
            return (0 if row is None else row.version) == args["version"]
        if "mod_revision" in args:
            return (0 if row is None else row.mod_revision) == args["mod_revision"]
        return row is not None and values_equal(row.value, args["expected"])

    def execute(self, op: str, args: dict[str, object], index: int, ts: int) -> dict[str, object]:
        if op == "put":
            self._put(str(args["key"]), args["value"], args["ttl"], index, ts)
            self.revision = index
            return {"revision": index}
        if op in ("delete", "delete_if"):
            key = str(args["key"])
            if op == "delete_if" and not self._cond(args, key, ts):
                return {"error": "condition_failed"}
            if self.live(key, ts) is None:
                return {"deleted": False, "revision": self.revision}
            del self.data[key]
            self.revision = index
            return {"deleted": True, "revision": index}
        if op in ("touch", "touch_many"):
            items = args["items"] if op == "touch_many" else [[args["key"], args["ttl"]]]
            assert isinstance(items, list)
            if any(self.live(k, ts) is None for k, _ in items):
                return {"error": "not_found"}
            for key, ttl in items:
                row = self.data[key]
                ttl_ms = 0 if ttl is None else max(1, int(-(-float(ttl) * 1000 // 1)))
                self.data[key] = replace(
                    row, mod_revision=index, expires_at_ms=ts + ttl_ms if ttl_ms else 0
                )
            self.revision = index
            return {"revision": index}
        if op == "put_many":
            items = args["items"]
            assert isinstance(items, list)
            for key, value, ttl in items:
                self._put(key, value, ttl, index, ts)
                self.revision = index
            return {"revision": self.revision}
        if op in ("delete_many", "delete_where"):
            if op == "delete_many":
                keys = list(dict.fromkeys(cast(list[str], args["keys"])))
            else:
                keys = sorted(k for k in self.data if self.live(k, ts) is not None)
                if "prefix" in args:
                    keys = [k for k in keys if k.startswith(str(args["prefix"]))]
                if "where" in args:
                    keys = [k for k in keys if _g(self.data[k].value) == 1]
                if "limit" in args:
                    keys = keys[: cast(int, args["limit"])]
            n = 0
            for key in keys:
                if self.live(key, ts) is not None:
                    del self.data[key]
                    n += 1
            if n:
                self.revision = index
            return {"deleted": n, "revision": self.revision}
        if op == "put_if":
            key = str(args["key"])
            if not self._cond(args, key, ts):
                return {"error": "condition_failed"}
            self._put(key, args["value"], args["ttl"], index, ts)
            self.revision = index
            return {"revision": index}
        raise AssertionError(op)


def _compare(expected: dict[str, object], actual: dict[str, object]) -> None:
    if "error" in expected:
        assert expected["error"] == actual.get("error"), actual
    else:
        assert expected == actual


@pytest.mark.slow
@KV_SETTINGS
@given(steps())
def test_apply_agrees_with_dict_model_when_driven_by_random_commands(
    plan: list[tuple[int, str, dict[str, object], tuple[str, int] | None]]
) -> None:
    """Results, values, revisions, versions and TTL visibility match the reference model."""
    sm = KvStateMachine()
    model = Model()
    ts = 1_000
    for index, (dt, op, args, session) in enumerate(plan, start=1):
        ts += dt
        if op == "noop":
            sm.apply_noop(index, ts)
            continue
        if op == "garbage":
            assert "invalid_request" == sm.apply(index, ts, b"\x93\x01").result["error"]
            continue
        if op == "expire":
            due = sm.due_expirations(ts, 3)
            assert due == sorted(
                (k for k, r in model.data.items() if r.expires_at_ms and r.expires_at_ms <= ts),
                key=lambda k: (model.data[k].expires_at_ms, k),
            )[:3]
            keys = due + cast(list[str], args["extra"])
            applied = sm.apply(index, ts, expire_command(keys))
            gone = [k for k in dict.fromkeys(keys) if k in model.data and model.live(k, ts) is None]
            for key in gone:
                del model.data[key]
            if gone:
                model.revision = index
            assert {"expired": len(gone), "revision": model.revision} == applied.result
            continue
        if op in ("create_index", "drop_index"):
            field = {"field": "g"} if op == "create_index" else {}
            applied = sm.apply(index, ts, encode_command(op, {**args, **field}))
            assert "error" not in applied.result
            if applied.changes:
                model.revision = index
            continue
        data = encode_command(op, args, client_id=session[0] if session else None,
                              seq=session[1] if session else None)
        applied = sm.apply(index, ts, data)
        if session is None:
            expected = model.execute(op, args, index, ts)
        else:
            last = model.sessions.get(session[0])
            if last is not None and session[1] == last[0]:
                expected = last[1]
            elif last is not None and session[1] < last[0]:
                expected = {"error": "invalid_request"}
            else:
                expected = model.execute(op, args, index, ts)
                model.sessions[session[0]] = (session[1], expected)
        _compare(expected, applied.result)
        if "error" in applied.result:
            assert [] == applied.changes
        else:
            assert all(c.revision == index for c in applied.changes)
        # Every key reads as the model says, at this entry's time and a bit later.
        for now in (ts, ts + 600):
            for key in KEYS:
                row = model.live(key, now)
                got = sm.get(key, now, meta=True)
                if row is None:
                    assert "not_found" == got.get("error"), (key, got)
                else:
                    assert values_equal(row.value, got["value"]), (key, got)
                    assert (row.create_revision, row.mod_revision, row.version) == (
                        got["create_revision"], got["revision"], got["version"]
                    )
            live = sorted(k for k in model.data if model.live(k, now) is not None)
            assert live == sm.keys({}, now)["keys"]
            g1 = [k for k in live if _g(model.data[k].value) == 1]
            assert g1 == sm.keys({"where": ["eq", "g", 1]}, now)["keys"]
        assert model.revision == sm.revision
    assert sm.verify_digest()


def _log(plan: list[tuple[int, str, dict[str, object], tuple[str, int] | None]]) -> list[
    tuple[int, int, bytes | None]
]:
    """Turn a plan into log entries (index, ts, data; None for a no-op)."""
    entries: list[tuple[int, int, bytes | None]] = []
    ts = 1_000
    for index, (dt, op, args, session) in enumerate(plan, start=1):
        ts += dt
        if op == "noop":
            entries.append((index, ts, None))
        elif op == "garbage":
            entries.append((index, ts, b"\x93\x01"))
        elif op == "expire":
            entries.append((index, ts, expire_command(cast(list[str], args["extra"]))))
        else:
            if op == "create_index":
                args = {**args, "field": "g"}
            entries.append((index, ts, encode_command(
                op, args, client_id=session[0] if session else None,
                seq=session[1] if session else None,
            )))
    return entries


def _run(sm: KvStateMachine, entries: list[tuple[int, int, bytes | None]]) -> list[object]:
    results: list[object] = []
    for index, ts, data in entries:
        if data is None:
            sm.apply_noop(index, ts)
        else:
            applied = sm.apply(index, ts, data)
            results.append((applied.result, applied.changes))
    return results


@pytest.mark.slow
@KV_SETTINGS
@given(steps(), st.integers(0, 40))
def test_replay_gives_same_state_when_log_is_applied_twice_or_restored_midway(
    plan: list[tuple[int, str, dict[str, object], tuple[str, int] | None]], cut: int
) -> None:
    """Two replays, and a replay through snapshot/restore, end with equal hashes and results."""
    entries = _log(plan)
    cut = min(cut, len(entries))
    first, second = KvStateMachine(), KvStateMachine()
    results_first = _run(first, entries)
    results_second = _run(second, entries)
    assert results_first == results_second
    assert first.state_hash() == second.state_hash()
    assert first.snapshot() == second.snapshot()

    head = KvStateMachine()
    results_head = _run(head, entries[:cut])
    restored = KvStateMachine()
    restored.restore(head.snapshot())
    assert head.state_hash() == restored.state_hash()
    results_tail = _run(restored, entries[cut:])
    assert results_first == results_head + results_tail
    assert first.state_hash() == restored.state_hash()
    assert first.snapshot() == restored.snapshot()
    assert restored.verify_digest()


@pytest.mark.slow
@KV_SETTINGS
@given(steps())
def test_changes_mirror_the_store_when_folded_into_a_dict(
    plan: list[tuple[int, str, dict[str, object], tuple[str, int] | None]]
) -> None:
    """Every physical change is published: folding the Changes rebuilds the exact store."""
    sm = KvStateMachine()
    mirror: dict[tuple[Space, str], KeyRecord] = {}
    for index, ts, data in _log(plan):
        if data is None:
            sm.apply_noop(index, ts)
            continue
        applied = sm.apply(index, ts, data)
        keys = [(c.space, c.key) for c in applied.changes]
        assert len(set(keys)) == len(keys)  # one change per key
        for change in applied.changes:
            assert (index, ts) == (change.revision, change.ts_ms)
            if change.type in (ChangeType.PUT, ChangeType.TOUCH):
                assert change.record is not None
                mirror[(change.space, change.key)] = change.record
            else:
                assert change.record is None
                del mirror[(change.space, change.key)]
        assert list(sm.records()) == [
            mirror[k] for k in sorted(k for k in mirror if k[0] == Space.USER)
        ]
        assert sm.system_records() == [
            mirror[k] for k in sorted(k for k in mirror if k[0] == Space.SYSTEM)
        ]
