"""The audit log writer and reader: chain, verify, rotation, retention, restart (concord/audit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from concord.audit.door import audited_ops
from concord.audit.identity import token_id
from concord.audit.log import AuditLog, AuditOptions, list_files
from concord.audit.reader import Filter, parse_since, select, verify
from concord.audit.record import AuditKeys, request_fields, trace_id_of

SECRET = b"cluster-secret-for-tests"
KEYS = AuditKeys(SECRET, ("config/",))


def _log(folder: Path, **options: object) -> AuditLog:
    return AuditLog(AuditOptions(folder=folder, node="n1", **options), KEYS)  # type: ignore[arg-type]


def _write(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        fields = request_fields(KEYS, "put", {"key": f"user:{i}", "value": "v"}, None, None, None)
        log.append({**fields, "client": "127.0.0.1", "result": "ok", "revision": i + 10})
        log.flush()  # as the front door does once per poll round


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_verify_passes_when_lines_were_written_by_the_log(tmp_path: Path) -> None:
    """An untouched log verifies: every hash, prev and seq in order."""
    log = _log(tmp_path)
    _write(log, 20)
    log.close()
    report = verify(tmp_path, KEYS)
    assert (True, 21, 1, 21) == (report.ok, report.lines, report.first_seq, report.last_seq)


def test_verify_reports_the_line_when_one_was_edited(tmp_path: Path) -> None:
    """Changing a field of one line (here its result) breaks that line's hash."""
    log = _log(tmp_path)
    _write(log, 10)
    log.close()
    [(_, path)] = list_files(tmp_path)
    lines = _lines(path)
    lines[5] = lines[5].replace('"result":"ok"', '"result":"forbidden"')
    path.write_text("\n".join(lines) + "\n")
    report = verify(tmp_path, KEYS)
    assert [f"{path.name}:6: hash does not match the line (edited, seq 6)"] == report.problems


def test_verify_reports_a_hole_when_a_line_was_deleted(tmp_path: Path) -> None:
    """Removing one line breaks the next line's prev and seq."""
    log = _log(tmp_path)
    _write(log, 10)
    log.close()
    [(_, path)] = list_files(tmp_path)
    lines = _lines(path)
    del lines[4]
    path.write_text("\n".join(lines) + "\n")
    problems = verify(tmp_path, KEYS).problems
    assert 2 == len(problems)
    assert "prev does not match" in problems[0] and "seq jumps from 4 to 6" in problems[1]


def test_verify_fails_when_the_chain_is_recomputed_without_the_secret(tmp_path: Path) -> None:
    """The chain is keyed: lines re-hashed with another secret do not verify."""
    log = AuditLog(AuditOptions(folder=tmp_path, node="n1"), AuditKeys(b"forger"))
    _write(log, 3)
    log.close()
    assert not verify(tmp_path, KEYS).ok


@pytest.mark.slow
def test_chain_spans_files_when_the_live_file_rotates(tmp_path: Path) -> None:
    """Rotation by size opens numbered files; the chain runs across them; a removed
    middle file, or a line deleted in a rotated file, is reported."""
    log = _log(tmp_path, max_file_bytes=4096)
    _write(log, 200)
    log.close()
    files = list_files(tmp_path)
    assert len(files) >= 3
    assert all(os.path.getsize(p) < 4096 + 1024 for _, p in files)
    assert verify(tmp_path, KEYS).ok
    first = json.loads(_lines(files[1][1])[0])
    assert ("audit_open", "rotate", files[1][0]) == (first["op"], first["reason"], first["file"])
    lines = _lines(files[0][1])
    files[0][1].write_text("\n".join(lines[:-1]) + "\n")  # the last line of a rotated file
    assert any("prev does not match" in p for p in verify(tmp_path, KEYS).problems)
    files[1][1].unlink()
    assert any(f"{files[1][1].name} is missing" in p for p in verify(tmp_path, KEYS).problems)


def test_retention_deletes_old_rotated_files_when_they_are_past_the_days(tmp_path: Path) -> None:
    """Rotated files older than retention_days go; the chain still verifies (the retention
    line records where it starts); removing the oldest file by hand is reported."""
    log = _log(tmp_path, max_file_bytes=4096, retention_days=1.0)
    _write(log, 100)
    old = [p for _, p in list_files(tmp_path)][:-1]
    for path in old[:2]:
        os.utime(path, (1.0, 1.0))  # 1970: far past the retention
    deleted = log.apply_retention()
    log.close()
    assert [p.name for p in old[:2]] == deleted
    assert all(not p.exists() for p in old[:2])
    report = verify(tmp_path, KEYS)
    assert report.ok, report.problems
    oldest = list_files(tmp_path)[0][1]
    oldest.unlink()
    assert any("no retention line recorded" in p for p in verify(tmp_path, KEYS).problems)


