"""The report's reference certification (report/references.py) on real runs of the exact models: the header line and
image counts, every unit a tie-break corrected listed with its reference, check and tie-break images, an uncertified
unit shown as a warning, and runs whose references were not certified saying why."""
from __future__ import annotations

import re
import shutil
from html import escape
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.report import grid, write_report
from evalkit.store.read import ScoredRun
from evalkit.sweep.prompts import content_id
from test_report import XSS, Page

KITTEN = "a ginger kitten asleep on a wool blanket"
HOSTILE = XSS + ' & "quoted" kitten'
# builtin:mixture-early decides what to draw early; Karras spacing steps over that moment for these seeds, so the
# reference lands on another picture and a tie-break sides with the check (the prompt text changes nothing here)
CORRECTED_SEEDS = {2, 6, 7}
SWEEP = {"model": "builtin:mixture-early", "reference_scheduler": "flow_dpmpp_2m_karras", "reference_steps": 50,
         "steps": (1, 2, 4), "schedulers": ("flow_euler",), "metrics": ("ssim",)}


def sweep(root: Path, prompts: list[str], **overrides) -> Path:
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return evalkit.run({**SWEEP, "seeds": 8, "prompts": str(root / "prompts.txt"), "out": str(root / "run"),
                        **overrides}).dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Two prompts (the second one hostile HTML) x 8 seeds: units 2, 6 and 7 of each corrected."""
    return sweep(tmp_path_factory.mktemp("references"), [KITTEN, HOSTILE])


@pytest.fixture(scope="module")
def page_text(run_dir) -> str:
    return write_report(run_dir).read_text()


def fact(text: str, name: str) -> str:
    """The header's value for `name` (its <dd>), as HTML."""
    return re.search(rf"<dt>{name}</dt><dd>(.*?)</dd>", text).group(1)


def section(text: str) -> str:
    start = text.index('<section id="references">')
    return text[start:text.index("</section>", start)]


def listed_rows(text: str) -> list[str]:
    """The certification table's rows, as HTML."""
    body = section(text).split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r"<tr class=.*?</tr>", body)


def test_header_counts_certified_and_corrected_references(page_text, run_dir):
    table = pd.read_parquet(run_dir / "references.parquet")
    assert {(p, s) for p, s, status in zip(table.prompt_id, table.seed, table.status) if status == "corrected"} == \
        {(p, s) for p in (content_id(KITTEN), content_id(HOSTILE)) for s in CORRECTED_SEEDS}
    line = fact(page_text, "references")
    assert line.startswith(f"<b>{len(table) - 6} of {len(table)} certified</b>, <b class=\"corrected\">6 corrected</b>")
    assert "(check: flow_dpmpp_2m at 50 steps; worst SSIM " in line and "uncertified" not in line
    assert f"worst SSIM {table.ssim.min():.4f}, worst mean error {table.mean_error.max():.2g})" in line


def test_image_count_names_the_checks_and_tiebreaks(page_text, run_dir):
    roles = pd.read_parquet(run_dir / "images.parquet").role.value_counts()
    assert roles["check"] == 16 + 6  # one check per reference, and a tie-break per corrected unit
    assert fact(page_text, "images") == (f"{roles.sum()} ({roles['sweep']} sweep + {roles['reference']} references + "
                                         f"{roles['check']} checks, 6 of them tie-breaks)")


def test_every_corrected_unit_is_listed_with_its_three_images(page_text, run_dir):
    table = pd.read_parquet(run_dir / "references.parquet")
    prompts = pd.read_parquet(run_dir / "images.parquet").set_index("key").prompt
    rows = listed_rows(page_text)
    assert len(rows) == 6 and all(row.startswith('<tr class="corrected">') for row in rows)
    for unit in table[table.status == "corrected"].itertuples():
        row = next(r for r in rows if f'<td class="prompt">{escape(prompts[unit.key])}</td><td>{unit.seed}</td>' in r)
        links = re.findall(r'<a href="([^"]+)"><img class="thumb"', row)
        assert links == [f"images/{key}.png" for key in (unit.key, unit.check_key, unit.tiebreak_key)]
        assert all((run_dir / link).is_file() for link in links)
        assert f"<td>{unit.ssim:.4f}</td>" in row and "sides with the check" in row


def test_prompts_in_the_section_are_escaped(page_text):
    text = section(page_text)
    assert XSS not in text and "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot; kitten" in text
    assert not any("onerror" in attrs for _, attrs in Page(text).tags)


def test_the_grid_marks_a_corrected_reference(run_dir):
    data = ScoredRun.read(run_dir)
    assert '<b class="corrected">corrected</b>' in grid.pair_table(data, 0, KITTEN, 2)
    assert "corrected" not in grid.pair_table(data, 0, KITTEN, 0)


def test_an_uncertified_unit_is_a_warning_listed_first(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    table = pd.read_parquet(copy / "references.parquet")
    table.loc[(table.prompt_id == content_id(HOSTILE)) & (table.seed == 6), "status"] = "uncertified"
    table.to_parquet(copy / "references.parquet", index=False)
    text = write_report(copy).read_text()
    assert '<b class="uncertified">1 uncertified</b>' in fact(text, "references")
    assert "uncertified: left out of every convergence metric" in fact(text, "references")
    assert section(text).split("</h2>")[1].startswith('<p class="warning">')
    rows = listed_rows(text)
    assert len(rows) == 6 and rows[0].startswith('<tr class="uncertified">') and "<td>6</td>" in rows[0]
    assert "agrees with neither" in rows[0]


def test_a_run_scored_before_certification_says_so(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "references.parquet").unlink()
    text = write_report(copy).read_text()
    assert fact(text, "references").startswith("not certified (scored before certification; rescore with")
    assert '<p class="absent">References not certified' in section(text) and "<table" not in section(text)


def test_a_run_with_certify_false_says_so(tmp_path):
    text = write_report(sweep(tmp_path, [KITTEN], seeds=2, certify=False)).read_text()
    assert fact(text, "references") == "not certified (certify = false)"
    assert fact(text, "images") == "8 (6 sweep + 2 references)"
