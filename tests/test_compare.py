"""`evalkit compare` and `evalkit recommend` on small real runs of the exact model and a deliberately worse one,
plus `--plotly-js shared`; the comparison page is also opened in headless Chromium (see test_report_browser)."""
from __future__ import annotations

import html as html_module
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

import evalkit
from evalkit.gate import gate_main
from evalkit.report import write_report
from evalkit.report.compare import write_comparison
from test_report import Page
from test_report_browser import ARGS, _playwright, open_page

PROMPTS = "a ginger cat sleeping on a wool blanket\na small orange fish swimming in a glass bowl\n"
WORSE = "python:plugins.worse_mixture:make_pipeline"
XSS_LABEL = "<img src=x onerror=alert(1)> %{x}"
RULES = '[[regression]]\nmetric = "ssim"\nmax_drop = 0.01\n[[min_steps]]\nmax_increase = 0\n'
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """2 prompts x 2 seeds x 2 schedulers x 3 step counts: the exact model, a worse one, and one seed only."""
    root = tmp_path_factory.mktemp("compare")
    (root / "prompts.txt").write_text(PROMPTS)
    (root / "rules.toml").write_text(RULES)
    sweep = {"schedulers": ["euler", "dpmpp_2m_karras"], "steps": [2, 4, 8], "seeds": 2,
             "prompts": str(root / "prompts.txt"), "reference_steps": 20, "metrics": ["ssim", "psnr"], "device": "cpu"}
    variants = {"base": {}, "worse": {"model": WORSE}, "seed0": {"seeds": [0]}}
    out = {name: evalkit.run({**sweep, **extra, "out": str(root / name)}).dir for name, extra in variants.items()}
    return {**out, "root": root, "rules": root / "rules.toml"}


@pytest.fixture(scope="module")
def page(runs) -> Path:
    """The comparison the browser tests open: worse labelled with markup, gate rules given."""
    return write_comparison([str(runs["base"]), f"{runs['worse']}={XSS_LABEL}"], runs["root"] / "out" / "compare.html",
                            rules=runs["rules"])


