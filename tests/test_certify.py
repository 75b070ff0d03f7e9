"""Certified references: a reference that draws the wrong picture is caught on exactly the units where it is
wrong (against the exact ODE solution, computed here independently), corrected by its tie-break, and the
convergence values of those units are taken against the image that stands in for it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_of

import evalkit
from evalkit.gate import gate_main
from evalkit.models import load_model
from evalkit.store.read import ScoredRun
from expect import one_line

EARLY = "builtin:mixture-early"
KITTEN = "a ginger kitten asleep on a wool blanket\n"  # builtin:mixture-early: an animal, one of three pictures
# Karras spacing at 50 steps steps over the choice the model makes near t = 1 (bench/README.md "Reference solvers")
WEAK = {"model": EARLY, "reference_scheduler": "flow_dpmpp_2m_karras", "reference_steps": 50, "steps": [1, 2, 4],
        "seeds": 8, "schedulers": ["flow_euler"], "metrics": ["ssim"]}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


def wrong_against_truth(run_dir, table: pd.DataFrame) -> set[int]:
    """Seeds whose image (by key) is not the exact solution's picture: SSIM < 0.99 or mean error > 0.01, computed
    here from the model's own ground truth, without evalkit's certification code."""
    pipe = load_model(EARLY).pipe
    wrong = set()
    for row in table.itertuples():
        mine = pixels(run_dir / "images" / f"{row.key}.png")
        truth = np.round(pipe.ground_truth(KITTEN.strip(), int(row.seed)) * 255) / 255
        as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float()  # noqa: E731
        ssim = float(ssim_of(as_tensor(mine), as_tensor(truth), data_range=1.0))
        if ssim < 0.99 or np.abs(mine - truth).mean() > 0.01:
            wrong.add(int(row.seed))
    return wrong


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    root = tmp_path_factory.mktemp("certify")
    (root / "prompts.txt").write_text(KITTEN)
    return evalkit.run({**WEAK, "prompts": str(root / "prompts.txt"), "out": str(root / "weak")})


def test_a_wrong_reference_is_caught_on_exactly_its_units_and_corrected(weak):
    scored = ScoredRun.read(weak.dir)
    table = scored.certification.set_index("seed")
    flagged = set(table.index[table.status != "certified"])
    assert flagged == wrong_against_truth(weak.dir, scored.references) and flagged  # e.g. seeds 2, 6, 7
    assert set(table.status[list(flagged)]) == {"corrected"}  # the tie-break sided with the check every time
    assert not wrong_against_truth(weak.dir, scored.certification.assign(key=scored.certification.key.where(
        scored.certification.status != "corrected", scored.certification.check_key)))  # what stands is right
    # one check per unit, plus a tie-break (the check solver at twice the steps) for each flagged unit only
    checks = scored.images[scored.images.role == "check"]
    assert len(checks) == 8 + len(flagged)
    assert set(checks.steps) == {50, 100} and set(checks.scheduler) == {"flow_dpmpp_2m"}
    summary = json.loads((weak.dir / "summary.json").read_text())["references"]
    assert (summary["certified"], summary["corrected"], summary["uncertified"]) == (8 - len(flagged), len(flagged), 0)
    assert sorted(u["seed"] for u in summary["corrected_units"]) == sorted(flagged)
    assert any("corrected" in w for w in json.loads((weak.dir / "summary.json").read_text())["warnings"])


def test_a_corrected_units_values_are_taken_against_its_check_image(weak):
    scored = ScoredRun.read(weak.dir)
    cert = scored.certification.set_index("seed")
    seed = int(cert.index[cert.status == "corrected"][0])
    row = scored.sweep[(scored.sweep.seed == seed) & (scored.sweep.steps == 4)].iloc[0]
    value = scored.values[(scored.values.key == row.key) & (scored.values.metric == "ssim")].value.item()
    as_tensor = lambda key: torch.from_numpy(pixels(weak.dir / "images" / f"{key}.png")).permute(2, 0, 1)[None].float()  # noqa: E731
    against_check = float(ssim_of(as_tensor(row.key), as_tensor(cert.check_key[seed]), data_range=1.0))
    against_reference = float(ssim_of(as_tensor(row.key), as_tensor(cert.key[seed]), data_range=1.0))
    assert value == pytest.approx(against_check, abs=1e-4) and abs(against_check - against_reference) > 0.05


def test_a_rerun_renders_nothing_and_keeps_the_tiebreaks(weak):
    before = ScoredRun.read(weak.dir).certification
    again = evalkit.run({**WEAK, "prompts": str(weak.config.prompts), "out": str(weak.dir)})
    assert again.stats.rendered == 0
    pd.testing.assert_frame_equal(ScoredRun.read(weak.dir).certification, before)
    assert (again.images.role == "check").sum() == (weak.images.role == "check").sum() > 8


def test_units_no_two_solutions_agree_on_are_uncertified_and_fail_the_gate(tmp_path, weak):
    """Euler at 6 and 12 steps as check and tie-break, Karras at 6 as the reference: on most units none agree."""
    poor = evalkit.run({**WEAK, "prompts": str(weak.config.prompts), "out": str(tmp_path / "poor"),
                        "steps": [1, 2], "reference_steps": 6, "check_scheduler": "flow_euler"})
    scored = ScoredRun.read(poor.dir)
    bad = scored.uncertified()
    assert len(bad) >= 1
    unit = bad.iloc[0]
    values = scored.values[(scored.values.seed == unit.seed) & (scored.values.metric == "ssim")
                           & (scored.values.role == "sweep")]
    assert values.value.isna().all()  # no convergence value against a picture that may be wrong
    rules = tmp_path / "rules.toml"
    rules.write_text("[[regression]]\nmetric = \"ssim\"\nmax_drop = 1.0\n")
    assert gate_main(poor.dir, poor.dir, rules=rules) == 1  # identical runs, yet the candidate is not trusted
    rules.write_text(rules.read_text() + f"[[uncertified_references]]\nmax_uncertified = {len(bad)}\n")
    assert gate_main(poor.dir, poor.dir, rules=rules) == 0


def test_certification_off_renders_no_checks_and_the_gate_says_so(tmp_path, weak, capsys):
    off = evalkit.run({**WEAK, "prompts": str(weak.config.prompts), "out": str(tmp_path / "off"), "certify": False})
    assert not (off.images.role == "check").any()
    assert set(ScoredRun.read(off.dir).certification.status) == {"unchecked"}
    rules = tmp_path / "rules.toml"
    rules.write_text("[[regression]]\nmetric = \"ssim\"\nmax_drop = 1.0\n")
    assert gate_main(off.dir, off.dir, rules=rules) == 0
    assert "not checked (certify = false)" in capsys.readouterr().out


def test_bad_check_schedulers_are_one_line_errors(evalkit_cli, tmp_path, prompts):
    base = ["run", "--prompts", prompts, "--out", str(tmp_path / "r"), "--steps", "1,2", "--seeds", "1"]
    one_line(evalkit_cli([*base, "--check-scheduler", "dpmpp_2m_karras"]), "is the reference scheduler",
             "choose another solver")
    one_line(evalkit_cli([*base, "--check-scheduler", "euler_a"]), "is stochastic", "deterministic solver")
    one_line(evalkit_cli([*base, "--check-scheduler", "flow_unipc"]), "flow_unipc", "can't sample")
    one_line(evalkit_cli([*base, "--check-scheduler", "lcm", "--reference-steps", "30"]),  # LCM takes at most 50
             "check_scheduler 'lcm' refuses 60 steps", "tie-break", "--no-certify")
    assert not (tmp_path / "r").exists()  # refused before the folder is touched
