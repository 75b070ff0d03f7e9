"""Minimum useful steps: the rule is judged on the CI bound, must hold for every larger count, and on the
exact model ranks DPM++ 2M Karras before Euler; knees are descriptive."""
import json

import numpy as np
import pandas as pd
import pytest

import evalkit
import evalkit.stats.bootstrap
from evalkit.minsteps.answer import summarize_min_steps
from evalkit.minsteps.perseed import knee


def set_scores(metric, scheduler, rows):
    return pd.DataFrame([{"scheduler": scheduler, "steps": s, "metric": metric, "value": v, "ci_low": lo,
                          "ci_high": hi, "n": 8} for s, v, lo, hi in rows])


def images_for(scheduler, steps):
    return pd.DataFrame([{"scheduler": scheduler, "steps": s, "role": "sweep", "nfe": s, "seconds": 0.01 * s}
                         for s in steps])


def test_a_mean_within_tolerance_whose_bound_is_not_does_not_pass():
    # SSIM tolerance 0.05: at 10 steps the mean (0.96) is within it but the lower bound (0.94) is not
    table = set_scores("ssim", "euler", [(5, 0.90, 0.88, 0.92), (10, 0.96, 0.94, 0.98), (20, 0.97, 0.955, 0.985)])
    out = summarize_min_steps(table, pd.DataFrame(), images_for("euler", [5, 10, 20]), {"ssim": 0.05})
    entry = out["schedulers"]["euler"]
    assert entry["min_steps"] == 20 and entry["nfe"] == 20 and entry["seconds_per_image"] == pytest.approx(0.2)
    ten = entry["evidence"]["ssim"][1]
    assert ten["distance"] == pytest.approx(0.04) and ten["ci_high"] == pytest.approx(0.06) and not ten["pass"]


def test_it_must_stay_within_tolerance_at_every_larger_count():
    table = set_scores("lpips", "heun", [(5, 0.04, 0.03, 0.045), (10, 0.07, 0.06, 0.08), (20, 0.02, 0.01, 0.03),
                                         (40, 0.01, 0.005, 0.015)])
    out = summarize_min_steps(table, pd.DataFrame(), images_for("heun", [5, 10, 20, 40]), {"lpips": 0.05})
    assert out["schedulers"]["heun"]["min_steps"] == 20  # 5 passes, but 10 does not: the plateau starts at 20


def test_never_reaching_the_plateau_says_so():
    table = set_scores("ssim", "euler", [(5, 0.5, 0.4, 0.6), (10, 0.8, 0.7, 0.9)])
    entry = summarize_min_steps(table, pd.DataFrame(), images_for("euler", [5, 10]), {"ssim": 0.05})["schedulers"]["euler"]
    assert entry["min_steps"] is None and not entry["reached"] and "sweep more steps" in entry["why"]


def test_absolute_metrics_use_a_paired_drop_from_the_highest_count():
    rng = np.random.default_rng(0)
    base = rng.normal(30, 3, size=20)  # per-unit CLIP scores vary a lot; the step effect is small and paired
    rows = [{"prompt_id": f"p{i}", "seed": 0, "scheduler": "ddim", "steps": s, "metric": "clip_score",
             "value": base[i] - drop + rng.normal(0, 0.05)} for s, drop in [(5, 2.0), (10, 0.2), (20, 0.0)]
            for i in range(20)]
    values = pd.DataFrame(rows)
    table = evalkit.stats.bootstrap.bootstrap_means(values)
    entry = summarize_min_steps(table, values, images_for("ddim", [5, 10, 20]), {"clip_score": 0.5})["schedulers"]["ddim"]
    assert entry["min_steps"] == 10
    assert entry["evidence"]["clip_score"][1]["distance"] == pytest.approx(0.2, abs=0.05)


def test_knee_is_where_the_curve_bends():
    table = set_scores("ssim", "euler", [(s, 1 - 0.5 * 0.5 ** i, 0, 1) for i, s in enumerate([1, 2, 4, 8, 16, 32, 64])])
    table.loc[table.steps >= 8, "value"] = 0.99  # flat from 8 on
    assert knee(table, "ssim", "euler") == 8


def test_on_the_exact_model_dpmpp_2m_karras_needs_fewer_steps_than_euler(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\nthree apples\n")
    run = evalkit.run({"schedulers": ["euler", "euler_a", "dpmpp_2m_karras"], "steps": [2, 4, 8, 15, 30, 50],
                       "seeds": 3, "prompts": str(prompts), "out": str(tmp_path / "r"), "metrics": ["ssim"]})
    min_steps = json.loads((run.dir / "summary.json").read_text())["min_steps"]
    entries = min_steps["schedulers"]
    assert min_steps["tolerances"] == {"ssim": 0.05}
    assert entries["dpmpp_2m_karras"]["min_steps"] < entries["euler"]["min_steps"]
    assert entries["euler_a"]["min_steps"] is None and "stochastic" in entries["euler_a"]["why"]
