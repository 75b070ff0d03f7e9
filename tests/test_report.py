"""The HTML report (stage 3) on a small real run of the builtin model: sections, charts, values, grid, escaping."""
from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.report import grid, prompts, write_report
from evalkit.report.text import clauses, esc

XSS = "<img src=x onerror=alert(1)>"
PROMPTS = ["a ginger cat sleeping on a wool blanket", XSS + ' & "quoted" %{x} orange fish in a bowl']
SCHEDULERS = ["euler", "euler_a"]
STEPS = [2, 4, 8]
SEEDS = [0, 1]
SECTIONS = ["run", "references", "min-steps", "plateau", "pareto", "grid", "prompts"]
MIN_STEPS = {
    "rule": "The smallest swept count from which ssim stays within 0.02 of its plateau <judged on the CI bound>.",
    "tolerances": {"ssim": 0.02, "lpips": 0.05},
    "schedulers": {
        "euler": {"min_steps": 4, "nfe": 4, "seconds_per_image": 0.0012, "reached": True,
                  "quality": {"ssim": {"value": 0.985, "plateau": 1.0}}, "knee": {"ssim": 2}},
        "euler_a": {"min_steps": None, "reached": False, "why": "stochastic: never converges per seed"},
    },
}


def make_run(root: Path) -> Path:
    """A small sweep of the builtin model (no weights): 2 schedulers x 3 step counts x 2 prompts x 2 seeds; every
    reference certified."""
    prompt_file = root / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n")
    out = root / "run"
    evalkit.run({"schedulers": SCHEDULERS, "steps": STEPS, "seeds": SEEDS, "prompts": str(prompt_file),
                 "out": str(out), "reference_steps": 20, "metrics": ["ssim", "psnr"]})
    return out


