"""``GET /docs`` renders in a real browser: headless Chromium, driven by Playwright.

The page is Swagger UI reading the service's own ``openapi.json``; these tests load it as a
developer would and check that it draws every operation of the document, shows the events
example, raises no script error and fetches nothing from anywhere but the service (no CDN, no
online validator: the service may run where there is no internet).

Chromium is Debian's package (``apt-get install chromium``; ``.ci/run`` installs it), driven
through ``executable_path``: Playwright's own browser download cannot work on these machines.
Without a Chromium the tests skip and say so. ``REKINDLE_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.realtime.conftest import Service

CHROMIUM = os.environ.get("REKINDLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: As the machine's own probe starts it: without the background-networking flags Chromium keeps
#: trying to reach Google's hosts, which this closed network refuses.
#: The page is loaded under a name that is not loopback, as a developer reaches a deployed service:
#: Swagger UI behaves differently for localhost and 127.0.0.1 (it skips its online validator).
HOST = "rekindle.test"
FLAGS = [f"--host-resolver-rules=MAP {HOST} 127.0.0.1", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine: `apt-get install chromium` (Debian's package; .ci/run installs it) "
           "or set REKINDLE_CHROMIUM to a Chromium binary",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield context
        finally:
            context.close()


def test_the_docs_page_draws_every_operation_from_the_service_alone(service: Service, browser: Any) -> None:
    document = httpx.get(f"{service.base_url}/openapi.json").json()
    base_url = service.base_url.replace("127.0.0.1", HOST)
    operations = [op for path in document["paths"].values() for op in path.values()]
    page = browser.new_page()
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    try:
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".info .title").inner_text().startswith("rekindle")
        assert page.locator(".opblock").count() == len(operations)
        for op in operations:
            assert page.locator(f"#operations-{op['tags'][0]}-{op['operationId']}").count() == 1, op["operationId"]

        # The events operation opens on its example body, from the active programme's document.
        page.locator("#operations-events-postEvents .opblock-summary").click()
        page.wait_for_selector("#operations-events-postEvents .body-param__example", timeout=10_000)
        assert "order-9912-paid" in page.locator("#operations-events-postEvents .body-param__example").inner_text()

        # "Try it out" works against the service that served the page: readiness answers 200.
        health = page.locator("#operations-operations-getHealth")
        health.locator(".opblock-summary").click()
        health.locator("button.try-out__btn").click()
        health.locator("button.execute").click()
        answered = health.locator(".live-responses-table tbody .response-col_status")
        answered.first.wait_for(timeout=10_000)
        assert answered.first.inner_text().strip().startswith("200")
        assert '"status": "ok"' in health.locator(".live-responses-table .microlight").first.inner_text()
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    assert not problems, problems
    outside = [url for url in requested if not url.startswith((base_url + "/", "data:"))]
    assert not outside, f"the page fetched from outside the service: {outside}"
    assert f"{base_url}/openapi.json" in requested
