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


#: The longest function body (docstring aside) the code may have, in lines.
MAX_FUNCTION_LINES = 60
#: Functions allowed over MAX_FUNCTION_LINES, by qualified name, and why (none today).
LONG_FUNCTIONS: dict[str, str] = {}


def _functions(tree: ast.AST, prefix: str) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method under `tree`, nested ones too, with its qualified name."""
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((f"{prefix}.{node.name}", node))
            out.extend(_functions(node, f"{prefix}.{node.name}"))
        elif isinstance(node, ast.ClassDef):
            out.extend(_functions(node, f"{prefix}.{node.name}"))
        else:
            out.extend(_functions(node, prefix))
    return out


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line."""
    body = fn.body
    first = body[0]
    if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        first = body[1]
    assert fn.end_lineno is not None
    return fn.end_lineno - first.lineno + 1


def long_functions(paths: list[Path], root: Path) -> dict[str, int]:
    """Qualified name -> body lines of every function over MAX_FUNCTION_LINES in `paths`."""
    out: dict[str, int] = {}
    for path in paths:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for name, fn in _functions(ast.parse(path.read_text(), filename=str(path)), module):
            if body_lines(fn) > MAX_FUNCTION_LINES:
                out[name] = body_lines(fn)
    return out


def _concord_long_functions() -> dict[str, int]:
    root = TESTS.parent
    return long_functions(sorted((root / "concord").rglob("*.py")), root)


def test_functions_are_short_when_scanning_concord() -> None:
    """No function in concord/ has a body over 60 lines, unless LONG_FUNCTIONS says why."""
    found = _concord_long_functions()
    assert {} == {name: lines for name, lines in found.items() if name not in LONG_FUNCTIONS}


def test_long_function_allowlist_is_current_when_scanning_concord() -> None:
    """Every LONG_FUNCTIONS entry names a function that is still over the limit (no stale excuses)."""
    assert set() == set(LONG_FUNCTIONS) - set(_concord_long_functions())


def test_function_length_check_fails_when_a_long_function_is_added(tmp_path: Path) -> None:
    """A 61-line body is caught (the docstring does not count), a 60-line one is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    lines = "".join(f"        x{i} = {i}\n" for i in range(60))
    (pkg / "mod.py").write_text(
        "class C:\n"
        "    def fits(self) -> None:\n"
        '        """A docstring\n\n        of several lines."""\n'
        f"{lines}"
        "    def too_long(self) -> int:\n"
        f"{lines}"
        "        return 0\n"
    )
    assert {"pkg.mod.C.too_long": 61} == long_functions([pkg / "mod.py"], tmp_path)
