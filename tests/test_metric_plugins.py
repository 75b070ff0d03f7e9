"""python:MODULE:FACTORY metric plugins end to end: scored and cached like built-ins, values equal to the
head applied by hand to open_clip embeddings, CIs, min-steps judgement (stochastic samplers too), report
curve, gate rule, skip-with-reason for missing weights, one-line errors for bad plugins."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evalkit
from evalkit.errors import EvalkitError
from evalkit.gate import gate_main
from evalkit.metrics import METRICS
from evalkit.metrics.plugins import plugin_scorer
from plugins.aesthetic import HEAD_FILE, SOURCE, write_tiny_aesthetic

SWEEP = dict(schedulers=["euler", "euler_a"], steps=[2, 8], seeds=3, reference_steps=30)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield write_tiny_aesthetic()
    plugin_scorer.cache_clear()  # a plugin is built once per process: forget this test's weights
    if "tiny_aesthetic" in METRICS.names():
        METRICS.remove("tiny_aesthetic")


def by_hand(clip_file, head_file, paths):
    """Independent: open_clip's own loader and preprocess, then the Linear stack as matrix products."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("evalkit-tiny-clip", pretrained=str(clip_file))
    with torch.no_grad():
        e = model.eval().encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths]))
    x = torch.nn.functional.normalize(e.float(), dim=-1)
    state = torch.load(head_file)
    for i in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    return x.squeeze(-1).numpy()


def test_a_plugin_metric_is_scored_cached_judged_reported_and_gated(tmp_path, weights, prompts):
    clip_file, head_file = weights
    config = {**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["ssim", SOURCE]}
    run = evalkit.run(config)
    scored = run.images[run.images.role != "check"]  # check images only certify references: never scored
    assert run.score.computed["tiny_aesthetic"] == len(scored) == 2 * 2 * 2 * 3 + 2 * 3
    scores = run.scores.query("metric == 'tiny_aesthetic'").merge(run.images, on="key")
    np.testing.assert_allclose(scores.value[:6], by_hand(clip_file, head_file, [run.dir / p for p in scores.path[:6]]),
                               rtol=1e-4, atol=1e-6)
    rows = run.set_scores.query("metric == 'tiny_aesthetic' and scheduler != 'dpmpp_2m_karras'")  # not references
    assert len(rows) == 2 * 2 and (rows.ci_low <= rows.value).all() and (rows.value <= rows.ci_high).all()
    summary = json.loads((run.dir / "summary.json").read_text())
    facts = summary["metrics"]["tiny_aesthetic"]
    assert facts["plugin"] == SOURCE and facts["kind"] == "aesthetic" and facts["inputs"] == "image+prompt"
    assert "head sha256" in facts["backbone"]
    min_steps = summary["min_steps"]
    assert min_steps["tolerances"]["tiny_aesthetic"] == 0.5  # the plugin's declared default
    # the stochastic sampler is judged on the absolute plugin metric (not on SSIM)
    assert set(min_steps["schedulers"]["euler_a"]["evidence"]) == {"tiny_aesthetic"}
    assert set(min_steps["schedulers"]["euler"]["evidence"]) == {"ssim", "tiny_aesthetic"}
    html = (run.dir / "report.html").read_text()
    assert f"absolute quality: aesthetic; plugin {SOURCE}" in html  # its curve, labelled with its kind
    from evalkit.report.charts import plateau_figure
    from evalkit.store.read import ScoredRun

    figure = plateau_figure(ScoredRun.read(run.dir), "tiny_aesthetic")
    assert {"euler 95% CI", "euler_a 95% CI"} <= {t["name"] for t in figure["data"]}  # CI bands
    # a rerun computes nothing: the per-image cache is keyed by the plugin's identity
    assert evalkit.run(config).score.computed["tiny_aesthetic"] == 0
    rules = tmp_path / "rules.toml"
    rules.write_text('[[regression]]\nmetric = "tiny_aesthetic"\nscheduler = "euler"\nmax_drop = 0.01\n')
    assert gate_main(run.dir, run.dir, rules) == 0
    # the CLI in a fresh process: the runs' configs register the plugin before the rules name it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    gate = subprocess.run([sys.executable, "-m", "evalkit", "gate", "--baseline", str(run.dir), "--candidate",
                           str(run.dir), "--rules", str(rules)], capture_output=True, text=True, env=env)
    assert gate.returncode == 0, gate.stderr
    assert "regression tiny_aesthetic euler@2" in gate.stdout


def test_a_plugin_without_its_weights_is_skipped_with_why(tmp_path, weights, prompts):
    (weights[1].parent / HEAD_FILE).unlink()
    run = evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["ssim", SOURCE]})
    why = run.score.skipped[SOURCE]
    assert why.startswith(f"missing weights: {SOURCE}: head checkpoint ") and "not found (fetch: " in why
    assert set(run.scores.metric) == {"ssim"}


@pytest.mark.parametrize("source, message", [
    ("python:plugins.aesthetic", "malformed metric plugin 'python:plugins.aesthetic'"),
    ("python:no_such_module_xyz:make", "can't import module 'no_such_module_xyz'"),
    ("python:plugins.aesthetic:nothing_here", "has no callable 'nothing_here'"),
    ("python:plugins.tiny_plugin:not_a_pipeline", "must have a score(images, others) method and declare name"),
])
def test_bad_plugins_are_one_line_input_errors(tmp_path, prompts, source, message):
    with pytest.raises(EvalkitError, match=None) as info:
        evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": [source]})
    assert message in str(info.value) and "\n" not in str(info.value)
