"""Every python example of docs/recipes.md runs against a real node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.conftest import ClusterFactory, cluster  # noqa: F401 - the fixture

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
_BLOCK = re.compile(r"^## (?P<title>.+?)$|^```python\n(?P<code>.*?)^```$", re.S | re.M)


def examples() -> list[tuple[str, str]]:
    """(section title, code) of every python block, in page order."""
    out, title = [], ""
    for m in _BLOCK.finditer(DOC.read_text()):
        if m.group("title"):
            title = m.group("title")
        else:
            out.append((title, m.group("code")))
    return out


def test_every_use_case_has_an_example_when_the_page_is_read() -> None:
    """Feature flags, sessions, lock, election, configuration, rate limiter, discovery."""
    titles = {title for title, _ in examples()}
    for needed in ("Feature flags", "User sessions", "Distributed lock with a fencing token",
                   "Leader election", "Configuration", "Rate limiter",
                   "Service discovery with leases"):
        assert needed in titles


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_example_runs_when_a_node_serves(cluster: ClusterFactory) -> None:  # noqa: F811
    """Each block runs in a fresh namespace with ENDPOINT; an example's asserts must hold."""
    c = cluster(1)
    c.wait_leader()
    endpoint = c.nodes[c.ids[0]].client
    ran = []
    for title, code in examples():
        namespace: dict[str, object] = {"ENDPOINT": endpoint, "__name__": "recipes_example"}
        try:
            exec(compile(code, f"docs/recipes.md: {title}", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - name the example that failed
            raise AssertionError(f"the example of {title!r} failed: {exc!r}") from exc
        ran.append(title)
    assert len(ran) >= 8
