"""deploy/: the alert rules pass promtool; the dashboard and the rules read exported metrics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from concord.metrics import exposed_names
from tests.metrics.promql import ALERTS, alert_exprs, dashboard_exprs, deploy_metric_names, metric_names


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):  # .ci/run installs it (Debian package prometheus)
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("args", [("check", "rules", "alerts.yml"),
                                  ("test", "rules", "alerts_test.yml")])
def test_promtool_accepts_the_alert_rules_when_checked_and_unit_tested(args: tuple[str, ...]) -> None:
    """`promtool check rules` and `promtool test rules` (firing and silent cases) succeed."""
    result = subprocess.run([_promtool(), *args], cwd=ALERTS.parent, capture_output=True,
                            text=True, timeout=60, check=False)
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_and_alerts_name_only_exported_metrics_when_compared_to_the_table() -> None:
    """Every series a panel or a rule reads is in concord/metrics/families.py."""
    assert len(alert_exprs()) == 9
    assert len(dashboard_exprs()) > 20
    for expr in (*alert_exprs(), *dashboard_exprs()):
        assert metric_names(expr), f"no metric in {expr!r}"
    assert set() == deploy_metric_names() - exposed_names()


def test_metric_names_skip_functions_labels_and_ranges_when_reading_promql() -> None:
    """The extractor finds series names only (it guards the test above)."""
    expr = ('histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job="x", le=~"1"}'
            '[$__rate_interval]))) / on (instance) group_left b_total > bool 3 and up')
    assert {"a_bucket", "b_total", "up"} == metric_names(expr)


def test_observability_doc_lists_every_metric_and_event_when_compared_to_the_tables() -> None:
    """docs/observability.md has a row per metric family and per telemetry event, and
    names no metric that does not exist."""
    from concord.metrics import FAMILIES
    from concord.telemetry import EVENTS

    text = (ALERTS.parents[2] / "docs" / "observability.md").read_text()
    rows = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `concord_")}
    assert {f.name for f in FAMILIES} == rows
    events = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `concord.")}
    assert set(EVENTS) == events
    named = set(re.findall(r"\bconcord_[a-z_]+[a-z](?![a-z_(])", text))
    assert set() == named - exposed_names() - {f.name for f in FAMILIES}
