"""The documentation stays true to the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_links_resolve_when_scanning_readme() -> None:
    """Every relative link in README.md names a file that exists."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#:]+)\)", text)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert [] == missing


def test_code_references_in_docs_name_files_that_exist_when_scanning_docs() -> None:
    """Every `concord/...`, `supervisor/...`, `tests/...` or `bench/...` path in the docs exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pattern = re.compile(r"`((?:concord|supervisor|tests|bench)/[A-Za-z0-9_./-]+?)(?:::[A-Za-z0-9_]+)?`")
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in pages
        for path in pattern.findall(page.read_text())
        if not (ROOT / path.rstrip("/")).exists()
    ]
    assert [] == missing


def test_cli_doc_has_a_section_per_command_when_compared_to_the_parser() -> None:
    """docs/cli.md documents exactly the top-level commands of `concord`."""
    import argparse

    from concord.cli.main import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = (ROOT / "docs" / "cli.md").read_text()
    documented = set(re.findall(r"^### ([a-z-]+)$", text, flags=re.MULTILINE))
    assert set(commands.choices) == documented
