"""Set metrics (FID/KID) in the stage: exact fast FID, targets (references, a folder, .npz), intervals,
no backbone call on a rerun; configurable backbones (CLIP through the stage on a tiny local model)."""
import json
import shutil

import numpy as np
import pytest
from reference_metrics import scipy_fid, torchmetrics_fid, torchmetrics_kid

import evalkit
from evalkit.errors import EvalkitError
from evalkit.metrics import METRICS
from evalkit.metrics.fid import InceptionFeatures, frechet_distance_fast, frechet_distance_to_stats, mmd2_unbiased
from evalkit.metrics.lpips import LPIPSScorer
from evalkit.stages.features import FeatureStore
from evalkit.stages.workers import load_images
from evalkit.store.folder import RunDir

SWEEP = dict(schedulers=["euler", "dpmpp_2m_karras"], steps=[2, 8], seeds=3, reference_steps=30)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat sitting on a mat\nthree apples on a table\n")
    return str(path)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    from fake_weights import write_alexnet, write_inception_fid

    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    write_alexnet(home)
    write_inception_fid(home)
    return home


def test_the_fid_and_kid_the_stage_runs_equal_torchmetrics_and_scipy():
    """The specs' compare functions (what score.py calls) against independent computations."""
    assert METRICS.get("fid").compare is frechet_distance_fast and METRICS.get("kid").compare is mmd2_unbiased
    assert METRICS.get("fid").compare_stats is frechet_distance_to_stats
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 256)), rng.normal(size=(30, 256)) * 1.2 + 0.3
    fast = frechet_distance_fast(a, b)
    assert fast == pytest.approx(scipy_fid(a, b), rel=1e-4)
    assert fast == pytest.approx(torchmetrics_fid(a, b), rel=1e-4)
    mu, sigma = b.mean(axis=0), np.cov(b, rowvar=False)
    assert frechet_distance_to_stats(a, mu, sigma) == pytest.approx(torchmetrics_fid(a, b), rel=1e-4)
    assert frechet_distance_to_stats(a, mu, sigma) == pytest.approx(fast, rel=1e-9)
    assert abs(frechet_distance_fast(a, a)) < 1e-9 * fast
    # whole-set unbiased MMD^2 is torchmetrics' KID when its subsets are the whole (equal-size) sets
    assert mmd2_unbiased(a, b[:20]) == pytest.approx(torchmetrics_kid(a, b[:20]), rel=1e-9)


def test_fid_and_kid_per_column_with_paired_intervals(tmp_path, prompts, torch_home):
    run = evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["fid", "kid"]})
    table = run.set_scores.set_index(["metric", "scheduler", "steps"])
    assert len(table) == 2 * 2 * 2 and set(table.n) == {6}
    fid = table.loc["fid"]
    assert (fid["flags"] == "small-n").all() and (table.loc["kid"]["flags"] == "").all()  # KID is unbiased
    assert np.isfinite(table[["value", "ci_low", "ci_high"]].to_numpy()).all()
    assert (table.ci_low <= table.ci_high).all()
    # the value is the exact FID of the column's cached features against the references' features
    store = FeatureStore(next(RunDir(run.dir).features_root.iterdir()))
    images = run.images
    column = images.query("scheduler == 'euler' and steps == 8 and role == 'sweep'").sort_values(["prompt_id", "seed"])
    refs = images.query("role == 'reference'").sort_values(["prompt_id", "seed"])
    assert fid.loc[("euler", 8), "value"] == pytest.approx(scipy_fid(store.load(column.sha256), store.load(refs.sha256)),
                                                           rel=1e-4)
    assert fid.loc[("dpmpp_2m_karras", 8), "value"] < fid.loc[("euler", 2), "value"]
    summary = json.loads((run.dir / "summary.json").read_text())
    assert any(w.startswith("fid: sets of 6-6 images, below the 2048") for w in summary["warnings"])


def test_fid_against_a_folder_or_npz_of_the_references_equals_fid_against_the_references(tmp_path, prompts, torch_home):
    base = evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["fid"]})
    expected = base.set_scores.set_index(["scheduler", "steps"]).value  # read now: later runs rewrite the folder
    folder = tmp_path / "real"
    folder.mkdir()
    refs = base.images.query("role == 'reference'")
    for i, path in enumerate(refs.path):
        shutil.copy(base.dir / path, folder / f"real-{i}.png")
    vs_folder = evalkit.run(base.config, fid_reference=str(folder), metrics=["fid", "kid"])
    assert vs_folder.score.computed["fid"] == 0  # the folder's images are the references: features are cached
    got = vs_folder.set_scores.query("metric == 'fid'").set_index(["scheduler", "steps"]).value
    assert np.allclose(got.loc[expected.index], expected, rtol=1e-9)

    store = FeatureStore(next(RunDir(base.dir).features_root.iterdir()))
    features = store.load(refs.sha256)
    mu, sigma = features.mean(axis=0), np.cov(features, rowvar=False)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    vs_stats = evalkit.run(base.config, fid_reference=str(tmp_path / "stats.npz"), metrics=["fid"])
    got = vs_stats.set_scores.query("metric == 'fid'").set_index(["scheduler", "steps"]).value
    assert np.allclose(got.loc[expected.index], expected, rtol=1e-6)
    # KID compares image sets: named explicitly, statistics are refused before anything renders; with every
    # metric selected (the default) it is skipped with the reason
    with pytest.raises(EvalkitError, match="kid compares image sets, but fid_reference .* holds statistics"):
        evalkit.run(base.config, fid_reference=str(tmp_path / "stats.npz"), metrics=["fid", "kid"])
    every = evalkit.score(base.config, fid_reference=str(tmp_path / "stats.npz"), metrics=[])
    assert "kid needs images, not statistics" in every.score.skipped["kid"] and "fid" in every.score.set_scores


