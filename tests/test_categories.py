"""Per-category answers (issue 21 part 4): images.parquet carries each prompt's category and challenge, summary.json
answers min steps per (scheduler, category) with the same rule over that category's units, a category too small to
judge is named and not judged, the report shows the category view (hardest first, long reasons once), gate rules
may name a category, compare shows per-category changes."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import evalkit
from evalkit.minsteps.categories import MIN_UNITS

# A PartiPrompts-format file (Prompt, Category, Challenge, Note) over the built-in model's keywords: two categories
# of 4 prompts (x 3 seeds = 12 units each) and one of a single prompt (3 units: too few to judge).
ROWS = [
    ("a smiling face, studio portrait", "People", "Basic"),
    ("a hiker standing alone in tall grass at noon", "People", "Complex"),
    ("a ginger kitten asleep on a wool blanket", "Animals", "Basic"),
    ("a small orange fish in a glass bowl", "Animals", "Basic"),
    ("the sun setting over rolling hills", "Outdoor Scenes", "Basic"),
    ("waves breaking on a quiet beach at dawn", "Outdoor Scenes", "Complex"),
    ("snow-capped mountain peaks above a valley", "Outdoor Scenes", "Fine-grained Detail"),
    ("a red STOP sign on a street corner", "Outdoor Scenes", "Writing & Symbols"),
    ("three apples on a white table", "People", "Quantity"),
    ("abstract concentric circles over a smooth pink to violet gradient", "People", "Imagination"),
    ("a close-up of a fine black and white checkerboard", "Animals", "Fine-grained Detail"),
    ('a chalkboard that reads "HELLO" in bold letters', "Arts", "Writing & Symbols"),
]
SWEEP = dict(schedulers=["euler", "dpmpp_2m"], steps=[4, 10, 25, 50], seeds=3, reference_steps=100,
             metrics=["ssim"])


def write_parti(path, rows=ROWS):
    lines = ["Prompt\tCategory\tChallenge\tNote"] + [f"{p}\t{c}\t{h}\t" for p, c, h in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("categories")
    return evalkit.run({**SWEEP, "prompts": write_parti(root / "parti.tsv"), "out": str(root / "run")})


def test_images_carry_the_category_and_challenge(suite_run):
    images = pd.read_parquet(suite_run.dir / "images.parquet")
    sweep = images[images.role == "sweep"]
    by_prompt = dict(zip(sweep.prompt, zip(sweep.category, sweep.challenge)))
    assert by_prompt == {p: (c, h) for p, c, h in ROWS}


def test_min_steps_per_category_counts_units_and_names_the_one_too_small_to_judge(suite_run):
    categories = json.loads((suite_run.dir / "summary.json").read_text())["min_steps"]["categories"]
    assert {name: (entry["prompts"], entry["units"]) for name, entry in categories.items()} == {
        "People": (4, 12), "Animals": (3, 9), "Outdoor Scenes": (4, 12), "Arts": (1, 3)}
    assert MIN_UNITS == 10
    for small in ("Animals", "Arts"):
        assert categories[small]["judged"] is False
        assert f"fewer than {MIN_UNITS}" in categories[small]["why"]
    for judged in ("People", "Outdoor Scenes"):
        assert categories[judged]["judged"] is True
        assert set(categories[judged]["schedulers"]) == {"euler", "dpmpp_2m"}


def test_a_categorys_answer_is_the_answer_of_a_run_of_that_category_alone(suite_run, tmp_path):
    """Same rule, same units: the category's answer in the suite run equals the whole-run answer of a run made of
    that category's prompts only."""
    categories = json.loads((suite_run.dir / "summary.json").read_text())["min_steps"]["categories"]
    for name in ("People", "Outdoor Scenes"):
        alone = evalkit.run({**SWEEP, "prompts": write_parti(tmp_path / f"{name}.tsv", [r for r in ROWS if r[1] == name]),
                             "out": str(tmp_path / name)})
        whole = json.loads((alone.dir / "summary.json").read_text())["min_steps"]["schedulers"]
        for scheduler, answer in categories[name]["schedulers"].items():
            assert answer["min_steps"] == whole[scheduler]["min_steps"], (name, scheduler)
            assert answer["reached"] == whole[scheduler]["reached"]


def test_the_report_shows_the_category_view_hardest_first_with_each_reason_once(suite_run):
    html = (suite_run.dir / "report.html").read_text()
    assert 'id="categories"' in html and "Per category" in html
    table = html[html.index('class="data categories"'):]
    table = table[:table.index("</table>")]
    order = [name for name in ("People", "Outdoor Scenes", "Animals", "Arts") if name in table]
    assert order[-2:] == ["Animals", "Arts"]  # not judged: last
    assert "not judged: 9 units" in table and "not judged: 3 units" in table
    assert html.count(f"fewer than {MIN_UNITS} (prompt, seed) units: too few to judge") == 1  # once, as a note
    assert '"hardest first"' in html  # the per-category curves' legend


def test_a_run_without_categories_has_no_category_view(tmp_path, prompts):
    run = evalkit.run({**SWEEP, "seeds": 1, "prompts": prompts, "out": str(tmp_path / "plain")})
    assert "categories" not in json.loads((run.dir / "summary.json").read_text())["min_steps"]
    assert 'id="categories"' not in (run.dir / "report.html").read_text()


def test_gate_rules_may_name_a_category(suite_run, tmp_path, evalkit_cli):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[min_steps]]\ncategory = "People"\nmax_increase = 0\n'
                     '[[regression]]\nmetric = "ssim"\ncategory = "Outdoor Scenes"\nmax_drop = 0.01\n'
                     '[[min_steps]]\ncategory = "Arts"\nmax_increase = 0\n')
    junit = tmp_path / "junit.xml"
    code, out, err = evalkit_cli(["gate", "--baseline", str(suite_run.dir), "--candidate", str(suite_run.dir), "--rules", str(rules),
                                  "--junit", str(junit)])
    assert code == 0, out + err
    text = junit.read_text()
    assert "[People]" in text and "[Outdoor Scenes]" in text
    assert "not judged" in out  # Arts: too few units in both runs, compares nothing and says so

    rules.write_text('[[min_steps]]\ncategory = "Vehicles"\nmax_increase = 0\n')
    code, out, err = evalkit_cli(["gate", "--baseline", str(suite_run.dir), "--candidate", str(suite_run.dir), "--rules", str(rules)])
    assert code == 2
    assert "'Vehicles'" in err and "People" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_compare_shows_per_category_changes(suite_run, tmp_path, evalkit_cli):
    out = tmp_path / "compare.html"
    code, stdout, err = evalkit_cli(["compare", str(suite_run.dir), str(suite_run.dir), "--out", str(out)])
    assert code == 0, err
    html = out.read_text()
    assert 'class="data categories-compare"' in html
    assert html.count("<th scope=\"row\">People</th>") == 1