class Page(HTMLParser):
    """Tags with attributes, figure JSON by chart id, and text, from the report."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text: list[str] = []
        self._script: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script":
            self._script = attrs

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts.append((self._script, data))
        else:
            self.text.append(data)

    def figures(self, kind: str | None = None) -> list[tuple[dict, dict]]:
        """(chart div attrs, figure) pairs, in page order."""
        divs = {a["id"]: a for t, a in self.tags if t == "div" and "chart" in a.get("class", "").split()}
        out = []
        for attrs, data in self.scripts:
            if attrs.get("class") == "chart-data":
                div = divs[attrs["data-target"]]
                if kind is None or div["data-kind"] == kind:
                    out.append((div, json.loads(data)))
        return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page_text(run_dir) -> str:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    return path.read_text()


@pytest.fixture(scope="module")
def page(page_text) -> Page:
    return Page(page_text)


def test_every_section_present(page):
    ids = [a.get("id") for t, a in page.tags if t == "section"]
    assert ids == SECTIONS
    text = " ".join(page.text)
    for words in ("builtin:mixture", "euler_a", "total NFE", "render time", "versions", "device"):
        assert words in text


def test_certified_references_in_one_line(page_text, run_dir):
    """Every reference certified: the header says so with the worst agreement; the section, in one line, with the
    median too, and lists no unit."""
    table = pd.read_parquet(run_dir / "references.parquet")
    assert set(table.status) == {"certified"} and table.tiebreak_key.isna().all()
    assert f"<dd><b>4 of 4 certified</b> (check: unipc_karras at 20 steps; worst SSIM {table.ssim.min():.4f}" in page_text
    start = page_text.index('<section id="references">')
    text = page_text[start:page_text.index("</section>", start)]
    assert f"<p>All 4 checked references certified: worst SSIM {table.ssim.min():.4f} (median " in text
    assert "<table" not in text and "<img" not in text


def test_one_plateau_chart_per_scored_metric(page, run_dir):
    metrics = sorted(pd.read_parquet(run_dir / "set_scores.parquet")["metric"].unique())
    assert sorted(div["data-metric"] for div, _ in page.figures("plateau")) == metrics == ["psnr", "ssim"]
    assert len(page.figures("pareto")) == 1 and len(page.figures("prompts")) == 1
    for div, fig in page.figures("plateau"):
        assert "higher is better" in fig["layout"]["yaxis"]["title"]["text"]
        assert "convergence" in fig["layout"]["title"]["text"]


def test_figure_values_match_set_scores(page, run_dir):
    table = pd.read_parquet(run_dir / "set_scores.parquet")
    checked = 0
    for div, fig in page.figures("plateau"):
        for trace in fig["data"]:
            if (trace.get("meta") or {}).get("role") != "line":
                continue
            rows = table[(table.metric == div["data-metric"]) & (table.scheduler == trace["meta"]["scheduler"])]
            rows = rows.sort_values("steps")
            assert trace["x"] == rows["steps"].tolist()
            assert trace["y"] == pytest.approx(rows["value"].tolist(), rel=1e-12)
            checked += 1
    assert checked == 2 * len(SCHEDULERS)


def test_x_axis_switches_and_flags_marked(page, run_dir):
    images = pd.read_parquet(run_dir / "images.parquet")
    nfe = images[images.role == "sweep"].groupby(["scheduler", "steps"])["nfe"].mean()
    div, fig = page.figures("plateau")[0]
    modes = fig["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in modes] == ["steps", "NFE", "seconds per image"]
    lines = [i for i, t in enumerate(fig["data"]) if (t.get("meta") or {}).get("role") == "line"]
    for i in lines:
        scheduler = fig["data"][i]["meta"]["scheduler"]
        assert modes[1]["args"][0]["x"][i] == nfe.loc[scheduler].tolist()
    stochastic = next(fig["data"][i] for i in lines if fig["data"][i]["meta"]["scheduler"] == "euler_a")
    assert stochastic["line"]["dash"] == "dash" and "not convergent" in stochastic["name"]
    assert all("not-convergent" in c[-1] for c in stochastic["customdata"])
    assert {b["args"][0]["xaxis.type"] for b in fig["layout"]["updatemenus"][1]["buttons"]} == {"linear", "log"}


def test_grid_has_expected_thumbnails(page):
    tables = [a for t, a in page.tags if t == "table" and a.get("class") == "grid"]
    assert len(tables) == len(PROMPTS)  # one pair per prompt (first seed), hardest first
    thumbs = [a for t, a in page.tags if t == "img" and a.get("class") == "thumb"]
    per_pair = len(SCHEDULERS) * len(STEPS) + 1  # + the reference
    assert len(thumbs) == per_pair * len(tables)
    assert all(a["src"].startswith("data:image/") for a in thumbs)
    links = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("images/")]
    assert len(links) == len(thumbs) and all(link.endswith(".png") for link in links)
    options = [a for t, a in page.tags if t == "option"]
    assert len(options) == len(tables)


def test_links_point_at_existing_pngs(page, run_dir):
    links = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("images/")]
    assert links and all((run_dir / link).is_file() for link in links)


def test_xss_prompt_is_escaped(page_text, page):
    assert XSS not in page_text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page_text
    assert not any("onerror" in attrs for _, attrs in page.tags)
    assert not any(t == "img" and a.get("src") == "x" for t, a in page.tags)
    assert any(XSS in text for text in page.text)  # shown as text
    figures = [data for attrs, data in page.scripts if attrs.get("type") == "application/json"]
    assert figures and all("<" not in data and ">" not in data for data in figures)
    # the per-prompt chart carries the prompt as data, escaped for plotly's text parser
    assert any("&lt;img src=x onerror=alert(1)&gt;" in json.dumps(json.loads(data)) for data in figures)


def test_no_external_resources(page):
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, attrs)
    sources = [a for t, a in page.tags if t == "script" and "src" in a]
    assert not sources
    assert not [a for t, a in page.tags if t == "link"]


def test_plotly_embedded_once(page_text):
    assert page_text.count("<script>") == 2  # plotly.js, then the page's own script
    assert page_text.count("plotly.js v") <= 2


def test_without_min_steps(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary.pop("min_steps", None)
    (copy / "summary.json").write_text(json.dumps(summary))
    text = " ".join(Page(write_report(copy).read_text()).text)
    assert "minimum useful steps not computed for this run" in text.lower()


def test_min_steps_from_the_run_shown(page, run_dir):
    block = json.loads((run_dir / "summary.json").read_text())["min_steps"]
    text = " ".join(page.text)
    assert block["rule"] in text
    for name, info in block["schedulers"].items():
        assert name in text
        if not info.get("reached"):  # each clause in its cell, or (a long one) stated once under the table
            assert all(clause in text for clause in clauses(info["why"]))


def test_with_min_steps(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["min_steps"] = MIN_STEPS
    (copy / "summary.json").write_text(json.dumps(summary))
    text = write_report(copy).read_text()
    parsed = Page(text)
    assert "Minimum useful steps not computed" not in text
    assert "&lt;judged on the CI bound&gt;" in text
    table = text[text.index('<table class="data min-steps"'):]
    table = table[:table.index("</table>")]
    assert "<b>4</b>" in table and "0.985 (plateau 1)" in table and "not reached: stochastic" in table
    div, fig = next(f for f in parsed.figures("plateau") if f[0]["data-metric"] == "ssim")
    marks = {t["meta"]["role"]: t for t in fig["data"] if (t.get("meta") or {}).get("scheduler") == "euler"}
    assert marks["min useful steps"]["x"] == [4] and marks["knee"]["x"] == [2]


def test_min_steps_table_names_the_rules_that_judged_a_cmmd_run(tmp_path):
    """Each scheduler's "judged by" cell names its rules with their answers (per-seed convergence, absolute,
    distribution with the metric that judged it: cmmd here), as summary.json has them."""
    from fake_clip import backbone_string, save_tiny_clip

    (tmp_path / "prompts.txt").write_text("a cat\na red car\n")
    backbone = backbone_string(save_tiny_clip(tmp_path / "clip"))
    run = evalkit.run({"schedulers": SCHEDULERS, "steps": [2, 8], "seeds": 4, "prompts": str(tmp_path / "prompts.txt"),
                       "out": str(tmp_path / "run"), "reference_steps": 20, "metrics": ["ssim", "clip_score", "cmmd"],
                       "backbones": {"clip_score": backbone, "cmmd": backbone}})
    block = json.loads((run.dir / "summary.json").read_text())["min_steps"]
    text = run.report.read_text()
    table = text[text.index('<table class="data min-steps"'):]
    rows = {row.split("</td>")[0]: row for row in table[:table.index("</table>")].split("<tr")[2:]}
    for name in SCHEDULERS:
        entry = block["schedulers"][name]
        assert entry["distribution"]["metric"] == "cmmd"
        cell = rows[f'><td>{name}'] if f'><td>{name}' in rows else rows[f' class="unreached"><td>{name}']
        cell = cell.split("<td>")[-1]
        for rule, answer in entry["rules"].items():
            label = "distribution (cmmd)" if rule == "distribution" else rule
            shown = answer["min_steps"] if answer["reached"] else "&gt;max"
            bold = rule in entry["judged_by"]
            assert f"{'<b>' if bold else ''}{label}: {shown}{'</b>' if bold else ''}" in cell
    assert set(block["schedulers"]["euler"]["rules"]) == {"per-seed convergence", "absolute", "distribution"}
    assert set(block["schedulers"]["euler_a"]["rules"]) == {"absolute", "distribution"}
    assert "cmmd: CMMD&#x27;s Gaussian RBF kernel" in text  # the rule text names the metric and kernel


def test_learned_metrics_skipped(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["skipped_metrics"] = {"lpips": "missing weights: <alexnet> at /x (fetch: curl ...)"}
    (copy / "summary.json").write_text(json.dumps(summary))
    text = write_report(copy).read_text()
    assert "Metrics skipped (1)" in text and "missing weights: &lt;alexnet&gt;" in text


def test_stale_rows_from_older_sweeps_are_left_out(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    images = pd.read_parquet(copy / "images.parquet")
    stale = images[images.role == "sweep"].head(1).assign(key="feedface" * 3, steps=999)
    pd.concat([images, stale]).to_parquet(copy / "images.parquet", index=False)
    text = write_report(copy).read_text()
    assert "feedface" * 3 not in text and ">999<" not in text


def test_missing_scores_is_a_clear_error(tmp_path):
    (tmp_path / "config.toml").write_text('model = "builtin:mixture"\n')
    pd.DataFrame({"key": []}).to_parquet(tmp_path / "images.parquet")
    pd.DataFrame({"key": []}).to_parquet(tmp_path / "jobs.parquet")  # rendered, not scored
    with pytest.raises(evalkit.errors.EvalkitError, match="evalkit score"):
        write_report(tmp_path)


# -- a large suite: the grid and the per-prompt view sample; long reasons are stated once -------------------------
SUITE = 300
CATEGORIES = ["Abstract", "Animals", "Artifacts", "Arts", "Food & Beverage", "Illustrations", "Indoor Scenes",
              "Outdoor Scenes", "People", "Produce & Plants", "Vehicles", "World Knowledge"]
THINGS = ["a kitten", "a small fish", "three apples", "a red STOP sign", "waves on a beach", "a smiling face",
          "rolling hills at sunset", "a checkerboard", "snowy mountain peaks", "concentric circles"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """A PartiPrompts-format suite of SUITE prompts in 12 categories, one scheduler, two step counts, one seed."""
    root = tmp_path_factory.mktemp("suite")
    rows = {f"{THINGS[i % len(THINGS)]}, picture {i}": CATEGORIES[i % len(CATEGORIES)] for i in range(SUITE)}
    (root / "suite.tsv").write_text("Prompt\tCategory\tChallenge\n" + "".join(
        f"{prompt}\t{category}\tBasic\n" for prompt, category in rows.items()))
    run = evalkit.run({"schedulers": ["euler"], "steps": [1, 2], "seeds": 1, "reference_steps": 4, "certify": False,
                       "metrics": ["ssim"], "prompts": str(root / "suite.tsv"), "out": str(root / "run")})
    return run.dir, run.report.read_text(), rows


def grid_options(text: str) -> list[str]:
    import html
    import re

    return [html.unescape(o) for o in re.findall(r'<option value="\d+">(.*?)</option>', text)]


def test_grid_shows_a_fixed_sample_of_a_large_suite(suite):
    """8 of 300 prompts: the 3 hardest (the ranking's top 3), then 5 drawn at random, each from its own category;
    the page says how many of how many, and where the others are; the same run always shows the same ones."""
    run_dir, text, categories = suite
    page = Page(text)
    assert len([a for t, a in page.tags if t == "table" and a.get("class") == "grid"]) == grid.MAX_PAIRS == 8
    assert f"8 of {SUITE} prompts shown" in text and "images.parquet" in text
    options = grid_options(text)
    assert len(options) == 8
    shown = [o.split(" · ")[1] for o in options]
    ranking = text[text.index('<table class="data ranking"'):]
    hardest = [html_text for html_text in Page(ranking[:ranking.index("</table>")]).text if html_text in categories]
    assert shown[:3] == hardest[:3] and all(o.startswith("hardest · ") for o in options[:3])
    assert all(o.startswith("sampled · ") for o in options[3:])
    assert len({categories[prompt] for prompt in shown[3:]}) == 5
    assert grid_options(write_report(run_dir).read_text()) == options


def test_per_prompt_view_draws_and_lists_the_hardest_and_counts_all(suite):
    run_dir, text, _ = suite
    page = Page(text)
    (_, fig), = page.figures("prompts")
    assert len(fig["data"]) == prompts.CHART_PROMPTS == 30  # one scheduler: one line per prompt drawn
    ranking = text[text.index('<table class="data ranking"'):]
    assert ranking[:ranking.index("</table>")].count('<td class="prompt">') == prompts.TABLE_PROMPTS == 100
    assert f"The chart draws the 30 hardest of {SUITE} prompts" in text
    spread = text.split(f"All {SUITE} prompts by median steps to plateau: ")[1].split(".</p>")[0]
    assert sum(int(part.rsplit(": ", 1)[1].replace(",", "")) for part in spread.split(" · ")) == SUITE


FETCH = ('missing FID Inception-v3 (TF 2015-12-05 port, torch-fidelity): /x/hub/checkpoints/weights-inception.pth '
         'fetch: curl -L --create-dirs -o "${TORCH_HOME:-$HOME/.cache/torch}/hub/checkpoints/weights-inception.pth" '
         'https://example.invalid/weights-inception-2015-12-05-6726825d.pth')
CLIP_FETCH = ("missing open_clip ViT-L-14-336/openai weights: /x/hub/models--timm--vit_large_patch14_clip_336.openai "
              "fetch: HF_HOME=<same HF_HOME> hf download timm/vit_large_patch14_clip_336.openai open_clip_model.bin")
STOCHASTIC = ("stochastic sampler: it never converges to one image per seed, and no absolute gating metric (e.g. "
              "clip_score) was scored")


def test_long_reasons_are_stated_once(run_dir, tmp_path):
    """A skipped metric's fetch command is stated once (fid and kid, which share it, together) and the min-steps cells
    link to it; a long reason two schedulers share is one numbered note under the table."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    why = f"{STOCHASTIC}; distribution rule: no distribution metric was scored (cmmd: {CLIP_FETCH}; kid: {FETCH})"
    summary["skipped_metrics"] = {"fid": FETCH, "kid": FETCH, "cmmd": CLIP_FETCH}
    summary["min_steps"] = {**MIN_STEPS, "schedulers": {name: {"min_steps": None, "reached": False, "why": why}
                                                        for name in SCHEDULERS}}
    (copy / "summary.json").write_text(json.dumps(summary))
    text = write_report(copy).read_text()
    for reason in (FETCH, CLIP_FETCH, STOCHASTIC):
        assert text.count(esc(reason)) == 1, reason
    assert f"<b>fid</b>, <b>kid</b>: {esc(FETCH)}" in text
    table = text[text.index('<table class="data min-steps"'):]
    table = table[:table.index("</table>")]
    assert table.count('href="#skipped-') == 2 * len(SCHEDULERS)  # cmmd's and kid's reasons, in each row
    assert table.count('href="#min-steps-note-1"') == len(SCHEDULERS)
    assert "distribution rule: no distribution metric was scored (cmmd: " in table
    assert f'<li id="min-steps-note-1">{esc(STOCHASTIC)}</li>' in text