def test_retention_keeps_files_when_they_are_younger(tmp_path: Path) -> None:
    """Fresh rotated files stay; 0 days keeps everything."""
    log = _log(tmp_path, max_file_bytes=4096, retention_days=1.0)
    _write(log, 100)
    assert [] == log.apply_retention()
    log.close()


def test_chain_continues_when_the_log_is_reopened_after_a_torn_line(tmp_path: Path) -> None:
    """A restart opens a new file continuing the chain; a torn last line is cut and counted."""
    log = _log(tmp_path)
    _write(log, 5)
    log.close()
    [(_, path)] = list_files(tmp_path)
    with open(path, "ab") as handle:
        handle.write(b'{"v":1,"seq":7,"tor')
    log = _log(tmp_path)
    _write(log, 5, start=5)
    log.close()
    files = list_files(tmp_path)
    assert 2 == len(files)
    opening = json.loads(_lines(files[1][1])[0])
    assert ("start", len(b'{"v":1,"seq":7,"tor')) == (opening["reason"], opening["truncated_bytes"])
    report = verify(tmp_path, KEYS)
    assert (True, 12) == (report.ok, report.last_seq), report.problems


def test_lines_hold_hmacs_and_ids_only_when_secrets_are_in_the_request(tmp_path: Path) -> None:
    """Keys outside loggable prefixes, values and the token's secret never reach the file."""
    log = _log(tmp_path)
    secret_token = "sk_concord_abc123_s3cr3tPart-xyz"
    for op, args in (("put", {"key": "user:alice", "value": "hunter2"}),
                     ("put_many", {"items": [["user:bob", "pw-bob"], ["config/x", 1]]}),
                     ("put", {"key": "config/flag", "value": "flag-value-on"})):
        fields = request_fields(KEYS, op, args, secret_token, "team-a", None)
        log.append({**fields, "client": None, "result": "ok", "revision": 1})
    log.close()
    text = "".join(p.read_text() for _, p in list_files(tmp_path))
    for secret in ("user:alice", "hunter2", "user:bob", "pw-bob", "s3cr3tPart", secret_token, "flag-value-on"):
        assert secret not in text
    assert "config/flag" in text and "config/x" in text and '"token_id":"abc123"' in text
    rows = list(select(tmp_path, Filter(key="user:bob"), KEYS))
    assert ["put_many"] == [r["op"] for r in rows]


def test_token_id_is_none_when_the_token_has_another_shape() -> None:
    """Only `sk_concord_<id>_<secret>` yields an id; anything else could be all secret."""
    assert "id1" == token_id("sk_concord_id1_secret_with_underscores")
    assert [None] * 5 == [token_id(t) for t in (None, "plainsecret", "sk_concord_", "sk_concord_id",
                                               "sk_concord__x")]


def test_trace_id_is_read_when_the_traceparent_is_w3c() -> None:
    """00-<32 hex>-<16 hex>-<2 hex>; all-zero or malformed ids give None."""
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tid == trace_id_of(f"00-{tid}-00f067aa0ba902b7-01")
    assert [None] * 3 == [trace_id_of(t) for t in (None, "00-abc", f"00-{'0' * 32}-00f067aa0ba902b7-01")]


def test_audited_ops_are_writes_and_admin_when_reads_are_off() -> None:
    """Derived from the op table's kinds: put and add_member in, get only with log_reads."""
    ops = audited_ops(False)
    assert {"put", "delete", "put_many", "add_member", "transfer_leader"} <= ops
    assert "get" not in ops and "get" in audited_ops(True)


def test_since_is_a_time_prefix_when_given_a_duration_or_a_date() -> None:
    """--since 2h is two hours before now; a date is compared as a prefix; junk is refused."""
    assert "1970-01-01T00:00:00" == parse_since("2h", now=7200.0)
    assert "2026-12-07T07:00:00" == parse_since("2026-12-07T07:00:00Z")
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday")


def test_interval_fsync_runs_off_the_writing_thread_when_lines_were_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync = "interval": the syncer thread fsyncs written lines; the caller never does."""
    import threading

    from tests.helpers import wait_until

    real_fsync = os.fsync
    callers: list[str] = []

    def fsync(fd: int) -> None:
        callers.append(threading.current_thread().name)
        real_fsync(fd)

    log = _log(tmp_path, fsync="interval", fsync_interval_ms=10)
    monkeypatch.setattr(os, "fsync", fsync)
    fields = request_fields(KEYS, "put", {"key": "k"}, None, None, None)
    log.append({**fields, "client": None, "result": "ok", "revision": 1})
    log.tick()
    wait_until(lambda: "audit-fsync" in callers, 5.0, lambda: f"fsync callers: {callers}")
    assert {"audit-fsync"} == set(callers)
    log.close()
