"""Repository-wide rules that code review alone would miss."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def test_only_wait_until_sleeps_when_scanning_tests() -> None:
    """No test synchronizes by sleeping: only tests/helpers.py may call time.sleep."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "helpers.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "sleep"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "time"
            ):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert [] == offenders
