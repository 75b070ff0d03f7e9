"""Release gate: identical runs pass, a deliberately worse model fails the right rule, bad input is exit 2."""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.errors import EvalkitError
from evalkit.gate import gate_main
from evalkit.gate.comparable import check_comparable
from evalkit.gate.judge import evaluate, paired_deltas
from evalkit.gate.outputs import HEADER
from evalkit.gate.rules import Rule
from evalkit.store.read import ScoredRun
from evalkit.metrics import METRICS, register
from evalkit.stats.bootstrap import paired_difference
from evalkit.sweep.prompts import content_id

PROMPTS = "a ginger cat sleeping on a wool blanket\na small orange fish swimming in a glass bowl\n"
WORSE = "python:plugins.worse_mixture:make_pipeline"
# the broken-images rule is always judged (per swept scheduler and the references), and so is the
# uncertified-references rule: here nothing is broken and every reference is certified
NONE_BROKEN = {"broken_images dpmpp_2m_karras": False, "broken_images euler": False, "broken_images references": False,
               "uncertified_references references": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Four small scored runs: baseline, the same config again, a worse model, and other seeds."""
    root = tmp_path_factory.mktemp("gate")
    (root / "prompts.txt").write_text(PROMPTS)
    sweep = {"schedulers": ["euler", "dpmpp_2m_karras"], "steps": [2, 4, 8, 15], "seeds": 3,
             "prompts": str(root / "prompts.txt"), "reference_steps": 30, "metrics": ["ssim", "psnr"],
             "device": "cpu"}
    variants = {"base": {}, "same": {}, "worse": {"model": WORSE}, "seeds2": {"seeds": 2}}
    return {name: evalkit.run({**sweep, **extra, "out": str(root / name)}).dir for name, extra in variants.items()}


def write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def junit_cases(path: Path) -> tuple[ET.Element, dict[str, bool]]:
    """The <testsuites> root (totals) and testcase name -> failed, over every per-scheduler <testsuite>."""
    root = ET.parse(path).getroot()
    return root, {c.get("name"): c.find("failure") is not None for c in root.iter("testcase")}


def test_identical_runs_pass(runs, tmp_path, capsys):
    code = gate_main(runs["base"], runs["same"], junit=tmp_path / "j.xml", markdown=tmp_path / "m.md")
    assert code == 0
    suite, cases = junit_cases(tmp_path / "j.xml")
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(cases) > 0
    # defaults: ssim (tolerance 0.05) on every shared column, psnr not gated (no default), min_steps per scheduler
    assert "regression ssim euler@2" in cases and "min_steps dpmpp_2m_karras" in cases
    assert not any("psnr" in name for name in cases)
    assert "PASS" in capsys.readouterr().out


def test_worse_candidate_fails_ssim_regression(runs, tmp_path):
    code = gate_main(runs["base"], runs["worse"], junit=tmp_path / "j.xml", markdown=tmp_path / "m.md")
    assert code == 1
    suite, cases = junit_cases(tmp_path / "j.xml")
    failed = [name for name, bad in cases.items() if bad]
    assert "regression ssim euler@4" in failed
    assert all(name.startswith("regression ssim") for name in failed)
    assert suite.get("failures") == str(len(failed)) and suite.get("tests") == str(len(cases))
    assert "FAIL" in (tmp_path / "m.md").read_text().splitlines()[0]


def test_regression_is_judged_on_the_ci_bound_not_the_mean(runs, tmp_path):
    """A max_drop between the mean drop and the CI's worse bound fails; one beyond the bound passes."""
    d = paired_deltas(ScoredRun.read(runs["base"]), ScoredRun.read(runs["worse"]))
    row = d[(d.metric == "ssim") & (d.scheduler == "euler") & (d.steps == 15)].iloc[0]
    mean_drop, worst_drop = -row["mean"], -row.ci_low  # ssim: higher is better
    assert 0 < mean_drop < worst_drop
    rule = '[[regression]]\nmetric = "ssim"\nscheduler = "euler"\nsteps = 15\nmax_drop = {}\n'
    assert gate_main(runs["base"], runs["worse"], rules=write(tmp_path, rule.format((mean_drop + worst_drop) / 2))) == 1
    assert gate_main(runs["base"], runs["worse"], rules=write(tmp_path, rule.format(worst_drop * 1.01))) == 0


def test_paired_deltas_match_stats_paired_difference(runs):
    """The vectorised deltas equal stats.paired_difference on the two runs as two pseudo-columns."""
    base, cand = ScoredRun.read(runs["base"]), ScoredRun.read(runs["worse"])
    pick = lambda r, label: r.values[(r.values.scheduler == "euler") & (r.values.steps == 8)].assign(  # noqa: E731
        scheduler=label, steps=0)
    values = pd.concat([pick(base, "baseline"), pick(cand, "candidate")])
    ref = paired_difference(values, "ssim", ("candidate", 0), ("baseline", 0))
    d = paired_deltas(base, cand)
    row = d[(d.metric == "ssim") & (d.scheduler == "euler") & (d.steps == 8)].iloc[0]
    assert row["mean"] == pytest.approx(ref["mean"]) and row.n == ref["n"] == 6
    # same seed, same units: the same resamples, so the same interval
    assert (row.ci_low, row.ci_high) == pytest.approx((ref["ci_low"], ref["ci_high"]))


def test_min_steps_rule_fails_when_candidate_needs_more_steps(runs, tmp_path):
    """The exact model needs 8 DPM++ 2M Karras steps here, the perturbed one 4: swap them to see +4 fail."""
    rules = write(tmp_path, '[[min_steps]]\nscheduler = "dpmpp_2m_karras"\nmax_increase = 0\n')
    assert gate_main(runs["worse"], runs["base"], rules=rules, junit=tmp_path / "j.xml") == 1
    assert junit_cases(tmp_path / "j.xml")[1] == {"min_steps dpmpp_2m_karras": True, **NONE_BROKEN}
    assert gate_main(runs["base"], runs["worse"], rules=rules) == 0


def test_non_comparable_runs_name_the_seeds(runs):
    with pytest.raises(EvalkitError, match=r"not comparable: seeds \[0,1,2\] vs \[0,1\].*same sweep config"):
        gate_main(runs["base"], runs["seeds2"])


def test_not_a_run_folder(tmp_path, runs):
    with pytest.raises(EvalkitError, match="not a scored run folder"):
        gate_main(tmp_path, runs["base"])


@pytest.mark.parametrize("text, message", [
    ("[[regression]\nmetric = 'ssim'\n", "not valid TOML"),
    ("[[regression]]\nmetric = 'ssim'\nmax_drop = 0.1\nmax_dorp = 1\n", "unknown key 'max_dorp'"),
    ("[[regression]]\nmetric = 'ssim'\n", "missing max_drop"),
    ("[[regression]]\nmetric = 'sism'\nmax_drop = 0.1\n", "unknown metric 'sism'"),
    ("[[regression]]\nmetric = 'ssim'\nmax_drop = -1\n", "max_drop must be >= 0"),
    ("[[band]]\nmetric = 'ssim'\nscheduler = 'euler'\nsteps = 8\nlo = 0.9\nhi = 0.1\n", r"lo \(0.9\) > hi \(0.1\)"),
    ("[[gates]]\nmetric = 'ssim'\n", "unknown table 'gates'"),
    ("[[regression]]\nmetric = 'ssim'\nscheduler = 'heun'\nmax_drop = 0.1\n", "scheduler 'heun' is not in the run"),
    ("[[regression]]\nmetric = 'lpips'\nmax_drop = 0.1\n", "'lpips' was not scored"),
])
def test_bad_rules_file(runs, tmp_path, text, message):
    with pytest.raises(EvalkitError, match=message) as info:
        gate_main(runs["base"], runs["same"], rules=write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_thresholds_only_bands(runs, tmp_path):
    value = ScoredRun.read(runs["worse"]).set_value("ssim", ("euler", 8))
    band = "[[band]]\nmetric = 'ssim'\nscheduler = 'euler'\nsteps = 8\nlo = {}\nhi = {}\n"
    inside = write(tmp_path, band.format(value - 0.01, value + 0.01), "in.toml")
    outside = write(tmp_path, band.format(value + 0.01, value + 0.02), "out.toml")
    assert gate_main(None, runs["worse"], rules=inside, thresholds_only=True, junit=tmp_path / "j.xml") == 0
    assert junit_cases(tmp_path / "j.xml")[1] == {"band ssim euler@8": False, **NONE_BROKEN}
    assert gate_main(None, runs["worse"], rules=outside, thresholds_only=True) == 1
    only_regression = write(tmp_path, "[[regression]]\nmetric = 'ssim'\nmax_drop = 0.1\n", "reg.toml")
    with pytest.raises(EvalkitError, match=r"needs a rules file with at least one \[\[band\]\]"):
        gate_main(None, runs["worse"], rules=only_regression, thresholds_only=True)


def test_markdown_has_header_and_one_row_per_rule_instance(runs, tmp_path):
    rules = write(tmp_path, "[[regression]]\nmetric = 'psnr'\nscheduler = '*'\nsteps = 8\nmax_drop = 1.0\n"
                            "[[min_steps]]\nmax_increase = 0\n"
                            "[[band]]\nmetric = 'ssim'\nscheduler = '*'\nsteps = 15\nlo = 0.5\nhi = 1.0\n")
    gate_main(runs["base"], runs["worse"], rules=rules, junit=tmp_path / "j.xml", markdown=tmp_path / "m.md")
    lines = (tmp_path / "m.md").read_text().splitlines()
    header = "| " + " | ".join(HEADER) + " |"
    assert header == "| rule | baseline | candidate | delta | CI | verdict |" and header in lines
    body = lines[lines.index(header) + 2:]
    rows = [line for line in body if line.startswith("| ")]
    names = set(junit_cases(tmp_path / "j.xml")[1])
    # psnr at 2 schedulers, min_steps at 2, band at 2, broken_images at 3, uncertified_references at 1
    assert len(rows) == len(names) == 10
    assert {row.split(" | ")[0][2:] for row in rows} == names


def test_comparability_names_every_difference(runs):
    base, cand = ScoredRun.read(runs["base"]), ScoredRun.read(runs["same"])
    fish = content_id(PROMPTS.splitlines()[1])  # a prompt's id is derived from its text
    cand.images = cand.images.assign(
        prompt=cand.images.prompt.where(cand.images.prompt_id != fish, "a blue bird on a branch"), width=32)
    with pytest.raises(EvalkitError, match=rf"not comparable: prompts differ at {fish}; image size 64x64 vs 32x64"):
        check_comparable(base, cand)


def test_lower_is_better_metric_is_oriented_so_negative_is_worse(runs):
    """1 − SSIM as a lower-is-better metric gives the same oriented deltas, CIs and verdicts as SSIM."""
    spec = dataclasses.replace(METRICS.get("ssim"), name="ssim_loss", higher_is_better=False)
    register(spec)
    try:
        base, cand = ScoredRun.read(runs["base"]), ScoredRun.read(runs["worse"])
        for r in (base, cand):
            loss = r.values[r.values.metric == "ssim"].assign(metric="ssim_loss", value=lambda t: 1 - t.value)
            r.values = pd.concat([r.values, loss], ignore_index=True)
            s = r.set_scores[r.set_scores.metric == "ssim"].assign(metric="ssim_loss", value=lambda t: 1 - t.value)
            r.set_scores = pd.concat([r.set_scores, s], ignore_index=True)
        rules = [Rule("regression", "test", metric=m, scheduler="euler", limit=0.05) for m in ("ssim", "ssim_loss")]
        ssim, loss = [evaluate([rule], base, cand) for rule in rules]
        assert [o.passed for o in ssim] == [o.passed for o in loss] == [False, False, False, True]
        for a, b in zip(ssim, loss):
            assert a.delta < 0 and b.delta == pytest.approx(a.delta) and b.ci == pytest.approx(a.ci)
    finally:
        METRICS.remove("ssim_loss")


def test_wildcard_skips_not_convergent_columns(runs):
    """Stochastic samplers' convergence values never converge per seed: "*" leaves them out, a name keeps them."""
    base, cand = ScoredRun.read(runs["base"]), ScoredRun.read(runs["same"])
    for r in (base, cand):
        r.set_scores = r.set_scores.assign(flags=r.set_scores["flags"].where(r.set_scores.scheduler != "euler",
                                                                           "not-convergent"))
    wildcard = evaluate([Rule("regression", "test", metric="ssim", limit=0.05)], base, cand)
    named = evaluate([Rule("regression", "test", metric="ssim", scheduler="euler", limit=0.05)], base, cand)
    assert {o.scheduler for o in wildcard} == {"dpmpp_2m_karras"}
    assert len(named) == 4


def test_steps_not_swept_is_an_error(runs, tmp_path):
    rules = write(tmp_path, "[[regression]]\nmetric = 'ssim'\nsteps = 3\nmax_drop = 0.1\n")
    with pytest.raises(EvalkitError, match=r"no \(scheduler, steps\) column \*@3 for ssim .*have dpmpp_2m_karras@2,"):
        gate_main(runs["base"], runs["same"], rules=rules)


def test_cli_exit_codes_are_what_a_pipeline_acts_on(runs, tmp_path, evalkit_cli):
    same = evalkit_cli(["gate", "--baseline", str(runs["base"]), "--candidate", str(runs["same"]),
                        "--junit", str(tmp_path / "j.xml")])
    worse = evalkit_cli(["gate", "--baseline", str(runs["base"]), "--candidate", str(runs["worse"])])
    bad = evalkit_cli(["gate", "--baseline", str(runs["base"]), "--candidate", str(runs["seeds2"])])
    assert (same[0], worse[0], bad[0]) == (0, 1, 2)
    assert "not comparable" in bad[2] and bad[2].count("\n") == 1
    assert (tmp_path / "j.xml").is_file()


def test_markdown_leads_with_the_verdict_and_a_line_per_scheduler(runs, tmp_path):
    """The verdict, then one summary row per scheduler, then every rule instance inside a collapsed block."""
    code = gate_main(runs["base"], runs["worse"], junit=tmp_path / "j.xml", markdown=tmp_path / "m.md")
    text = (tmp_path / "m.md").read_text()
    lines = text.splitlines()
    assert code == 1 and lines[0].startswith("### ❌ evalkit gate FAIL: ")
    root, cases = junit_cases(tmp_path / "j.xml")
    summary = [line for line in lines[:lines.index(next(x for x in lines if x.startswith("<details>")))]
               if line.startswith("| ") and not line.startswith("| scheduler")]
    assert [row.split(" | ")[0][2:] for row in summary] == ["dpmpp_2m_karras", "euler", "references"]
    for row in summary:
        scheduler, failed = row.split(" | ")[0][2:], row.split(" | ")[1]
        mine = [name for name in cases if name.endswith(f" {scheduler}") or f" {scheduler}@" in name]
        assert failed == f"{sum(cases[n] for n in mine)} of {len(mine)}"
    # the worst regression is the lowest delta with its CI, as in the full table
    euler = next(row for row in summary if row.startswith("| euler "))
    full = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| regression ssim euler@")}
    worst = min(full, key=lambda name: float(full[name][3]))
    assert f"ssim {worst.split()[-1]}: {float(full[worst][3]):+.4g} {full[worst][4]}" in euler
    details = text[text.index("<details>"):text.index("</details>")]
    kinds = ("| regression", "| min_steps", "| broken_images", "| uncertified_references")
    assert sum(line.startswith(kinds) for line in details.splitlines()) \
        == len(cases)


def test_junit_has_one_testsuite_per_scheduler(runs, tmp_path):
    gate_main(runs["base"], runs["worse"], junit=tmp_path / "j.xml")
    root, cases = junit_cases(tmp_path / "j.xml")
    suites = root.findall("testsuite")
    # broken_images rules judge the references too: their own group
    assert [s.get("name") for s in suites] == ["evalkit gate: dpmpp_2m_karras", "evalkit gate: euler",
                                               "evalkit gate: references"]
    for suite in suites:
        scheduler = suite.get("name").split(": ")[1]
        tests = suite.findall("testcase")
        assert {t.get("classname") for t in tests} == {f"evalkit.gate.{scheduler}"}
        assert suite.get("tests") == str(len(tests))
        assert suite.get("failures") == str(sum(t.find("failure") is not None for t in tests))
    assert root.get("tests") == str(len(cases)) and root.get("failures") == str(sum(cases.values()))
