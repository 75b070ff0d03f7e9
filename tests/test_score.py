"""Score stage: per-image values equal torchmetrics' own functions, cached, aggregated with CIs, skips explained."""
import json
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

import evalkit
from evalkit.metrics import METRICS
from evalkit.metrics.base import IMAGE_REFERENCE, CONVERGENCE, MetricSpec, WeightFile

SWEEP = dict(schedulers=["euler", "euler_a", "dpmpp_2m_karras"], steps=[2, 4, 8], seeds=3, reference_steps=30,
             metrics=["ssim", "psnr"])


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat sitting on a mat\nthree apples on a table\n")
    return str(path)


def sweep(tmp_path, prompts, **overrides):
    return evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), **overrides})


def pixels(run, path):
    return torch.from_numpy(np.array(Image.open(run.dir / path))).permute(2, 0, 1)[None].double() / 255


def test_scores_equal_torchmetrics_functional_on_the_same_pngs(tmp_path, prompts):
    run = sweep(tmp_path, prompts)
    images = run.images
    scores = run.scores
    sweep_rows = images[images.role == "sweep"]
    assert len(scores) == len(sweep_rows) * 2 == 2 * 3 * 3 * 3 * 2
    refs = images[images.role == "reference"].set_index(["prompt_id", "seed"])
    for row in sweep_rows.sample(6, random_state=0).itertuples():
        x, ref = pixels(run, row.path), pixels(run, refs.loc[(row.prompt_id, row.seed), "path"])
        got = scores[scores.key == row.key].set_index("metric").value
        # float64 reference; the stage runs SSIM in float32 (12x faster): measured differences up to 3.4e-5
        assert got["ssim"] == pytest.approx(structural_similarity_index_measure(x, ref, data_range=1.0).item(), abs=1e-4)
        assert got["psnr"] == pytest.approx(min(peak_signal_noise_ratio(x, ref, data_range=1.0).item(), 100), abs=1e-9)


def test_set_scores_are_means_over_units_with_intervals(tmp_path, prompts):
    run = sweep(tmp_path, prompts)
    table = run.set_scores
    assert len(table) == 3 * 3 * 2  # scheduler x steps x metric
    merged = run.scores.merge(run.images, on="key")
    means = merged.groupby(["scheduler", "steps", "metric"]).value.mean()
    for row in table.itertuples():
        assert row.value == pytest.approx(means.loc[(row.scheduler, row.steps, row.metric)])
        assert row.ci_low <= row.value <= row.ci_high and row.n == 2 * 3
    ssim = table[table.metric == "ssim"].set_index(["scheduler", "steps"]).value
    # the exact model: DPM++ 2M Karras is closer to its reference at 8 steps than Euler; Euler a does not converge
    assert ssim.loc[("dpmpp_2m_karras", 8)] > ssim.loc[("euler", 8)] > ssim.loc[("euler_a", 8)]


def test_rerun_scores_nothing_and_new_steps_score_only_new_images(tmp_path, prompts):
    first = sweep(tmp_path, prompts)
    assert first.score.computed == {"ssim": 54, "psnr": 54}
    assert sweep(tmp_path, prompts).score.computed == {"ssim": 0, "psnr": 0}
    more = sweep(tmp_path, prompts, steps=[2, 4, 8, 16])
    assert more.score.computed == {"ssim": 18, "psnr": 18}  # 2 prompts x 3 seeds x 3 schedulers at 16 steps
    assert len(more.scores) == 72 * 2


def test_summary_records_provenance_and_stochastic_schedulers(tmp_path, prompts):
    run = sweep(tmp_path, prompts)
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["stochastic_schedulers"] == ["euler_a"]
    assert summary["metrics"]["ssim"]["kind"] == "convergence"
    assert summary["versions"]["torch"] == metadata.version("torch")
    assert summary["config"]["steps"] == [2, 4, 8] and summary["device"] == "cpu"


def test_a_metric_without_weights_is_skipped_with_the_fetch_command(tmp_path, prompts):
    missing = tmp_path / "nowhere" / "weights.pth"
    spec = MetricSpec(
        name="needs_weights", inputs=IMAGE_REFERENCE, kind=CONVERGENCE, higher_is_better=False, backbone="test",
        preprocessing="none", build=lambda options: pytest.fail("a metric with missing weights must not be built"),
        weights=lambda options: [WeightFile("test backbone", lambda: missing, "curl -o weights.pth https://x")])
    METRICS.add(spec.name, spec)
    try:
        run = sweep(tmp_path, prompts, metrics=["ssim", "needs_weights"])
    finally:
        METRICS.remove(spec.name)
    assert "needs_weights" not in set(run.scores.metric)
    assert str(missing) in run.score.skipped["needs_weights"] and "curl -o weights.pth" in run.score.skipped["needs_weights"]
    summary = json.loads((run.dir / "summary.json").read_text())
    assert "missing weights" in summary["skipped_metrics"]["needs_weights"]


def test_lpips_and_fid_run_through_the_stage_from_cached_weights_and_features(tmp_path, prompts, monkeypatch):
    from fake_weights import write_alexnet, write_inception_fid

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    write_alexnet(tmp_path / "torch")
    write_inception_fid(tmp_path / "torch")
    small = dict(schedulers=["euler"], steps=[2, 8], seeds=2, metrics=["lpips", "fid", "kid"])
    run = sweep(tmp_path, prompts, **small)
    assert run.score.skipped == {}
    assert run.score.computed == {"lpips": 8, "fid": 12, "kid": 0}  # kid reuses fid's cached Inception features
    table = run.set_scores.set_index(["metric", "steps"])
    assert set(table.loc["fid"].n) == {4} and set(table.loc["lpips"].n) == {4}
    assert table.loc[("lpips", 8), "value"] < table.loc[("lpips", 2), "value"]  # closer to the reference
    again = sweep(tmp_path, prompts, **small)
    assert again.score.computed == {"lpips": 0, "fid": 0, "kid": 0}  # no backbone call on a rerun
    assert again.set_scores.equals(run.set_scores)
