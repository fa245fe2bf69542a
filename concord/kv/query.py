"""
The query engine: key selection (prefix, suffix, contains, regex, range), value filters
(`where`), limit/offset, over any `KeySource`.

Pure. No clock: callers pass `now_ms` (cluster time); a record with
0 < expires_at_ms <= now_ms is hidden. The same code serves queries from the state
machine's in-memory store and from the shared-memory store's reader-side index.

Filter syntax (msgpack-able; docs/formats/kv.md):

    ["eq" | "ne" | "lt" | "le" | "gt" | "ge", field, value]
    ["in", field, [value, ...]]
    ["prefix", field, str | bytes]
    ["exists", field]
    ["and", filter, ...]   ["or", filter, ...]   ["not", filter]

`field` is a path: "a.b.0" or ["a", "b.c", 0]; "" is the whole value. A path that does
not resolve makes every comparison false (ne too); `exists` tests it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, Union

from concord.errors import InvalidRequestError
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.index import IndexSet
from concord.kv.record import KeyRecord
from concord.kv.values import (
    MISSING,
    Path,
    compare,
    parse_path,
    record_value,
    resolve,
    sort_key,
    values_equal,
)

MAX_PATTERN_CHARS: Final = 1024
MAX_FILTER_NODES: Final = 256
MAX_FILTER_DEPTH: Final = 32
QUERY_ARGS: Final = frozenset(
    {"prefix", "suffix", "contains", "pattern", "range", "where", "limit", "offset"}
)


class KeySource(Protocol):
    """
    A sorted store of records the query engine reads.

    Implemented by the state machine (`KvStateMachine`) and by the shared-memory reader.
    Records returned may be expired: the engine hides them using `now_ms`.
    """

    def get_record(self, key: str) -> KeyRecord | None:
        """The user record of `key`, or None."""
        ...

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        """User keys in ascending order (code point order), from `start` on."""
        ...

    def index_set(self) -> IndexSet | None:
        """The secondary indexes, or None if this source keeps none."""
        ...


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """The value at `path` compared with `operand` (eq ne lt le gt ge in prefix exists)."""

    op: str
    path: Path
    operand: object


@dataclass(frozen=True, slots=True)
class Junction:
    """op is "and" or "or"."""

    op: str
    children: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    child: Filter


Filter = Union[Compare, Junction, Negation]

_COMPARISONS: Final = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "prefix"})


def parse_filter(raw: object) -> Filter:
    """
    Parse a `where` filter.

    Raises:
        InvalidRequestError: naming what is wrong with its shape.
    """
    count = [0]
    return _parse_filter(raw, 0, count)


def _parse_filter(raw: object, depth: int, count: list[int]) -> Filter:
    count[0] += 1
    if count[0] > MAX_FILTER_NODES:
        raise InvalidRequestError(f"filter has more than {MAX_FILTER_NODES} nodes")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidRequestError(f"filter nests deeper than {MAX_FILTER_DEPTH}")
    if not isinstance(raw, (list, tuple)) or not raw or not isinstance(raw[0], str):
        raise InvalidRequestError(f"a filter must be a list [op, ...], got {raw!r}")
    op = raw[0]
    args = raw[1:]
    if op in ("and", "or"):
        if not args:
            raise InvalidRequestError(f"{op} needs at least one filter")
        return Junction(op, tuple(_parse_filter(a, depth + 1, count) for a in args))
    if op == "not":
        if len(args) != 1:
            raise InvalidRequestError("not takes exactly one filter")
        return Negation(_parse_filter(args[0], depth + 1, count))
    if op == "exists":
        if len(args) != 1:
            raise InvalidRequestError("exists takes exactly one field")
        return Compare(op, parse_path(args[0]), None)
    if op in _COMPARISONS:
        if len(args) != 2:
            raise InvalidRequestError(f"{op} takes a field and a value")
        operand = args[1]
        if op == "in" and not isinstance(operand, (list, tuple)):
            raise InvalidRequestError("in takes a list of values")
        if op == "prefix" and not isinstance(operand, (str, bytes)):
            raise InvalidRequestError("prefix takes a string or bytes")
        return Compare(op, parse_path(args[0]), operand)
    raise InvalidRequestError(f"unknown filter op {op!r}")


def matches(flt: Filter, value: object) -> bool:
    """Whether a decoded value satisfies a filter."""
    if isinstance(flt, Compare):
        found = resolve(value, flt.path)
        if flt.op == "exists":
            return found is not MISSING
        if found is MISSING:
            return False
        op = flt.op
        if op == "eq":
            return values_equal(found, flt.operand)
        if op == "ne":
            return not values_equal(found, flt.operand)
        if op == "in":
            assert isinstance(flt.operand, (list, tuple))
            return any(values_equal(found, item) for item in flt.operand)
        if op == "prefix":
            operand = flt.operand
            if isinstance(operand, str):
                return isinstance(found, str) and found.startswith(operand)
            assert isinstance(operand, bytes)
            return isinstance(found, bytes) and found.startswith(operand)
        order = compare(found, flt.operand)
        if order is None:
            return False
        if op == "lt":
            return order < 0
        if op == "le":
            return order <= 0
        if op == "gt":
            return order > 0
        return order >= 0
    if isinstance(flt, Junction):
        if flt.op == "and":
            return all(matches(c, value) for c in flt.children)
        return any(matches(c, value) for c in flt.children)
    return not matches(flt.child, value)


# --- query specs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """
    A validated query: key conditions, value filter and paging.

    `lo`/`hi` bound an inclusive key range (None: open). `limit` None means the
    caller's default.
    """

    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    pattern: re.Pattern[str] | None = None
    lo: str | None = None
    hi: str | None = None
    where: Filter | None = None
    limit: int | None = None
    offset: int = 0


def _opt_str(args: Mapping[str, object], name: str) -> str | None:
    value = args.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, got {value!r}")
    return value


def parse_query(args: Mapping[str, object], config: KvConfig = DEFAULT_CONFIG) -> QuerySpec:
    """
    Validate query arguments (prefix, suffix, contains, pattern, range, where, limit,
    offset; all optional).

    Raises:
        InvalidRequestError: unknown argument, bad type, bad regex, bad filter shape.
    """
    for name in args:
        if name not in QUERY_ARGS:
            raise InvalidRequestError(f"unknown query argument {name!r}")
    pattern = None
    text = _opt_str(args, "pattern")
    if text is not None:
        if len(text) > MAX_PATTERN_CHARS:
            raise InvalidRequestError(f"pattern is longer than {MAX_PATTERN_CHARS} characters")
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise InvalidRequestError(f"bad regex pattern {text!r}: {exc}") from exc
    lo = hi = None
    rng = args.get("range")
    if rng is not None:
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise InvalidRequestError("range must be [lo, hi]")
        lo, hi = rng
        for bound in (lo, hi):
            if bound is not None and not isinstance(bound, str):
                raise InvalidRequestError(f"range bounds must be strings or nil, got {bound!r}")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidRequestError(f"range lo {lo!r} is above hi {hi!r}")
    where = args.get("where")
    limit = args.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= config.max_limit
    ):
        raise InvalidRequestError(
            f"limit must be an integer in 0..{config.max_limit}, got {limit!r}"
        )
    offset = args.get("offset", 0)
    if offset is None:
        offset = 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequestError(f"offset must be an integer >= 0, got {offset!r}")
    return QuerySpec(
        prefix=_opt_str(args, "prefix"),
        suffix=_opt_str(args, "suffix"),
        contains=_opt_str(args, "contains"),
        pattern=pattern,
        lo=lo,
        hi=hi,
        where=None if where is None else parse_filter(where),
        limit=limit,
        offset=offset,
    )


# --- evaluation ---------------------------------------------------------------------------


def is_live(record: KeyRecord, now_ms: int) -> bool:
    """Whether a record is visible at `now_ms` (not due to expire)."""
    return record.expires_at_ms == 0 or record.expires_at_ms > now_ms


def _key_ok(spec: QuerySpec, key: str) -> bool:
    if spec.prefix is not None and not key.startswith(spec.prefix):
        return False
    if spec.lo is not None and key < spec.lo:
        return False
    if spec.hi is not None and key > spec.hi:
        return False
    if spec.suffix is not None and not key.endswith(spec.suffix):
        return False
    if spec.contains is not None and spec.contains not in key:
        return False
    return spec.pattern is None or spec.pattern.search(key) is not None


def _index_clause(flt: Filter, indexes: IndexSet) -> list[str] | None:
    """Candidate keys (sorted) from an index serving a clause that must hold, or None."""
    if isinstance(flt, Junction):
        if flt.op == "and":
            for child in flt.children:
                found = _index_clause(child, indexes)
                if found is not None:
                    return found
        return None
    if not isinstance(flt, Compare) or flt.op not in ("eq", "in", "lt", "le", "gt", "ge"):
        return None
    index = indexes.for_path(flt.path)
    if index is None:
        return None
    # An index holds scalars only: an operand it cannot hold (a list or map to compare
    # equal) could match values the index lacks, so such clauses are served by a scan.
    if flt.op == "eq" and sort_key(flt.operand) is None:
        return None
    if flt.op == "in":
        assert isinstance(flt.operand, (list, tuple))
        if any(sort_key(item) is None for item in flt.operand):
            return None
    try:
        if flt.op == "eq":
            keys = index.equal(flt.operand)
        elif flt.op == "in":
            assert isinstance(flt.operand, (list, tuple))
            keys = [k for item in flt.operand for k in index.equal(item)]
        elif flt.op in ("lt", "le"):
            keys = index.range(hi=flt.operand, hi_inclusive=flt.op == "le")
        else:
            keys = index.range(lo=flt.operand, lo_inclusive=flt.op == "ge")
    except InvalidRequestError:
        return None
    return sorted(set(keys))


def _candidates(source: KeySource, spec: QuerySpec) -> Iterator[str]:
    indexes = source.index_set()
    if spec.where is not None and indexes:
        keys = _index_clause(spec.where, indexes)
        if keys is not None:
            yield from keys
            return
    start = spec.lo
    if spec.prefix is not None and (start is None or spec.prefix > start):
        start = spec.prefix
    for key in source.iter_keys(start):
        if spec.hi is not None and key > spec.hi:
            return
        if spec.prefix is not None and not key.startswith(spec.prefix):
            return  # sorted: past the prefix (start >= prefix)
        yield key


def scan(source: KeySource, spec: QuerySpec, now_ms: int) -> Iterator[tuple[KeyRecord, object]]:
    """
    Every live record matching `spec` in key order, with its decoded value (MISSING when
    the query has no filter, to spare decoding), before offset and limit.
    """
    for key in _candidates(source, spec):
        if not _key_ok(spec, key):
            continue
        record = source.get_record(key)
        if record is None or not is_live(record, now_ms):
            continue
        value: object = MISSING
        if spec.where is not None:
            try:
                value = record_value(record)
            except ValueError:
                continue
            if not matches(spec.where, value):
                continue
        yield record, value


def select(
    source: KeySource, spec: QuerySpec, now_ms: int, default_limit: int
) -> tuple[list[tuple[KeyRecord, object]], bool]:
    """
    The page of matches that offset and limit pick.

    Returns:
        (matches, more): `more` is True when further matches follow the page.
    """
    limit = default_limit if spec.limit is None else spec.limit
    out: list[tuple[KeyRecord, object]] = []
    skipped = 0
    for item in scan(source, spec, now_ms):
        if skipped < spec.offset:
            skipped += 1
            continue
        if len(out) == limit:
            return out, True
        out.append(item)
    return out, False


def count(source: KeySource, spec: QuerySpec, now_ms: int) -> int:
    """How many live records match (offset and limit are ignored)."""
    return sum(1 for _ in scan(source, spec, now_ms))
