"""
Reading an audit log folder back (concord/audit/log.py writes it): verify the hash
chain, select lines, export them. Read-only; used by `concord audit` offline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from concord.audit.log import file_name, list_files
from concord.audit.record import OPEN, RETENTION, AuditKeys, canonical

__all__ = ["Filter", "Line", "VerifyReport", "parse_since", "read_lines", "select", "verify"]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of one file: where it is, its raw text and its decoded object (None if unreadable)."""

    path: Path
    number: int  # 1-based line number in the file
    text: str
    obj: dict[str, object] | None
    complete: bool  # ended with "\n"


def read_lines(folder: Path) -> Iterator[Line]:
    """Every line of every audit file in `folder`, oldest file first, in order."""
    for _, path in list_files(folder):
        data = path.read_bytes()
        parts = data.split(b"\n")
        for i, raw in enumerate(parts):
            last = i == len(parts) - 1
            if last and not raw:
                break
            text = raw.decode("utf-8", "replace")
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            yield Line(path, i + 1, text, obj if isinstance(obj, dict) else None, not last)


@dataclass(slots=True)
class VerifyReport:
    """What `verify` found: `problems` empty means the chain holds."""

    files: int = 0
    lines: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = ""  # the last line's hash: record it elsewhere to detect a cut tail later
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(folder: Path, keys: AuditKeys) -> VerifyReport:
    """
    Check every file and line of `folder`: file numbers without holes, each file opening
    with its `audit_open` line, every line readable, its `hash` right (an edit), its
    `prev` the hash of the line before and its `seq` one more (a deleted or reordered
    line), across files; and that the oldest file either is the first (number 1) or
    follows files a retention line recorded deleting.
    """
    report = VerifyReport()
    files = list_files(folder)
    report.files = len(files)
    if not files:
        report.problems.append(f"no audit files in {folder}")
        return report
    numbers = [n for n, _ in files]
    for expected in range(numbers[0], numbers[-1] + 1):
        if expected not in numbers:
            report.problems.append(f"{file_name(expected)} is missing (between rotated files)")
    prev: str | None = None  # None: the first line, checked against the anchors below
    seq: int | None = None
    anchor = ""
    retained: set[str] = set()
    current: Path | None = None
    for line in read_lines(folder):
        where = f"{line.path.name}:{line.number}"
        opening = line.path != current
        current = line.path
        obj = line.obj
        if obj is None or not line.complete:
            what = "torn (no newline at the end)" if obj is not None else "not a JSON object"
            report.problems.append(f"{where}: line is {what}")
            prev = None if obj is None else prev
            continue
        report.lines += 1
        stored = obj.pop("hash", None)
        line_prev = obj.get("prev")
        line_seq = obj.get("seq")
        if not isinstance(stored, str) or not isinstance(line_prev, str) or not isinstance(line_seq, int):
            report.problems.append(f"{where}: hash, prev or seq is missing")
            prev = None
            continue
        if keys.chain_hash(line_prev, canonical(obj)) != stored:
            report.problems.append(f"{where}: hash does not match the line (edited, seq {line_seq})")
        if prev is None:
            if report.first_seq is None:
                report.first_seq, anchor = line_seq, line_prev
        elif line_prev != prev:
            report.problems.append(
                f"{where}: prev does not match the hash of the line before (a line was deleted "
                f"or reordered before seq {line_seq})")
        if seq is not None and line_seq != seq + 1:
            report.problems.append(f"{where}: seq jumps from {seq} to {line_seq} (lines deleted)")
        if opening and (obj.get("op") != OPEN or obj.get("file") != _number_of(line.path)):
            report.problems.append(f"{where}: the file does not start with its audit_open line")
        if obj.get("op") == RETENTION:
            last = obj.get("deleted_last_hash")
            if isinstance(last, str):
                retained.add(last)
        prev, seq = stored, line_seq
    report.last_seq, report.head = seq, prev or ""
    if numbers[0] != 1 and anchor not in retained:
        report.problems.append(
            f"{file_name(numbers[0])}: its first line follows a hash no retention line "
            f"recorded (older files were removed by hand)")
    if numbers[0] == 1 and report.first_seq not in (None, 1):
        report.problems.append(f"{file_name(1)}: starts at seq {report.first_seq}, not 1")
    return report


def _number_of(path: Path) -> int:
    return int(path.name[len("audit-"):-len(".jsonl")])


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> str:
    """
    `--since` as the UTC time prefix lines compare against: an RFC 3339 time
    ("2026-12-07T07:00:00Z", "2026-12-07") or a duration back from now ("90m", "2h", "7d").

    Raises:
        ValueError: naming the accepted forms.
    """
    match = _DURATION.match(text)
    if match:
        at = (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    if re.match(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?)?$", text):
        return text.rstrip("Z")
    raise ValueError(f"--since {text!r}: expected a UTC time like 2026-12-07T07:00:00Z "
                     f"or a duration like 90m, 2h, 7d")


@dataclass(frozen=True, slots=True)
class Filter:
    """What `audit query` selects; None: any."""

    ops: Sequence[str] | None = None
    key: str | None = None
    token: str | None = None
    since: str | None = None  # parse_since's form
    results: Sequence[str] | None = None
    include_log_events: bool = False


def select(folder: Path, flt: Filter, keys: AuditKeys | None) -> Iterator[dict[str, object]]:
    """The readable lines of `folder` that match `flt` (keys: needed for `flt.key`)."""
    digest = None
    if flt.key is not None:
        if keys is None:
            raise ValueError("matching a key needs the audit secret")
        digest = keys.hmac(flt.key)
    for line in read_lines(folder):
        obj = line.obj
        if obj is None:
            continue
        op = obj.get("op")
        if not flt.include_log_events and op in (OPEN, RETENTION):
            continue
        if flt.ops is not None and op not in flt.ops:
            continue
        if flt.results is not None and obj.get("result") not in flt.results:
            continue
        if flt.token is not None and obj.get("token_id") != flt.token:
            continue
        if flt.since is not None and str(obj.get("time", "")) < flt.since:
            continue
        if digest is not None:
            many = obj.get("keys_hmac")
            if obj.get("key_hmac") != digest and not (isinstance(many, list) and digest in many):
                continue
        yield obj
