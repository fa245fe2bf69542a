"""`concord audit query|export|hash|verify` over a log folder (concord/cli/audit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concord.audit.log import AuditLog, AuditOptions, list_files
from concord.audit.record import AuditKeys, request_fields
from concord.cli.main import main as cli

SECRET = b"cli-test-secret"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    keys = AuditKeys(SECRET)
    log = AuditLog(AuditOptions(folder=tmp_path / "audit", node="n1"), keys)
    for op, args, token, result in (
        ("put", {"key": "a", "value": 1}, "sk_concord_alice_x", "ok"),
        ("delete", {"key": "b"}, "sk_concord_bob_y", "ok"),
        ("put", {"key": "b", "value": 2}, None, "not_leader"),
        ("delete_many", {"keys": ["a", "c"]}, None, "ok"),
    ):
        log.append({**request_fields(keys, op, args, token, None, None), "client": "127.0.0.1",
                    "result": result, "revision": None})
    log.close()
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    return tmp_path


def _where(folder: Path) -> list[str]:
    return ["--dir", str(folder / "audit"), "--secret-file", str(folder / "secret")]


def _json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    return rows


def test_query_selects_lines_when_filters_are_given(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--key matches by HMAC (bulk keys too), --op/--result/--token filter; all must hold."""
    assert 0 == cli(["-w", "json", "audit", "query", *_where(folder), "--key", "a"])
    assert ["put", "delete_many"] == [r["op"] for r in _json(capsys)]
    assert 0 == cli(["-w", "json", "audit", "query", *_where(folder), "--op", "put", "--result", "ok"])
    assert [("put", "alice")] == [(r["op"], r["token_id"]) for r in _json(capsys)]
    assert 0 == cli(["-w", "json", "audit", "query", *_where(folder), "--token", "bob"])
    assert ["delete"] == [r["op"] for r in _json(capsys)]


def test_hash_prints_the_logged_hmac_when_given_a_key(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The printed HMAC is the one in the line of that key."""
    assert 0 == cli(["audit", "hash", "--secret-file", str(folder / "secret"), "b"])
    digest = capsys.readouterr().out.strip()
    [(_, path)] = list_files(folder / "audit")
    assert f'"key_hmac":"{digest}"' in path.read_text()


def test_export_writes_every_line_when_asked(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Export is the lines as stored, the log's own audit_open included."""
    out = folder / "out.jsonl"
    assert 0 == cli(["audit", "export", "--dir", str(folder / "audit"), "--out", str(out)])
    [(_, path)] = list_files(folder / "audit")
    assert path.read_text() == out.read_text()


def test_errors_name_the_problem_when_the_secret_or_folder_is_missing(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No secret for --key or verify, or no such folder: exit 2 with one line."""
    assert 2 == cli(["audit", "verify", "--dir", str(folder / "audit")])
    assert "audit secret is needed" in capsys.readouterr().err
    assert 2 == cli(["audit", "query", "--dir", str(folder / "nowhere")])
    assert "does not exist" in capsys.readouterr().err
    assert 2 == cli(["audit", "query", "--dir", str(folder / "audit"), "--since", "soon"])
    assert "--since" in capsys.readouterr().err
