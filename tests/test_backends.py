"""The diffusers: and python: backends on a tiny Stable Diffusion pipeline built from configs."""
import numpy as np
import pandas as pd
from PIL import Image
import pytest

import evalkit
from evalkit.errors import EvalkitError
from evalkit.models import LoadOptions, load_model

SWEEP = dict(schedulers=["euler", "heun", "ddim"], steps=[1, 2, 3], seeds=2, reference_steps=8, batch_size=4)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat on a mat\na red car\n")
    return str(path)


def test_saved_pipeline_renders_the_full_sweep_through_the_diffusers_path(tmp_path, tiny_sd_dir, prompts):
    run = evalkit.run({**SWEEP, "model": f"diffusers:{tiny_sd_dir}", "prompts": prompts, "out": str(tmp_path / "r")})
    table = pd.read_parquet(run.dir / "images.parquet")
    # prompts x seeds x schedulers x steps + references + their checks (unipc_karras at the reference's steps)
    assert len(table) == 2 * 2 * 3 * 3 + 2 * 2 + 2 * 2
    assert set(table[table.role == "check"].scheduler) == {"unipc_karras"}
    nfe = run.images.groupby(["scheduler", "steps"]).nfe.unique()
    assert {tuple(v) for v in nfe.loc["euler"]} == {(1,), (2,), (3,)}
    assert [tuple(v) for v in nfe.loc["heun"]] == [(1,), (3,), (5,)]  # 2N - 1
    assert (table["width"] == 32).all() and (table["flags"] == "").all()
    again = evalkit.run({**SWEEP, "model": str(tiny_sd_dir), "prompts": prompts, "out": str(tmp_path / "r")})
    assert again.stats.rendered == 0  # a bare folder is the same model as diffusers:folder


def test_batch_size_does_not_change_diffusers_images(tmp_path, tiny_sd_dir, prompts):
    common = {**SWEEP, "model": str(tiny_sd_dir), "prompts": prompts, "schedulers": ["euler"], "steps": [2]}
    one = evalkit.run({**common, "batch_size": 1, "out": str(tmp_path / "one")}).images
    four = evalkit.run({**common, "batch_size": 4, "out": str(tmp_path / "four")}).images
    # diffusers' batched UNet/VAE calls match single calls only to ~1e-6 in float (FIELD-NOTES), so a
    # pixel may round the other way: same images means every pixel within 1/255, and almost all equal
    assert list(one.key) == list(four.key)
    for a, b in zip(one["path"], four["path"]):
        x = np.asarray(Image.open(tmp_path / "one" / a), dtype=int)
        y = np.asarray(Image.open(tmp_path / "four" / b), dtype=int)
        assert np.abs(x - y).max() <= 1 and (x != y).mean() < 0.01


def test_guidance_is_recorded_as_calls_not_doubled_batches(tmp_path, tiny_sd_dir, prompts):
    run = evalkit.run({**SWEEP, "model": str(tiny_sd_dir), "prompts": prompts, "schedulers": ["euler"],
                       "steps": [3], "guidance": 7.5, "out": str(tmp_path / "g")})
    assert set(run.images.query("role == 'sweep'").nfe) == {3}


def test_scheduler_swap_keeps_the_model_and_its_schedule(tiny_sd_dir):
    model = load_model(f"diffusers:{tiny_sd_dir}", LoadOptions())
    pipe = model.pipe
    unet = pipe.unet
    assert model.scheduler_config["timestep_spacing"] == "trailing"
    run_keys = {}
    for name in ("euler", "dpmpp_2m_karras"):
        from evalkit.sweep.schedulers import build_scheduler, get_scheduler
        pipe.scheduler = build_scheduler(get_scheduler(name), model.scheduler_config)
        run_keys[name] = type(pipe.scheduler).__name__
        assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert model.pipe.unet is unet  # never reloaded
    assert run_keys == {"euler": "EulerDiscreteScheduler", "dpmpp_2m_karras": "DPMSolverMultistepScheduler"}


def test_python_plugin_renders(tmp_path, prompts):
    run = evalkit.run({**SWEEP, "model": "python:plugins.tiny_plugin:make_pipeline", "prompts": prompts,
                       "schedulers": ["euler", "unipc"], "steps": [2], "out": str(tmp_path / "p")})
    assert len(run.images) == 2 * 2 * 2 + 2 * 2 + 2 * 2  # sweep + references + their checks
    assert run.images.query("role == 'sweep'").nfe.tolist() == [2] * 8


@pytest.mark.parametrize("spec, fragment", [
    ("python:plugins.tiny_plugin", "malformed model spec 'python:plugins.tiny_plugin': use python:MODULE:FACTORY"),
    ("python:no_such_module_xyz:f", "can't import module 'no_such_module_xyz'"),
    ("python:plugins.tiny_plugin:nope", "module 'plugins.tiny_plugin' has no callable 'nope'"),
    ("python:plugins.tiny_plugin:not_a_pipeline", "returned object, not a diffusers-style pipeline"),
    ("python:plugins.tiny_plugin:broken", "raised RuntimeError while building the pipeline (boom, at tiny_plugin.py:"),
    ("./no/such/folder", "model folder ./no/such/folder not found"),
    ("diffusers:nobody/no-such-model", "model 'nobody/no-such-model' is not in the Hugging Face cache"),
    ("builtin:nope", "unknown built-in model 'nope'"),
])
def test_bad_model_specs(spec, fragment):
    with pytest.raises(EvalkitError) as info:
        load_model(spec, LoadOptions())
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_incompatible_scheduler_is_refused_before_anything_renders(tmp_path, tiny_sd_dir, prompts):
    out = tmp_path / "x"
    with pytest.raises(EvalkitError, match="scheduler 'flow_euler' \\(flow\\) can't sample"):
        evalkit.run({**SWEEP, "model": str(tiny_sd_dir), "prompts": prompts, "schedulers": ["euler", "flow_euler"],
                     "out": str(out)})
    assert not (out / "images.parquet").exists()