def parsed(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["min_steps"]["schedulers"]


def test_plateau_chart_per_metric_has_both_runs_and_their_min_steps(runs, page):
    figures = parsed(page).figures("plateau")
    assert [div["data-metric"] for div, _ in figures] == ["ssim", "psnr"]
    for _, fig in figures:
        lines = [t for t in fig["data"] if (t.get("meta") or {}).get("role") == "line"]
        # one line per (scheduler, run); the legend shows the run's label
        assert sorted((t["meta"]["scheduler"], t["legendgroup"]) for t in lines) == sorted(
            (s, label) for s in ("euler", "dpmpp_2m_karras") for label in ("builtin:mixture", XSS_LABEL))
        stars = {(t["meta"]["scheduler"], t["legendgroup"]): t["x"] for t in fig["data"]
                 if (t.get("meta") or {}).get("role") == "min useful steps"}
        for run, label in ((runs["base"], "builtin:mixture"), (runs["worse"], XSS_LABEL)):
            for scheduler, entry in summary(run).items():
                expected = [entry["min_steps"]] if entry["reached"] else None
                assert stars.get((scheduler, label)) == expected
        menu = fig["layout"]["updatemenus"][-1]
        assert [b["label"] for b in menu["buttons"]] == ["euler", "dpmpp_2m_karras"]
        shown = menu["buttons"][menu["active"]]["args"][0]["visible"]
        assert shown == [t["visible"] for t in fig["data"]]


def test_min_steps_table_shows_the_change_per_scheduler(runs, page):
    html = page.read_text()
    table = html[html.index('class="data min-steps-compare"'):]
    table = table[:table.index("</table>")]
    base, worse = summary(runs["base"]), summary(runs["worse"])
    for scheduler in ("euler", "dpmpp_2m_karras"):
        row = re.search(rf"<tr><td>{scheduler}</td>(.*?)</tr>", table).group(1)
        b, w = base[scheduler], worse[scheduler]
        if b["reached"] and w["reached"]:
            assert f"{w['min_steps'] - b['min_steps']:+d}</b>" in row
        elif not b["reached"] and not w["reached"]:
            assert row.count("not reached") == 2 and row.endswith("<td>—</td>")
    assert base["dpmpp_2m_karras"]["reached"]  # the sweep shows at least one real change


def test_joint_frontier_is_every_undominated_point_of_both_runs(runs, page):
    points = []
    for run, label in ((runs["base"], "builtin:mixture"), (runs["worse"], XSS_LABEL)):
        scores = pd.read_parquet(run / "set_scores.parquet")
        images = pd.read_parquet(run / "images.parquet")
        cost = images[images.role == "sweep"].groupby(["scheduler", "steps"], as_index=False)["nfe"].mean()
        ssim = scores[scores.metric == "ssim"].merge(cost, on=["scheduler", "steps"])
        points += [(label, r.scheduler, int(r.steps), r.nfe, r.value) for r in ssim.itertuples()]
    expected = {p[:3] for p in points if not any(
        q[3] <= p[3] and q[4] >= p[4] and (q[3] < p[3] or q[4] > p[4]) for q in points)}
    html = page.read_text()
    table = html[html.index('class="data frontier"'):]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(\d+)</td>", table[:table.index("</table>")])
    assert {(html_module.unescape(r), s, int(k)) for r, s, k in rows} == expected
    fig = parsed(page).figures("pareto")[0][1]
    index = next(i for i, t in enumerate(fig["data"]) if t["name"] == "joint Pareto frontier")
    nfe = next(b for b in fig["layout"]["updatemenus"][0]["buttons"] if b["label"] == "NFE")["args"][0]
    shown = {html_module.unescape(text) for text in nfe["text"][index]}
    assert shown == {f"{label} · {scheduler} {steps} steps" for label, scheduler, steps in expected}


def test_verdict_is_what_the_gate_decides(runs, page, tmp_path, capsys):
    code = gate_main(runs["base"], runs["worse"], rules=runs["rules"], junit=tmp_path / "j.xml")
    capsys.readouterr()
    failed = {c.get("name") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
              if c.find("failure") is not None}
    assert code == 1 and failed
    doc = parsed(page)
    text = "".join(doc.text)
    total = len(list(ET.parse(tmp_path / "j.xml").getroot().iter("testcase")))
    assert f"FAIL: {len(failed)} of {total} rule instances fail" in text
    html = page.read_text()
    assert html.index('id="verdict"') < html.index('id="runs"') < html.index('id="plateau"')
    failing = html[html.index('class="data gate-failing"'):]
    names = set(re.findall(r"<tr><td>((?:regression|min_steps|band) [^<]*)</td>", failing[:failing.index("</table>")]))
    assert names == failed
    identical = write_comparison([str(runs["base"]), str(runs["base"])], tmp_path / "same.html", rules=runs["rules"])
    assert "PASS: all" in identical.read_text()
    plain = write_comparison([str(runs["base"]), str(runs["worse"])], tmp_path / "plain.html")
    assert 'id="verdict"' not in plain.read_text()


def test_image_strip_links_each_runs_pngs(runs, page):
    html = page.read_text()
    tables = re.findall(r'<table class="grid strip" data-pair="(\d+)".*?</table>', html, re.S)
    assert tables == ["0", "1", "2", "3"]  # 2 prompts x 2 seeds
    first = re.search(r'<table class="grid strip" data-pair="0".*?</table>', html, re.S).group(0)
    links = re.findall(r'<a href="([^"]+)"', first)
    assert len(links) == 2 * 2 * (3 + 1)  # schedulers x runs x (steps + reference)
    assert {Path(unquote(link)).parts[-3] for link in links} == {"base", "worse"}
    assert all((page.parent / unquote(link)).is_file() for link in links)
    assert len(set(links)) == 2 * 2 * 3 + 2  # every sweep image once; each run's one reference (dpmpp_2m_karras)


def test_labels_are_escaped_and_default_to_the_model(runs, page):
    html = page.read_text()
    assert XSS_LABEL not in html and "&lt;img src=x onerror=alert(1)&gt; %{x}" in html
    assert "<b>builtin:mixture</b> (baseline)" in html


def test_not_comparable_is_one_line_exit_2(runs, evalkit_cli, tmp_path):
    code, out, err = evalkit_cli(["compare", str(runs["base"]), str(runs["seed0"]), "--out", str(tmp_path / "c.html")])
    assert code == 2 and err.count("\n") == 1
    assert "not comparable: seeds [0,1] vs [0]" in err and str(runs["seed0"]) in err
    assert not (tmp_path / "c.html").exists()
    code, _, err = evalkit_cli(["compare", str(runs["base"]), str(runs["worse"]), "--steps", "3",
                                "--out", str(tmp_path / "c.html")])
    assert code == 2 and "--steps 3 was not swept in every run: pick from 2,4,8" in err


def test_recommend_is_the_cheapest_setting_meeting_the_bar(runs, evalkit_cli):
    entries = {s: e for s, e in summary(runs["base"]).items() if e["reached"]}
    best = min(entries, key=lambda s: (entries[s]["nfe"], entries[s]["min_steps"]))
    code, out, _ = evalkit_cli(["recommend", str(runs["base"]), "--json"])
    result = json.loads(out)
    assert code == 0 and (result["pick"]["scheduler"], result["pick"]["steps"]) == (best, entries[best]["min_steps"])
    assert result["pick"]["meets_bar"] and result["pick"]["nfe"] == entries[best]["nfe"]
    scores = pd.read_parquet(runs["base"] / "set_scores.parquet").query("metric == 'ssim'")
    row = scores[(scores.scheduler == best) & (scores.steps == entries[best]["min_steps"])].iloc[0]
    assert (result["pick"]["value"], result["pick"]["ci_low"]) == pytest.approx((row.value, row.ci_low))
    code, text, _ = evalkit_cli(["recommend", str(runs["base"])])
    assert text.startswith(f"recommend: {best} at {entries[best]['min_steps']} steps: ")
    assert "NFE" in text and "meets the min-steps bar" in text
    report = (runs["base"] / "report.html").read_text()
    assert f"{best} at {entries[best]['min_steps']} steps: " in report


def test_recommend_within_a_budget_is_the_best_quality_there(runs, evalkit_cli):
    scores = pd.read_parquet(runs["base"] / "set_scores.parquet").query("metric == 'ssim' and steps <= 4")
    ranked = scores.sort_values("value", ascending=False)
    code, out, _ = evalkit_cli(["recommend", str(runs["base"]), "--metric", "ssim", "--max-nfe", "4", "--json"])
    result = json.loads(out)
    top, second = ranked.iloc[0], ranked.iloc[1]
    assert code == 0 and (result["pick"]["scheduler"], result["pick"]["steps"]) == (top.scheduler, top.steps)
    assert (result["runner_up"]["scheduler"], result["runner_up"]["steps"]) == (second.scheduler, second.steps)
    code, _, err = evalkit_cli(["recommend", str(runs["base"]), "--max-nfe", "1"])
    assert code == 2 and "no convergent setting costs at most 1 NFE (the cheapest costs 2)" in err
    code, _, err = evalkit_cli(["recommend", str(runs["base"]), "--max-nfe", "4", "--max-seconds", "1"])
    assert code == 2 and err.count("\n") == 1
    code, _, err = evalkit_cli(["recommend", str(runs["base"]), "--metric", "lpips"])
    assert code == 2 and "'lpips' was not scored" in err


def test_plotly_js_shared_and_inline(runs, evalkit_cli, tmp_path):
    inline = (runs["base"] / "report.html").read_text()
    assert "<script src=" not in inline and inline.count("plotly.js v") >= 1
    js = runs["base"] / "plotly.min.js"
    for args in (["report", str(runs["base"])], ["run", str(runs["base"] / "config.toml"), "--no-progress"]):
        js.unlink(missing_ok=True)
        code, _, _ = evalkit_cli([*args, "--plotly-js", "shared"])
        shared = (runs["base"] / "report.html").read_text()
        assert code == 0 and '<script src="plotly.min.js"></script>' in shared
        assert len(shared) < len(inline) - 1_000_000 and js.stat().st_size > 1_000_000
    folder = tmp_path / "pages"
    for name in ("a.html", "b.html"):
        code, _, _ = evalkit_cli(["compare", str(runs["base"]), str(runs["worse"]), "--out", str(folder / name),
                                  "--plotly-js", "shared"])
        assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    assert (folder / "plotly.min.js").read_bytes() == js.read_bytes()
    for command in (["report", str(runs["base"])], ["run", str(runs["root"] / "nothing.toml")]):
        code, _, err = evalkit_cli([*command, "--plotly-js", "cdn"])
        assert code == 2 and "unknown --plotly-js 'cdn'" in err  # run: before it reads or renders anything
    write_report(runs["base"])  # back to the default for the other tests
    js.unlink()


# ----------------------------------------------------------------------------------------------------------
# In the browser
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    sync_playwright, chromium = _playwright()  # installs Debian's chromium first on a fresh machine
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_page(chromium, page):
    context, tab, seen = open_page(chromium, page.as_uri())
    yield tab, seen
    context.close()


def test_browser_no_errors_and_every_chart_drawn(browser_page):
    tab, seen = browser_page
    assert seen == {"errors": [], "dialogs": [], "blocked": []}
    charts = tab.locator("div.chart")
    assert charts.count() == 2 + 1  # ssim, psnr; joint pareto
    for i in range(charts.count()):
        assert charts.nth(i).locator("g.trace").count() >= 2
    assert tab.locator('img[src="x"]').count() == 0
    assert tab.evaluate("document.documentElement.scrollWidth") <= 1280


def test_browser_verdict_on_top_and_both_curves_visible(browser_page):
    tab, _ = browser_page
    verdict = tab.locator("p.verdict").first
    assert verdict.is_visible() and verdict.inner_text().startswith("FAIL:")
    assert verdict.bounding_box()["y"] < tab.locator("div.chart").first.bounding_box()["y"]
    legend = tab.locator("div.chart[data-kind=plateau][data-metric=ssim] .legendtext").all_text_contents()
    assert "builtin:mixture" in legend and XSS_LABEL in legend  # the label shown as text, not markup


def test_browser_scheduler_menu_and_strip_select(browser_page):
    tab, _ = browser_page
    visible = lambda: tab.evaluate(  # noqa: E731
        "() => document.querySelector('div.chart[data-kind=plateau][data-metric=ssim]').data.filter(t => t.visible === true && "
        "t.meta && t.meta.role === 'line').map(t => t.meta.scheduler)")
    first = visible()
    assert len(first) == 2 and len(set(first)) == 1
    other = "euler" if first[0] != "euler" else "dpmpp_2m_karras"
    tab.locator("div.chart[data-kind=plateau][data-metric=ssim] .updatemenu-header").click()
    tab.locator("div.chart[data-kind=plateau][data-metric=ssim] .updatemenu-dropdown-button",
                has_text=other).click()
    assert visible() == [other, other]
    images = "[...document.querySelectorAll('table.strip')].find(t => !t.hidden).querySelectorAll('img.thumb')"
    assert tab.evaluate(f"[...{images}].every(i => i.complete && i.naturalWidth > 0)")
    tab.select_option("#grid-select", "2")
    assert tab.evaluate("[...document.querySelectorAll('table.strip')].find(t => !t.hidden).dataset.pair") == "2"


def test_browser_screenshot(browser_page):
    tab, _ = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    tab.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    assert (ARTIFACTS / "compare.png").stat().st_size > 10_000


def test_browser_shared_plotly_page_renders(chromium, runs):
    out = write_comparison([str(runs["base"]), str(runs["worse"])], runs["root"] / "shared" / "c.html",
                           plotly_js="shared")
    context, tab, seen = open_page(chromium, out.as_uri())
    try:
        assert seen == {"errors": [], "dialogs": [], "blocked": []}
        assert tab.locator("div.chart .main-svg").count() >= 3
        assert tab.evaluate("typeof Plotly.newPlot") == "function"
    finally:
        context.close()
