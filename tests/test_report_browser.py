"""The report as a person sees it: headless Chromium (Debian's `chromium`) driven by Playwright, offline.

`pip install -e '.[test]'` installs Playwright; a missing chromium is installed by this test itself with Debian's
`apt-get install -y chromium` when it runs as root with apt-get (a fresh CI machine or container), so the README's
test command needs no other set-up step; elsewhere it fails naming that command. Missing either is a FAILURE, not
a skip. Never `playwright install`: the browser is the system chromium (no browser download works offline). The screenshot is written to
tests/artifacts/report.png (git-ignored by tests/artifacts/.gitignore, written here).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from evalkit.report import write_report
from test_report import PROMPTS, SCHEDULERS, STEPS, XSS, make_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOT = ARTIFACTS / "report.png"


INSTALL = "apt-get update && apt-get install -y chromium"


def _chromium() -> str:
    """The system chromium, installed with Debian's package first if missing and we may (root, apt-get)."""
    found = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"`{' '.join(command)}` failed ({(done.stderr or done.stdout).strip().splitlines()[-1:]}): "
                            f"install chromium with `{INSTALL}` (never `playwright install`)")
        found = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    if found is None:
        pytest.fail(f"chromium not found at {CHROMIUM}: install it with `{INSTALL}` as root "
                    "(never `playwright install`)")
    return found


def _playwright():
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install playwright` (its wheel ships the driver)")
    return sync_playwright, chromium


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_report(make_run(tmp_path_factory.mktemp("browser")))


def open_page(browser, url: str):
    """A tab on `url` with network blocked (file: and data: only) and errors, dialogs, requests recorded,
    once every chart has drawn."""
    seen = {"errors": [], "dialogs": [], "blocked": []}
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            seen["blocked"].append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(url, wait_until="load")
    page.wait_for_function("document.querySelectorAll('.chart').length > 0 && "
                           "[...document.querySelectorAll('.chart')].every(c => c.querySelector('.main-svg'))",
                           timeout=60_000)
    return context, page, seen


@pytest.fixture(scope="module")
def browser_page(report):
    sync_playwright, chromium = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        context, page, seen = open_page(browser, report.as_uri())
        yield page, seen
        context.close()
        browser.close()


def test_no_console_errors_dialogs_or_network(browser_page):
    page, seen = browser_page
    assert seen["errors"] == []
    assert seen["dialogs"] == []
    assert seen["blocked"] == []


def test_every_chart_rendered_svg(browser_page):
    page, _ = browser_page
    charts = page.locator("div.chart")
    assert charts.count() == 2 + 1 + 1  # ssim, psnr; pareto; per prompt
    for i in range(charts.count()):
        assert charts.nth(i).locator(".main-svg").count() >= 1
        assert charts.nth(i).locator("g.trace").count() >= 1  # lines or points drawn
        assert charts.nth(i).bounding_box()["height"] > 200


def visible_grid(page) -> dict:
    return page.evaluate("""() => {
        const table = [...document.querySelectorAll('table.grid')].find(t => !t.hidden && t.offsetParent);
        const imgs = [...table.querySelectorAll('img.thumb')];
        return {pair: table.dataset.pair, n: imgs.length, srcs: imgs.map(i => i.src),
                links: imgs.map(i => i.closest('a').getAttribute('href')),
                loaded: imgs.every(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)};
    }""")


def test_grid_thumbnails_load_and_select_switches(browser_page):
    page, _ = browser_page
    before = visible_grid(page)
    assert before["pair"] == "0"
    assert before["n"] == len(SCHEDULERS) * len(STEPS) + 1 and before["loaded"]
    page.select_option("#grid-select", "1")
    after = visible_grid(page)
    assert after["pair"] == "1" and after["n"] == before["n"] and after["loaded"]
    assert set(after["links"]).isdisjoint(before["links"])  # other images (keys) ...
    assert after["srcs"] != before["srcs"]  # ... and other pixels
    page.select_option("#grid-select", "0")


def test_xss_prompt_is_inert_and_visible(browser_page):
    page, seen = browser_page
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("[onerror]").count() == 0
    cell = page.locator("td.prompt", has_text=XSS)
    assert cell.count() == 1 and cell.first.is_visible()
    options = page.locator("#grid-select option").all_inner_texts()
    assert any(XSS in text for text in options) and any(PROMPTS[0] in text for text in options)
    legend = page.locator("div.chart[data-kind=prompts] .legendtext").all_text_contents()
    assert any(XSS[:20] in text for text in legend)  # plotly shows it as text too
    assert seen["dialogs"] == []


def test_no_horizontal_scroll_at_1280(browser_page):
    page, _ = browser_page
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_screenshot(browser_page):
    page, _ = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"report screenshot: {SCREENSHOT}")
