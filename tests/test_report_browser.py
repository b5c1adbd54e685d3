"""The report page in a real browser: Debian's headless Chromium, driven by Playwright.

What a reader does: open ``index.html`` from disk, see every image, sort a table by
clicking a header, filter by scheme. The page must log no console error, raise no
script error and request nothing but itself. A full-page screenshot is kept under
``$TEST_ARTIFACTS`` (default ``test-artifacts/``) for a human to look at.

No browser is downloaded: without ``/usr/bin/chromium`` (or the ``playwright`` package)
the tests skip, unless ``REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_report import ROOT, build_report

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Offline and quiet: no first-run UI, no update or sync traffic, no QUIC probing.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


def artifacts_dir() -> Path:
    """Where screenshots are kept for people: ``$TEST_ARTIFACTS`` or ``test-artifacts/``."""
    path = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = _unavailable()
    if reason:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def page(browser_context: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The report of the shared test sweep, opened once, with everything it logged."""
    report = build_report(tmp_path_factory.mktemp("browser-report"))
    index = report["out"] / "index.html"
    tab = browser_context.new_page()
    log: dict[str, list[str]] = {"console": [], "errors": [], "requests": [], "failed": []}
    tab.on("console", lambda m: log["console"].append(f"{m.type}: {m.text}"))
    tab.on("pageerror", lambda e: log["errors"].append(str(e)))
    tab.on("request", lambda r: log["requests"].append(r.url))
    tab.on("requestfailed", lambda r: log["failed"].append(r.url))
    tab.goto(index.as_uri(), wait_until="load")
    yield {"tab": tab, "log": log, "index": index, **report}
    tab.close()


def column_values(tab: Any, table: str, heading: str) -> list[str]:
    """The ``data-sort`` values of a column, in the order the rows are now shown."""
    return tab.evaluate(
        """([table, heading]) => {
             const t = document.getElementById(table);
             const heads = Array.from(t.tHead.rows[0].cells).map(c => c.textContent.trim());
             const i = heads.indexOf(heading);
             return Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute("data-sort"));
           }""", [table, heading])


def test_page_loads_without_errors_or_network(page: dict) -> None:
    assert page["tab"].title() == "Recurrent dropout benchmark report"
    errors = [m for m in page["log"]["console"] if m.startswith(("error", "warning"))]
    assert errors == [] and page["log"]["errors"] == [] and page["log"]["failed"] == []
    assert page["log"]["requests"] == [page["index"].as_uri()]  # nothing but the page itself


def test_every_image_loads(page: dict) -> None:
    images = page["tab"].evaluate(
        "Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}))")
    assert len(images) == 8
    assert [i["alt"] for i in images if not i["ok"]] == []


def test_clicking_a_numeric_header_sorts_rows(page: dict) -> None:
    tab = page["tab"]
    header = tab.locator("#runs thead th", has_text="best val ppl")
    header.click()
    values = column_values(tab, "runs", "best val ppl")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and len(numbers) >= 5
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # missing last
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    values = column_values(tab, "runs", "best val ppl")
    assert [float(v) for v in values if v] == sorted(numbers, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    # the scheme table sorts the same way
    tab.locator("#scheme-table thead th", has_text="test ppl").click()
    tests = [float(v) for v in column_values(tab, "scheme-table", "test ppl") if v]
    assert tests == sorted(tests) and len(tests) >= 3


def test_scheme_filter_hides_rows(page: dict) -> None:
    tab = page["tab"]
    rows = tab.locator("#runs tbody tr")
    total = rows.count()
    variational = tab.locator('#runs tbody tr[data-scheme="variational"]')
    hidden_before = variational.count()
    assert hidden_before >= 2 and variational.first.is_visible()
    tab.locator('#filters input[data-filter="scheme"][value="variational"]').uncheck()
    assert all(not variational.nth(i).is_visible() for i in range(hidden_before))
    assert not tab.locator('#scheme-table tbody tr[data-scheme="variational"]').first.is_visible()
    assert tab.locator('#runs tbody tr[data-scheme="none"]').first.is_visible()
    shown = tab.evaluate("document.querySelectorAll('#runs tbody tr:not([hidden])').length")
    assert shown == total - hidden_before
    assert "table rows shown" in tab.locator("#filter-count").inner_text()
    # the cell filter composes with it, and "all" brings everything back
    tab.locator('#filters input[data-filter="cell"][value="gru"]').uncheck()
    assert not tab.locator('#runs tbody tr[data-scheme="none"][data-cell="gru"]').is_visible()
    tab.locator('#filters button[data-select="all"]').click()
    assert tab.evaluate("document.querySelectorAll('#runs tbody tr:not([hidden])').length") == total


def test_full_page_screenshot_is_kept(page: dict, tmp_path: Path) -> None:
    tab = page["tab"]
    tab.locator('#filters button[data-select="all"]').click()
    shot = tmp_path / "report.png"
    tab.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    kept = artifacts_dir() / "report.png"
    shutil.copyfile(shot, kept)
    assert kept.stat().st_size == len(data)