def test_a_rerun_calls_no_backbone(tmp_path, prompts, torch_home, monkeypatch):
    config = {**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["lpips", "fid", "kid", "ssim"]}
    first = evalkit.run(config)
    assert first.score.computed == {"lpips": 24, "fid": 30, "kid": 0, "ssim": 24}

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was called on a rerun")

    monkeypatch.setattr(InceptionFeatures, "features", refuse)
    monkeypatch.setattr(LPIPSScorer, "score", refuse)
    again = evalkit.run(config)
    assert again.score.computed == {"lpips": 0, "fid": 0, "kid": 0, "ssim": 0}
    assert again.set_scores.equals(first.set_scores)


def test_clip_score_through_the_stage_with_a_configured_local_backbone(tmp_path, prompts):
    from fake_clip import backbone_string, register_tiny_clip, save_tiny_clip

    from evalkit.metrics.base import MetricOptions
    from evalkit.metrics.clip import build

    register_tiny_clip()
    backbone = backbone_string(save_tiny_clip(tmp_path / "clip"))
    long_prompt = "a cat " + " ".join(["sitting on a very long striped mat"] * 20)
    with open(prompts, "a") as handle:
        handle.write(long_prompt + "\n")
    config = {**SWEEP, "prompts": prompts, "out": str(tmp_path / "run"), "metrics": ["clip_score"],
              "backbones": {"clip_score": backbone}}
    run = evalkit.run(config)
    assert run.score.warnings[0].startswith("clip_score: 1 prompt(s) longer than the text encoder's context")
    assert evalkit.run(config).score.warnings[0] == run.score.warnings[0]  # still said on a cached rerun
    scores = run.scores.merge(run.images, on="key")
    # sweep and references (check images only certify references: never scored)
    assert len(scores) == len(run.images[run.images.role != "check"]) == 3 * 3 * 2 * 2 + 3 * 3
    direct = build(MetricOptions(backbone=backbone)).score(
        load_images(run.dir / p for p in scores.path[:5]), list(scores.prompt[:5]))
    assert np.allclose(scores.value[:5], direct.numpy(), atol=1e-5)
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["metrics"]["clip_score"]["backbone"] == backbone


def test_fid_from_summed_moments_of_two_shares_equals_fid_of_all_features_in_one_process():
    """What workers or target chunks contribute to FID is sums: merged, they give the one-process FID
    exactly, where the average of the two shares' FIDs does not."""
    from evalkit.metrics.fid import FeatureMoments, stats_sqrt

    rng = np.random.default_rng(3)
    target, sweep = rng.normal(size=(300, 64)) * 1.3 + 0.2, rng.normal(size=(40, 64))
    merged = FeatureMoments.of(target[:170]) + FeatureMoments.of(target[170:])
    mu, sigma = merged.mean_cov()
    assert merged.n == 300
    np.testing.assert_allclose(mu, target.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(target, rowvar=False), rtol=1e-9, atol=1e-12)
    one_process = frechet_distance_fast(sweep, target)
    from_sums = frechet_distance_to_stats(sweep, mu, sigma, stats_sqrt(sigma))
    assert from_sums == pytest.approx(one_process, rel=1e-6)
    assert from_sums == pytest.approx(torchmetrics_fid(sweep, target), rel=1e-4)
    averaged = (frechet_distance_fast(sweep, target[:170]) + frechet_distance_fast(sweep, target[170:])) / 2
    assert abs(averaged - one_process) > 1e-3 * one_process


def test_a_sweep_with_one_image_per_column_skips_fid_and_kid_with_why(tmp_path, torch_home):
    prompts = tmp_path / "one.txt"
    prompts.write_text("a cat sitting on a mat\n")
    run = evalkit.run({**SWEEP, "seeds": 1, "prompts": str(prompts), "out": str(tmp_path / "run"),
                       "metrics": ["ssim", "fid", "kid"]})
    for name in ("fid", "kid"):
        assert run.score.skipped[name] == (f"{name} needs at least 2 images per (scheduler, steps) column, this sweep "
                                           "has 1 (prompts x seeds): add seeds or prompts")
    assert run.score.computed == {"ssim": 4}
    assert (run.dir / "report.html").is_file()
