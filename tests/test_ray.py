"""--backend ray on a local Ray cluster started here (ray.init(num_cpus=2), no external services).

Same answer on any worker count (keys, PNG bytes, scores, FID/KID), resume across worker counts,
and a worker killed mid-batch loses nothing. Checked by keys and file contents, never by timing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray  # a test dependency (pyproject [test]): a missing Ray fails here, never skips
from PIL import Image

import evalkit
from evalkit.errors import EvalkitError
from evalkit.metrics.base import MetricOptions
from evalkit.metrics.fid import InceptionFeatures, frechet_distance_fast, kid_kernel
from evalkit.stats.mmd import mmd2_replicates
from evalkit.stages.workers import load_images
from evalkit.store.folder import RunDir


TESTS_DIR = Path(__file__).resolve().parent
SWEEP = dict(schedulers=["euler", "dpmpp_2m_karras"], steps=[1, 2, 4, 8], seeds=3, reference_steps=30, batch_size=2)
FAULTY = "python:plugins.faulty_mixture:make_pipeline"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU Ray instance whose workers see the fake weights, the test plugins and the fault switch."""
    from fake_weights import write_alexnet, write_inception_fid

    home = tmp_path_factory.mktemp("torch_home")
    write_alexnet(home)
    write_inception_fid(home)
    faults = tmp_path_factory.mktemp("faults")
    env = {"TORCH_HOME": str(home), "EVALKIT_FAULT_DIR": str(faults),
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the driver (this process) and, through ray.init, every worker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield faults
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def inject(faults: Path, at_call: int, action: str) -> None:
    (faults / "calls").unlink(missing_ok=True)
    (faults / "fault.json").write_text(json.dumps({"at_call": at_call, "action": action}))


def table_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "images.parquet")


def assert_whole(out: Path, expected: pd.DataFrame) -> None:
    """One row per planned key, PNG bytes as expected, every file whole, no temp files or journal left."""
    table = table_of(out)
    assert table.key.is_unique and set(table.key) == set(expected.key)
    merged = table.merge(expected[["key", "sha256"]], on="key", suffixes=("", "_expected"))
    assert (merged.sha256 == merged.sha256_expected).all()
    for path in table.path:
        Image.open(out / path).verify()
    assert not list(out.rglob(".tmp-*")) and not (out / "images.journal").exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{k}.png" for k in table.key)


def test_ray_on_one_and_two_workers_renders_and_scores_exactly_like_local(cluster, tmp_path, prompts):
    metrics = ["ssim", "psnr", "lpips", "fid", "kid"]
    base = {**SWEEP, "prompts": prompts, "metrics": metrics}
    local = evalkit.run({**base, "out": str(tmp_path / "local")})
    runs = {n: evalkit.run({**base, "out": str(tmp_path / f"ray{n}"), "backend": "ray", "workers": n})
            for n in (1, 2)}
    total = 2 * 3 * 2 * 4 + 2 * 3 + 2 * 3  # sweep, references, their checks
    assert len(local.images) == total and local.stats.workers == 1
    for n, run in runs.items():
        assert run.stats.workers == n and run.stats.rendered == total
        assert run.images.key.tolist() == local.images.key.tolist()  # same keys, same plan order
        for key, path in zip(run.images.key, run.images.path):  # same PNG bytes per key
            assert (run.dir / path).read_bytes() == (local.dir / f"images/{key}.png").read_bytes()
        assert_whole(run.dir, local.images)
        scores = run.scores.merge(local.scores, on=["key", "metric"], suffixes=("", "_local"))
        assert len(scores) == len(local.scores) == total_scores(local)
        np.testing.assert_allclose(scores.value, scores.value_local, rtol=1e-6)
        sets = run.set_scores.merge(local.set_scores, on=["metric", "scheduler", "steps"], suffixes=("", "_local"))
        fid = sets[sets.metric.isin(["fid", "kid"])]
        assert len(fid) == 2 * 2 * 4
        np.testing.assert_allclose(fid.value, fid.value_local, rtol=1e-6)
        np.testing.assert_allclose(fid[["ci_low", "ci_high"]], fid[["ci_low_local", "ci_high_local"]], rtol=1e-6)
        summary = json.loads((run.dir / "summary.json").read_text())
        assert summary["execution"] == {"backend": "ray", "workers": n}

    # FID/KID from features the two workers extracted = FID/KID of the same images in this one process
    images, sets = runs[2].images, runs[2].set_scores.set_index(["metric", "scheduler", "steps"])
    inception = InceptionFeatures(MetricOptions())
    refs = images[images.role == "reference"].sort_values(["prompt_id", "seed"])
    ref_features = inception.features(load_images(runs[2].dir / p for p in refs.path)).numpy()
    for scheduler, steps in [("euler", 1), ("dpmpp_2m_karras", 8)]:
        column = images.query("scheduler == @scheduler and steps == @steps and role == 'sweep'")
        column = column.sort_values(["prompt_id", "seed"])
        features = inception.features(load_images(runs[2].dir / p for p in column.path)).numpy()
        assert sets.loc[("fid", scheduler, steps), "value"] == pytest.approx(
            frechet_distance_fast(features, ref_features), rel=1e-6)
        assert sets.loc[("kid", scheduler, steps), "value"] == pytest.approx(  # over distinct prompt+seed units
            mmd2_replicates(kid_kernel, features, np.zeros((0, len(features))), paired=ref_features)[0], rel=1e-6)


def total_scores(run) -> int:
    sweep = int((run.images.role == "sweep").sum())
    return 3 * sweep  # ssim, psnr, lpips: one value per sweep image against its reference


