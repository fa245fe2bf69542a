"""docs/security.md states each op's permission exactly as the op table declares it."""

from __future__ import annotations

import re
from pathlib import Path

from concord.net.wire import OPS

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_permission_table_matches_op_table_when_compared() -> None:
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([a-z_]+) \|$", DOC.read_text(), flags=re.MULTILINE))
    assert {name: spec.access.value for name, spec in OPS.items()} == rows
