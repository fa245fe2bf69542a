"""The metric names a PromQL expression reads, and those of the shipped deploy/ files."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "concord.json"

#: Series Prometheus makes itself for every target (not exported by a node).
SYNTHETIC = frozenset({"up"})

_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "offset", "bool", "inf", "nan"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Names of the series `expr` selects (functions, keywords, labels and ranges skipped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        word = match.group(0)
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def alert_exprs() -> list[str]:
    """The `expr:` of every rule in alerts.yml (a block scalar or one line)."""
    exprs: list[str] = []
    lines = ALERTS.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        value = stripped[len("expr:"):].strip()
        if value in ("|", ">"):
            indent = len(line) - len(line.lstrip()) + 2
            block = []
            for follow in lines[i + 1:]:
                if follow.strip() and len(follow) - len(follow.lstrip()) < indent:
                    break
                block.append(follow.strip())
            value = " ".join(block)
        exprs.append(value)
    return exprs


def dashboard_exprs() -> list[str]:
    """The `expr` of every panel target in the Grafana dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def deploy_metric_names() -> set[str]:
    """Every series name the dashboard and the alert rules read, Prometheus's own excluded."""
    names: set[str] = set()
    for expr in (*alert_exprs(), *dashboard_exprs()):
        names |= metric_names(expr)
    return names - SYNTHETIC
