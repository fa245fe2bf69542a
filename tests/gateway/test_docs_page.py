"""
/api/docs in headless Chromium (Debian package `chromium`; .ci/run installs it): the page
renders every operation of the OpenAPI document, makes no failed and no external request
(its assets come from the node), and one "try it out" request succeeds. The screenshot
is kept as a test artifact: `<pytest tmp dir>/.../api-docs.png` (its path is printed).

Skipped when chromium is missing, except under CI=true, where it fails.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from concord.gateway.openapi import document
from tests.gateway.browser import Browser
from tests.gateway.httpkit import HTTP_SETTINGS
from tests.helpers import wait_until
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (.ci/run installs the Debian package chromium)")
    pytest.skip("chromium is not installed: apt-get install chromium (CI installs it)")


def _operations() -> int:
    paths = document()["paths"]
    assert isinstance(paths, dict)
    return sum(len(ops) for ops in paths.values())


def _requests(browser: Browser) -> tuple[list[str], list[str]]:
    """(every URL requested, every failed one with why)."""
    urls: dict[str, str] = {}
    failed: list[str] = []
    for event in browser.events:
        params = event.get("params")
        assert isinstance(params, dict)
        if event["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif event["method"] == "Network.loadingFailed":
            failed.append(f"{urls.get(params['requestId'])}: {params.get('errorText')}")
        elif event["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
    return list(urls.values()), failed


@pytest.mark.timeout(180)
def test_docs_page_renders_every_operation_offline_when_opened_in_chromium(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every operation shown, no failed or external request, one 'try it out' answered 200."""
    executable = chromium()
    c: Cluster = cluster(n=1, http=HTTP_SETTINGS)
    base = c.nodes[c.ids[0]].endpoints["http"]
    browser = Browser(executable, tmp_path)
    try:
        for domain in ("Network.enable", "Page.enable", "Runtime.enable"):
            browser.send(domain)
        browser.send("Page.navigate", url=base + "/api/docs")
        expected = _operations()

        count_js = "document.querySelectorAll('.opblock').length"
        wait_until(lambda: browser.evaluate(count_js) == expected, 60.0,
                   lambda: f"operations shown: {browser.evaluate(count_js)} of {expected}")
        # Try it out: GET /api/v1/health.
        block = "document.querySelector('#operations-health-get_health')"
        browser.evaluate(f"{block}.querySelector('.opblock-summary-control').click()")
        wait_until(lambda: browser.evaluate(f"!!{block}.querySelector('.try-out__btn')"), 20.0,
                   "no Try it out button")
        browser.evaluate(f"{block}.querySelector('.try-out__btn').click()")
        wait_until(lambda: browser.evaluate(f"!!{block}.querySelector('.execute')"), 20.0,
                   "no Execute button")
        browser.evaluate(f"{block}.querySelector('.execute').click()")
        status_js = (f"(() => {{ const s = {block}.querySelector('.live-responses-table "
                     f".response .response-col_status'); return s ? s.textContent.trim() : ''; }})()")
        wait_until(lambda: browser.evaluate(status_js), 20.0, "no response to Execute")
        assert "200" == browser.evaluate(status_js)
        body = browser.evaluate(f"{block}.querySelector('.live-responses-table .microlight, "
                                f".live-responses-table pre').textContent")
        assert isinstance(body, str) and '"alive"' in body
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        artifact = tmp_path / "api-docs.png"
        artifact.write_bytes(base64.b64decode(str(shot["data"])))
        print(f"screenshot: {artifact}")
        urls, failed = _requests(browser)
        assert [] == failed
        external = [u for u in urls if not (u.startswith(base + "/") or u.startswith(("data:", "blob:")))]
        assert [] == external
        assert any(u.endswith("/api/v1/openapi.json") for u in urls)
        assert any(u.endswith("/api/v1/health") for u in urls)
    finally:
        browser.close()
    assert not browser.profile.exists()