@pytest.mark.parametrize("first, second", [(2, 1), (1, 2)])
def test_an_interrupted_run_resumes_on_another_worker_count(cluster, tmp_path, prompts, first, second):
    base = {**SWEEP, "prompts": prompts, "model": FAULTY, "metrics": ["ssim"], "backend": "ray"}
    clean = evalkit.render({**base, "backend": "local", "out": str(tmp_path / "clean")})
    total = len(clean.images)
    out = tmp_path / "run"
    inject(cluster, at_call=40, action="raise")  # a worker fails mid-batch: the run stops
    with pytest.raises(Exception, match="injected fault"):
        evalkit.render({**base, "out": str(out), "workers": first})
    partial = RunDir(out).read_images()
    assert 0 < len(partial) < total and partial.key.is_unique
    resumed = evalkit.render({**base, "out": str(out), "workers": second})
    assert resumed.stats.workers == second
    assert resumed.stats.rendered == total - len(partial)  # only the missing jobs
    assert_whole(out, clean.images)


def test_a_worker_killed_mid_batch_is_restarted_and_loses_nothing(cluster, tmp_path, prompts):
    base = {**SWEEP, "prompts": prompts, "model": FAULTY, "metrics": ["ssim"]}
    clean = evalkit.render({**base, "out": str(tmp_path / "clean")})
    inject(cluster, at_call=30, action="kill")  # SIGKILL of the worker's process inside a pipeline call
    run = evalkit.run({**base, "out": str(tmp_path / "run"), "backend": "ray", "workers": 2})
    assert not (cluster / "fault.json").exists(), "the fault must have fired"
    assert run.stats.rendered == len(clean.images)  # the lost batch was retried on the restarted worker
    assert_whole(run.dir, clean.images)
    assert len(run.scores) == int((run.images.role == "sweep").sum())


def test_ray_errors_are_one_line_input_errors(cluster, tmp_path, prompts):
    with pytest.raises(EvalkitError, match="too few for --gpus-per-worker 1"):
        evalkit.render({**SWEEP, "prompts": prompts, "out": str(tmp_path / "gpu"), "backend": "ray",
                        "gpus_per_worker": 1})
    with pytest.raises(EvalkitError, match=r"--workers 3 needs 3 CPU\(s\) but the Ray cluster has 2"):
        evalkit.render({**SWEEP, "prompts": prompts, "out": str(tmp_path / "many"), "backend": "ray", "workers": 3})
    with pytest.raises(EvalkitError, match="unknown backend 'rey'"):
        evalkit.render({**SWEEP, "prompts": prompts, "backend": "rey"})


def test_ray_renders_a_flow_model_like_local(cluster, tmp_path, prompts):
    """A tiny FLUX-style pipeline on two Ray workers: same keys, and the same pixels per key (workers may run
    other torch thread counts, so decoded PNGs are compared to within one level of 255)."""
    from tiny_models import FLOW_IMAGE_SIZE, save_tiny_flow

    folder = save_tiny_flow(tmp_path / "flux", "flux-dev")
    base = {"model": f"diffusers:{folder}", "prompts": prompts, "size": FLOW_IMAGE_SIZE, "device": "cpu", "seeds": 2,
            "steps": [1, 2, 4], "reference_steps": 6, "batch_size": 2,
            "schedulers": ["flow_euler", "flow_heun", "flow_euler_stochastic"]}
    local = evalkit.render({**base, "out": str(tmp_path / "local")})
    ray_run = evalkit.render({**base, "out": str(tmp_path / "ray"), "backend": "ray", "workers": 2})
    # sweep, references, their checks (+ a tie-break per unit whose reference and check disagree: random weights)
    assert ray_run.stats.workers == 2 and ray_run.stats.rendered == len(local.images) >= 2 * 2 * 3 * 3 + 2 * 2 + 2 * 2
    assert ray_run.images.key.tolist() == local.images.key.tolist()
    assert ray_run.images.nfe.tolist() == local.images.nfe.tolist()
    for key, path in zip(ray_run.images.key, ray_run.images.path):
        ours = np.asarray(Image.open(ray_run.dir / path), dtype=np.int16)
        theirs = np.asarray(Image.open(local.dir / f"images/{key}.png"), dtype=np.int16)
        assert np.abs(ours - theirs).max() <= 1


def test_a_metric_plugin_scores_on_ray_workers_like_locally(cluster, tmp_path, prompts):
    """Workers rebuild the plugin from its python:... string (weights under the shared TORCH_HOME)."""
    from plugins.aesthetic import SOURCE, write_tiny_aesthetic

    from evalkit.metrics import METRICS
    from evalkit.metrics.plugins import plugin_scorer

    write_tiny_aesthetic()
    try:
        base = {**SWEEP, "schedulers": ["euler"], "steps": [2], "prompts": prompts, "metrics": [SOURCE]}
        local = evalkit.run({**base, "out": str(tmp_path / "local")})
        remote = evalkit.run({**base, "out": str(tmp_path / "ray"), "backend": "ray", "workers": 2})
        assert remote.score.computed["tiny_aesthetic"] == len(remote.images[remote.images.role != "check"])  # checks are never scored
        a, b = (r.scores.sort_values("key").reset_index(drop=True) for r in (local, remote))
        assert list(a.key) == list(b.key) and set(a.metric) == {"tiny_aesthetic"}
        np.testing.assert_allclose(a.value, b.value, rtol=1e-5, atol=1e-6)
    finally:
        plugin_scorer.cache_clear()
        METRICS.remove("tiny_aesthetic")
