"""The query engine: filters, key conditions, paging, validation, any KeySource."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord.errors import InvalidRequestError
from concord.kv import (
    IndexSet,
    KeyRecord,
    KvStateMachine,
    encode_command,
    parse_query,
    serve_read,
)
from concord.kv.query import matches, parse_filter
from tests.kv.helpers import KV_SETTINGS, Driver

DOC = {"name": "ann", "age": 31, "tags": ["a", "b"], "addr": {"city": "Oslo", "zip": b"01"},
       "score": 2.5, "ok": True, "none": None, "7": "seven", 3: "three"}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (["eq", "name", "ann"], True),
        (["eq", "age", 31.0], True),
        (["eq", "ok", 1], False),
        (["ne", "name", "bob"], True),
        (["ne", "missing", 1], False),
        (["lt", "age", 40], True),
        (["le", "age", 31], True),
        (["gt", "score", 2], True),
        (["ge", "score", 2.6], False),
        (["gt", "name", 5], False),
        (["lt", "addr.city", "P"], True),
        (["eq", "addr.zip", b"01"], True),
        (["eq", "tags.1", "b"], True),
        (["eq", "tags.-1", "b"], True),
        (["eq", ["tags", 0], "a"], True),
        (["eq", "tags.x", "a"], False),
        (["eq", "3", "three"], True),
        (["eq", "7", "seven"], True),
        (["in", "name", ["bob", "ann"]], True),
        (["in", "age", []], False),
        (["prefix", "name", "an"], True),
        (["prefix", "addr.zip", b"0"], True),
        (["prefix", "age", "3"], False),
        (["exists", "none"], True),
        (["exists", "addr.street"], False),
        (["eq", "none", None], True),
        (["eq", "tags", ["a", "b"]], True),
        (["eq", "addr", {"zip": b"01", "city": "Oslo"}], True),
        (["lt", "tags", ["z"]], False),
        (["and", ["eq", "name", "ann"], ["gt", "age", 30]], True),
        (["and", ["eq", "name", "ann"], ["gt", "age", 31]], False),
        (["or", ["eq", "name", "bob"], ["gt", "age", 30]], True),
        (["not", ["exists", "banned"]], True),
        (["eq", "", 5], False),
    ],
)
def test_filter_matches_document_when_evaluated(flt: list[object], expected: bool) -> None:
    """Each filter op follows the documented comparison rules."""
    assert expected == matches(parse_filter(flt), DOC)


def test_filter_sees_whole_value_when_path_is_empty() -> None:
    """The empty path addresses the whole value (scalars too)."""
    assert matches(parse_filter(["ge", "", 5]), 7)
    assert not matches(parse_filter(["gt", "", 1.0]), float("nan"))


def _deep(levels: int) -> object:
    nested: object = ["eq", "a", 1]
    for _ in range(levels):
        nested = ["not", nested]
    return nested


DEEP = _deep(40)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("eq", "must be a list"),
        ([], "must be a list"),
        (["eq", "a"], "takes a field and a value"),
        (["in", "a", 5], "in takes a list"),
        (["prefix", "a", 5], "prefix takes"),
        (["and"], "at least one"),
        (["not", ["eq", "a", 1], ["eq", "a", 1]], "exactly one filter"),
        (["exists"], "exactly one field"),
        (["eq", "a..b", 1], "empty part"),
        (["eq", ["a", 1.5], 1], "parts must be"),
        (["eq", 5, 1], "field path must be"),
        (["xor", ["eq", "a", 1]], "unknown filter op"),
        (DEEP, "nests deeper"),
        (["or"] + [["eq", "a", i] for i in range(300)], "more than 256 nodes"),
    ],
)
def test_parse_filter_rejects_shape_when_malformed(raw: object, message: str) -> None:
    """Bad filter shapes get invalid_request naming the problem."""
    with pytest.raises(InvalidRequestError, match=message):
        parse_filter(raw)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prefix": 5}, "prefix must be a string"),
        ({"pattern": "[a"}, "bad regex"),
        ({"pattern": "a" * 2000}, "longer than"),
        ({"range": ["b", "a"]}, "is above hi"),
        ({"range": ["a"]}, r"range must be \[lo, hi\]"),
        ({"range": [1, 2]}, "bounds must be strings"),
        ({"limit": -1}, "limit must be"),
        ({"limit": 10**9}, "limit must be"),
        ({"offset": "x"}, "offset must be"),
        ({"sort": "x"}, "unknown query argument"),
    ],
)
def test_parse_query_rejects_args_when_malformed(args: dict[str, object], message: str) -> None:
    """Bad query args get invalid_request naming the problem."""
    with pytest.raises(InvalidRequestError, match=message):
        parse_query(args)


@pytest.fixture
def filled(sm: KvStateMachine) -> Driver:
    d = Driver(sm)
    items = [["user:1", {"age": 20}], ["user:2", {"age": 40}], ["user:10", {"age": 60}],
             ["admin:1", {"age": 50}], ["userx", 1], ["zeta", "z"]]
    d.do("put_many", {"items": items})
    d.do("put", {"key": "user:3", "value": {"age": 45}, "ttl": 1})
    return d


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ({}, ["admin:1", "user:1", "user:10", "user:2", "user:3", "userx", "zeta"]),
        ({"prefix": "user:"}, ["user:1", "user:10", "user:2", "user:3"]),
        ({"suffix": ":1"}, ["admin:1", "user:1"]),
        ({"contains": "er:1"}, ["user:1", "user:10"]),
        ({"pattern": r"^user:\d$"}, ["user:1", "user:2", "user:3"]),
        ({"range": ["user:10", "user:3"]}, ["user:10", "user:2", "user:3"]),
        ({"range": [None, "b"]}, ["admin:1"]),
        ({"range": ["user:2", None], "prefix": "user"}, ["user:2", "user:3", "userx"]),
        ({"prefix": "user:", "range": ["a", "user:11"]}, ["user:1", "user:10"]),
        ({"where": ["ge", "age", 45]}, ["admin:1", "user:10", "user:3"]),
        ({"prefix": "user:", "offset": 1, "limit": 2}, ["user:10", "user:2"]),
        ({"prefix": "nope"}, []),
    ],
)
def test_keys_selects_matches_when_queried(
    filled: Driver, args: dict[str, object], keys: list[str]
) -> None:
    """Key conditions combine with AND; results come in key order."""
    assert keys == filled.sm.keys(args, filled.ts_ms)["keys"]


def test_query_hides_due_keys_when_now_passes_expiry(filled: Driver) -> None:
    """Reads at a later cluster time hide keys whose TTL is due."""
    assert {"count": 6} == filled.sm.count({}, 2_000)
    assert {"count": 7} == filled.sm.count({"limit": 1}, 1_999)


def test_query_reports_more_when_limit_cuts_results(filled: Driver) -> None:
    """more is true only when further matches exist."""
    page = filled.sm.query({"prefix": "user:", "limit": 2}, filled.ts_ms)
    assert {"items": [["user:1", {"age": 20}], ["user:10", {"age": 60}]], "more": True} == page
    rest = filled.sm.query({"prefix": "user:", "offset": 2, "limit": 2}, filled.ts_ms)
    assert False is rest["more"]


def test_read_rejects_request_when_malformed(filled: Driver) -> None:
    """Read ops validate their args like writes do."""
    sm, ts = filled.sm, filled.ts_ms
    assert "invalid_key" == sm.read("get", {"key": ""}, ts)["error"]
    assert "invalid_request" == sm.read("get", {"key": "a", "x": 1}, ts)["error"]
    assert "invalid_request" == sm.read("get", {"key": "zeta", "meta": 1}, ts)["error"]
    assert "too_many_items" == sm.read("get_many", {"keys": ["a"] * 501}, ts)["error"]
    assert "invalid_request" == sm.read("get_all", {"after": 3}, ts)["error"]
    assert "invalid_request" == sm.read("keys", {"pattern": "("}, ts)["error"]
    assert "invalid_request" == sm.read("nope", {}, ts)["error"]
    assert "invalid_request" == sm.read_request({"op": "put", "key": "a"}, ts)["error"]
    ok = sm.read_request({"op": "get", "id": 3, "key": "zeta", "consistency": "strong"}, ts)
    assert {"value": "z"} == ok


class ListSource:
    """A second KeySource: a plain sorted list and a dict, as another store would be."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self._records = {r.key: r for r in records}
        self._keys = sorted(self._records)

    def get_record(self, key: str) -> KeyRecord | None:
        return self._records.get(key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        if start is None:
            return iter(self._keys)
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        return iter(self._keys[find(self._keys, start):])

    def index_set(self) -> IndexSet | None:
        return None


@pytest.mark.parametrize(
    "args",
    [{}, {"prefix": "user:"}, {"where": ["gt", "age", 30]}, {"range": ["b", "v"], "limit": 2}],
)
def test_other_key_source_gives_same_answers_when_holding_same_records(
    filled: Driver, args: dict[str, object]
) -> None:
    """The engine works over any KeySource (the shared-memory store implements one)."""
    other = ListSource(list(filled.sm.records()))
    for op in ("keys", "query", "count"):
        assert filled.sm.read(op, args, 1_500) == serve_read(other, op, args, 1_500)
    assert filled.sm.get_all(1_500, after="user:1") == serve_read(
        other, "get_all", {"after": "user:1"}, 1_500
    )


def test_query_skips_record_when_value_does_not_decode() -> None:
    """A corrupt stored value never crashes a filtered query (it just does not match)."""
    bad = KeyRecord("a", b"\xc1", 0, 1, 1, 1)
    good = KeyRecord("b", msgpack.packb({"x": 1}), 0, 1, 1, 1)
    got = serve_read(ListSource([bad, good]), "keys", {"where": ["exists", "x"]}, 0)
    assert {"keys": ["b"], "more": False} == got


QUERY_KEYS = st.lists(st.text(alphabet="ab:é", min_size=1, max_size=4), unique=True, max_size=15)
FRAGMENTS = st.text(alphabet="ab:é", max_size=2)


@pytest.mark.slow
@KV_SETTINGS
@given(
    QUERY_KEYS,
    st.fixed_dictionaries(
        {},
        optional={
            "prefix": FRAGMENTS,
            "suffix": FRAGMENTS,
            "contains": FRAGMENTS,
            "range": st.tuples(st.one_of(st.none(), FRAGMENTS), st.one_of(st.none(), FRAGMENTS)),
            "limit": st.integers(0, 5),
            "offset": st.integers(0, 5),
        },
    ),
)
def test_keys_equal_naive_filter_when_query_is_random(
    keys: list[str], args: dict[str, object]
) -> None:
    """keys/count/query agree with filtering the sorted key list by hand."""
    rng = args.get("range")
    if isinstance(rng, tuple):
        lo, hi = rng
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        args["range"] = [lo, hi]
    sm = KvStateMachine()
    if keys:
        sm.apply(1, 0, encode_command("put_many", {"items": [[k, k] for k in keys]}))
    lo, hi = args.get("range", [None, None])  # type: ignore[misc]
    expected = [
        k for k in sorted(keys)
        if k.startswith(str(args.get("prefix", "")))
        and k.endswith(str(args.get("suffix", "")))
        and str(args.get("contains", "")) in k
        and (lo is None or k >= lo)
        and (hi is None or k <= hi)
    ]
    assert {"count": len(expected)} == sm.count(args, 0)
    offset = int(args.get("offset", 0))  # type: ignore[call-overload]
    limit = int(args.get("limit", 1000))  # type: ignore[call-overload]
    page = expected[offset: offset + limit]
    more = len(expected) > offset + limit
    assert {"keys": page, "more": more} == sm.keys(args, 0)
    assert {"items": [[k, k] for k in page], "more": more} == sm.query(args, 0)
