"""Render stage on builtin:mixture: exact row counts, reproducible pixels, NFE, resume and locking."""
import hashlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import evalkit
from evalkit.errors import EvalkitError
from evalkit.models.base import image_pixels
from evalkit.stages.render import _flags
from evalkit.store.folder import RunDir
from evalkit.store.tables import IMAGE_COLUMNS

SMALL = dict(schedulers=["euler", "heun", "dpmpp_2m"], steps=[1, 2, 4], seeds=2, reference_steps=20)



def to_uint8(image):
    """What the renderer saves of one image: its uint8 pixels and flags."""
    pixels, non_finite = image_pixels(image)
    return pixels, _flags(pixels, non_finite)

def sweep(tmp_path, prompts, name="run", **overrides):
    return evalkit.run({**SMALL, "prompts": prompts, "out": str(tmp_path / name), **overrides})


def test_sweep_writes_one_row_and_one_png_per_job(tmp_path, prompts):
    run = sweep(tmp_path, prompts)
    table = pd.read_parquet(run.dir / "images.parquet")
    # 2 prompts x 2 seeds x 3 schedulers x 3 step counts + 2 x 2 references (one common reference scheduler)
    # + 2 x 2 checks that certify them (the family's check solver, unipc_karras, at the reference's step count)
    assert len(table) == 2 * 2 * 3 * 3 + 2 * 2 + 2 * 2 == 44
    assert list(table.columns) == IMAGE_COLUMNS
    assert table["key"].is_unique
    refs, checks = table[table.role == "reference"], table[table.role == "check"]
    assert set(refs.scheduler) == {"dpmpp_2m_karras"} and set(refs.steps) == {20}
    assert set(checks.scheduler) == {"unipc_karras"} and set(checks.steps) == {20}
    for row in table.itertuples():
        data = (run.dir / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert (row.width, row.height) == (64, 64)
    assert (run.dir / "config.toml").is_file()
    assert run.stats.rendered == 44 and len(run.images) == 44


def test_nfe_is_the_schedulers_known_cost(tmp_path, prompts):
    table = sweep(tmp_path, prompts).images.set_index(["scheduler", "steps"])["nfe"]
    for steps in (1, 2, 4):
        assert set(table.loc[("euler", steps)]) == {steps}
        assert set(table.loc[("dpmpp_2m", steps)]) == {steps}
        assert set(table.loc[("heun", steps)]) == {2 * steps - 1}  # the last Heun step is plain Euler
    assert set(table.loc[("dpmpp_2m_karras", 20)]) == {20}


def test_guidance_doubles_the_batch_not_the_calls(tmp_path, prompts):
    run = sweep(tmp_path, prompts, schedulers=["euler"], steps=[3], guidance=4.0)
    assert set(run.images.query("role == 'sweep'").nfe) == {3}


def test_same_seed_gives_byte_identical_pngs_and_batch_size_changes_nothing(tmp_path, prompts):
    first = sweep(tmp_path, prompts, name="a", batch_size=4).images
    second = sweep(tmp_path, prompts, name="b", batch_size=4).images
    single = sweep(tmp_path, prompts, name="c", batch_size=1).images
    assert list(first.sha256) == list(second.sha256) == list(single.sha256)
    assert list(first.key) == list(single.key)  # batch size is not part of what an image is


def test_different_seeds_give_different_images(tmp_path, prompts):
    images = sweep(tmp_path, prompts, schedulers=["euler"], steps=[4]).images
    sweep_rows = images[images.role == "sweep"]
    assert sweep_rows.sha256.nunique() == len(sweep_rows)


def test_rerun_renders_nothing_and_new_steps_or_seeds_render_only_new_jobs(tmp_path, prompts):
    first = sweep(tmp_path, prompts)
    before = (first.dir / "images.parquet").read_bytes()
    again = sweep(tmp_path, prompts)
    assert again.stats.rendered == 0
    assert (first.dir / "images.parquet").read_bytes() == before
    more_steps = sweep(tmp_path, prompts, steps=[1, 2, 4, 8])
    assert more_steps.stats.rendered == 2 * 2 * 3  # only steps=8: prompts x seeds x schedulers
    more_seeds = sweep(tmp_path, prompts, steps=[1, 2, 4, 8], seeds=3)
    assert more_seeds.stats.rendered == 2 * 1 * 3 * 4 + 2 + 2  # seed 2 everywhere, plus its 2 references and checks
    assert len(more_seeds.images) == 2 * 3 * 3 * 4 + 2 * 3 + 2 * 3


def test_a_table_written_before_prompt_labels_reads_and_takes_the_plans_labels_without_rendering(tmp_path, prompts):
    """A prompt's id, category and challenge are not in its images' keys: an images.parquet from before they existed
    (no category/challenge columns, other ids) is read, and a rerun rewrites the labels, never the images."""
    first = sweep(tmp_path, prompts)
    table = pd.read_parquet(first.dir / "images.parquet")
    expected = dict(zip(table.key, table.prompt_id))
    old = table.drop(columns=["category", "challenge"]).assign(prompt_id="old-" + table.prompt_id)
    old.to_parquet(first.dir / "images.parquet")
    again = sweep(tmp_path, prompts)
    assert again.stats.rendered == 0
    relabelled = pd.read_parquet(first.dir / "images.parquet")
    assert list(relabelled.columns) == IMAGE_COLUMNS
    assert dict(zip(relabelled.key, relabelled.prompt_id)) == expected
    assert set(relabelled.category) == {""} and set(relabelled.challenge) == {""}


def test_a_second_concurrent_run_is_refused(tmp_path, prompts):
    folder = RunDir(tmp_path / "run")
    folder.prepare()
    with folder.lock():
        with pytest.raises(EvalkitError, match="is in use by another evalkit process"):
            sweep(tmp_path, prompts)
    assert sweep(tmp_path, prompts).stats.rendered == 44  # released: the next run proceeds


def test_a_killed_run_resumes_to_the_same_complete_result(tmp_path, prompts):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "evalkit", "run", "--prompts", prompts, "--out", str(out), "--seeds", "3",
            "--schedulers", "euler,heun,ddim,dpmpp_2m", "--steps", "10,20,40,60", "--batch-size", "2",
            "--reference-steps", "100", "--no-progress"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "images.journal").exists():  # the first batch is saved
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "images.parquet").exists()  # the table is folded at the end: the journal holds the rows
    partial = len(RunDir(out).read_images())
    total = 2 * 3 * 4 * 4 + 2 * 3 + 2 * 3  # sweep, references, their checks
    assert 0 < partial < total, "the kill should land mid-run"

    finished = subprocess.run(args, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"rendered {total - partial} new image(s)" in finished.stdout
    table = pd.read_parquet(out / "images.parquet")
    assert len(table) == total and table.key.is_unique
    clean = evalkit.run(str(out / "config.toml"), out=str(tmp_path / "clean"))
    merged = table.merge(clean.images, on="key", suffixes=("", "_clean"))
    assert len(merged) == total and (merged.sha256 == merged.sha256_clean).all()
    for path in table.path:
        Image.open(out / path).verify()  # every PNG is whole
    assert not [p for p in out.rglob(".tmp-*")]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{k}.png" for k in table.key)


def test_nan_and_blank_images_are_flagged():
    nan = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    nan[0, 0, 0] = np.nan
    assert to_uint8(nan)[1] == ["nan"]
    assert to_uint8(np.full((8, 8, 3), np.nan, dtype=np.float32))[1] == ["nan", "blank"]
    gray = np.full((8, 8, 3), 0.5, dtype=np.float32)
    assert to_uint8(gray)[1] == ["blank"]
    picture = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    pixels, flags = to_uint8(picture)
    assert flags == [] and pixels.dtype == np.uint8
    assert to_uint8(Image.fromarray(pixels))[1] == []


def test_a_cached_scheduler_renders_the_same_bytes_as_a_freshly_built_one():
    """The renderer builds each sampler once and copies it per batch: for every sampler the builtin model
    accepts, the images equal those of a freshly built scheduler, whatever ran before and whatever the
    global RNG holds (DPM++ SDE seeded its Brownian noise from it: its pixels changed from call to call)."""
    from evalkit.models import load_model
    from evalkit.sweep.plan import RenderJob, RenderSettings
    from evalkit.stages.render import CallCounter, SamplerCache, _call_pipeline
    from evalkit.sweep.schedulers import SCHEDULERS, build_scheduler, check_compatible

    model = load_model("builtin:mixture")
    settings = RenderSettings(guidance=None, size=None, negative_prompt=None, dtype="float32")
    counter, cache = CallCounter(model.denoiser), SamplerCache(model)
    checked = []
    for spec in SCHEDULERS:
        try:
            check_compatible(spec, model.scheduler_config, model.spec, [3, 5])
        except EvalkitError:
            continue  # another noise-schedule family (flow matching): the builtin model can't use it
        batch = [RenderJob(f"k{seed}", "p0", "a cat sitting on a mat", seed, spec.name, 5, "sweep") for seed in (0, 1)]
        _call_pipeline(model, [RenderJob("w", "p0", "three apples", 7, spec.name, 3, "sweep")], settings, counter,
                       cache.get(spec.name))  # leave state behind from another step count and batch size
        reused, _, _ = _call_pipeline(model, batch, settings, counter, cache.get(spec.name))
        torch.manual_seed(len(checked))  # the global RNG must not matter either
        fresh, _, _ = _call_pipeline(model, batch, settings, counter,
                                     build_scheduler(spec, model.scheduler_config))
        for a, b in zip(reused, fresh):
            assert to_uint8(a)[0].tobytes() == to_uint8(b)[0].tobytes(), spec.name
        checked.append(spec.name)
    assert len(checked) >= 10 and {"euler", "euler_a", "heun", "dpmpp_2m", "unipc", "ddim"} <= set(checked)
