"""Golden interaction scripts (tests/raft/testdata/*.txt), etcd-io/raft style."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.interaction import check_file, parse, render

TESTDATA = Path(__file__).with_name("testdata")
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_output_matches_golden_when_replayed(path: Path) -> None:
    """Each command's described output equals the recorded one."""
    check_file(path)


def test_scripts_parse_when_rendered_back() -> None:
    """The script format round-trips, so rewrites only change outputs."""
    text = "campaign a\n----\nok\n\nraft-log a\n----\n1/1 EntryNormal b''\n"
    assert text == render(parse(text))
