"""FLUX- and SD3-style pipelines (tiny, random weights, built offline): every flow solver on the model's own
shifted schedule, guidance as each pipeline takes it, reproducible pixels, and a full run from `--model` alone."""
from __future__ import annotations

import functools
import json
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

import evalkit
from evalkit.config import DEFAULT_STEPS
from evalkit.errors import EvalkitError
from evalkit.models import LoadOptions, load_model
from evalkit.sweep.plan import RenderSettings
from evalkit.stages.render import Renderer
from evalkit.models import scheduler_config_of as config_of
from evalkit.sweep.schedulers import FAMILY_DEFAULTS, SCHEDULERS, build_scheduler, get_scheduler

DEFAULTS = {family: d.schedulers for family, d in FAMILY_DEFAULTS.items()}
REFERENCE = {family: d.reference for family, d in FAMILY_DEFAULTS.items()}
from tiny_models import FLOW_IMAGE_SIZE, save_tiny_flow

FLOW = [s.name for s in SCHEDULERS if s.family == "flow"]
RESPACED = {"flow_euler_karras", "flow_euler_exponential", "flow_dpmpp_2m_karras"}  # by design another spacing


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow-models")
    return {kind: save_tiny_flow(root / kind, kind) for kind in ("flux-dev", "flux-schnell", "sd3")}


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cat\ntwo blue apples\n")
    return str(path)


def sweep(folder, prompts, out, **overrides):
    return {"model": f"diffusers:{folder}", "prompts": prompts, "out": str(out), "size": FLOW_IMAGE_SIZE,
            "device": "cpu", "seeds": 1, "steps": [1, 2, 3], "reference_steps": 8, **overrides}


class _Scheduled(Exception):
    """Raised right after the pipeline's own set_timesteps call: the schedule without any denoising."""


def stepped_sigmas(pipe, scheduler, steps: int, size: int) -> torch.Tensor:
    """The sigmas `scheduler` steps through when `pipe` renders `steps` steps at size x size (each once)."""
    own = scheduler.set_timesteps

    @functools.wraps(own)  # keeps the signature, which retrieve_timesteps inspects for `sigmas`
    def capture(*args, **kwargs):
        own(*args, **kwargs)
        raise _Scheduled(torch.unique_consecutive(scheduler.sigmas))  # Heun visits each sigma twice

    scheduler.set_timesteps = capture
    pipe.scheduler = scheduler
    with pytest.raises(_Scheduled) as caught:
        pipe(prompt="a cat", num_inference_steps=steps, height=size, width=size, guidance_scale=1.0,
             output_type="latent")
    return caught.value.args[0]


@pytest.mark.parametrize("kind, size", [("flux-dev", 512), ("flux-dev", 1024), ("sd3", 512)])
def test_every_flow_solver_steps_through_the_shipped_shifted_schedule(folders, kind, size):
    """In the model's own pipeline call (FLUX: mu from the latent sequence length; SD3: static shift), at every
    default swept count and the reference count, each solver's sigmas are the shipped scheduler's (to 1e-6), or,
    for Karras/exponential spacing, span the same shifted range."""
    pipe = DiffusionPipeline.from_pretrained(folders[kind])
    shipped = config_of(pipe.scheduler)
    worst = {}
    for steps in (*DEFAULT_STEPS, 200):
        expected = stepped_sigmas(pipe, type(pipe.scheduler).from_config(shipped), steps, size)
        assert len(expected) == steps + 1 and expected[-1] == 0
        for name in FLOW:
            got = stepped_sigmas(pipe, build_scheduler(get_scheduler(name), shipped), steps, size)
            assert got.shape == expected.shape, (name, steps)
            if name in RESPACED:
                ends = [0, -2] if steps > 1 else [0]
                torch.testing.assert_close(got[ends], expected[ends], atol=1e-6, rtol=0)
                assert (got.diff() < 0).all(), (name, steps)
            else:
                worst[name] = max(worst.get(name, 0.0), (got - expected).abs().max().item())
    assert max(worst.values()) <= 1e-6, worst
    # and `step` really walks that layout: the sigma at each call over a whole 4-step render (at 32x32: the
    # walk doesn't depend on the size, the denoiser's cost does)
    for name in FLOW:
        scheduler, seen = build_scheduler(get_scheduler(name), shipped), []
        own_step = scheduler.step

        def step(*args, _own=own_step, _s=scheduler, **kwargs):
            seen.append(float(_s.sigmas[_s.step_index if _s.step_index is not None else 0]))
            return _own(*args, **kwargs)

        scheduler.step = step
        layout = stepped_sigmas(pipe, build_scheduler(get_scheduler(name), shipped), 4, FLOW_IMAGE_SIZE)
        pipe.scheduler = scheduler
        pipe(prompt="a cat", num_inference_steps=4, height=FLOW_IMAGE_SIZE, width=FLOW_IMAGE_SIZE, output_type="latent")
        assert torch.unique_consecutive(torch.tensor(seen)).tolist() == pytest.approx(layout[:-1].tolist(), abs=1e-7), name
    if kind == "flux-dev":  # the shift really is FLUX's: mu from (size/16)^2 packed tokens, exp(mu) on the odds
        mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * ((size // 16) ** 2 - 256)
        sigmas = np.linspace(1, 1 / 4, 4)
        shifted = np.exp(mu) / (np.exp(mu) + (1 / sigmas - 1))
        got = stepped_sigmas(pipe, build_scheduler(get_scheduler("flow_heun"), shipped), 4, size)
        np.testing.assert_allclose(got[:-1].numpy(), shifted, atol=1e-6)


@pytest.mark.parametrize("kind", ["flux-dev", "sd3"])
def test_every_flow_solver_renders_every_count_with_the_right_nfe(folders, prompts, tmp_path, kind):
    run = evalkit.render(sweep(folders[kind], prompts, tmp_path / "run", schedulers=FLOW, steps=[1, 2, 3, 4]))
    images = run.images[run.images.role != "check"]  # checks: tests/test_certify.py
    assert len(images) == 2 * len(FLOW) * 4 + 2  # 2 prompts x 1 seed x solvers x counts + references
    assert set(images["flags"]) == {""}  # no NaN, no blank image
    nfe = images[images.role == "sweep"].groupby(["scheduler", "steps"]).nfe.unique()
    for (scheduler, steps), values in nfe.items():
        assert list(values) == [2 * steps - 1 if scheduler == "flow_heun" else steps], (scheduler, steps)
    assert set(images[images.role == "reference"].scheduler) == {REFERENCE["flow"]}


def _pixels(run) -> dict[str, np.ndarray]:
    return {row.key: np.asarray(Image.open(run.dir / row.path), dtype=np.int16) for row in run.images.itertuples()}


def test_same_seed_same_images_batch_size_changes_nothing_and_rerun_renders_nothing(folders, prompts, tmp_path):
    """Includes both stochastic flow samplers: their step noise comes from one generator per image.
    Batched and single calls agree to ~1e-6 before quantisation, so decoded PNGs are compared to within
    one level of 255 (and nearly all pixels are identical)."""
    config = sweep(folders["flux-dev"], prompts, tmp_path / "a", seeds=2, batch_size=4, steps=[1, 3],
                   schedulers=["flow_euler", "flow_heun", "flow_euler_stochastic", "flow_lcm"])
    first = evalkit.render(config)
    again = evalkit.render({**config, "out": str(tmp_path / "b")})
    single = evalkit.render({**config, "out": str(tmp_path / "c"), "batch_size": 1})
    assert list(first.images.sha256) == list(again.images.sha256)
    a, c = _pixels(first), _pixels(single)
    assert a.keys() == c.keys()
    diffs = np.concatenate([np.abs(a[k] - c[k]).ravel() for k in a])
    assert diffs.max() <= 1 and (diffs == 0).mean() > 0.99
    stochastic = first.images[first.images.scheduler == "flow_euler_stochastic"]
    assert stochastic.sha256.nunique() == len(stochastic)  # seeds differ, steps differ: no image repeats
    rerun = evalkit.render(config)
    assert rerun.stats.rendered == 0 and len(rerun.images) == len(first.images)


def _batch_sizes(folder, guidance: float, steps: int = 3) -> tuple[list[int], np.ndarray, int]:
    """The denoiser's batch size at each call, the images and the NFE when the renderer draws 2 prompts."""
    model = load_model(f"diffusers:{folder}", LoadOptions())
    renderer = Renderer(model, RenderSettings(guidance, FLOW_IMAGE_SIZE, None, "float32"), encode=False)
    sizes = []
    handle = model.denoiser.register_forward_pre_hook(lambda m, args, kwargs: sizes.append(kwargs["hidden_states"].shape[0]),
                                                      with_kwargs=True)
    from evalkit.sweep.plan import RenderJob

    jobs = [RenderJob(f"k{i}", f"p{i}", text, i, "flow_euler", steps, "sweep") for i, text in enumerate(["a cat", "a dog"])]
    rendered, _ = renderer.render(jobs)
    handle.remove()
    return sizes, np.stack([r.image for r in rendered]), rendered[0].nfe


def test_flux_dev_embeds_guidance_in_one_call_per_step(folders):
    sizes, low, nfe = _batch_sizes(folders["flux-dev"], 1.0)
    _, high, _ = _batch_sizes(folders["flux-dev"], 3.5)
    assert sizes == [2, 2, 2] and nfe == 3  # no CFG doubling
    assert (low != high).any()  # guidance reaches the transformer


def test_flux_schnell_ignores_guidance(folders):
    sizes, zero, nfe = _batch_sizes(folders["flux-schnell"], 0.0)
    _, high, _ = _batch_sizes(folders["flux-schnell"], 3.5)
    assert sizes == [2, 2, 2] and nfe == 3
    assert (zero == high).all()


def test_sd3_guidance_is_true_cfg_both_halves_in_one_call(folders):
    sizes, plain, nfe = _batch_sizes(folders["sd3"], 1.0)
    cfg_sizes, guided, cfg_nfe = _batch_sizes(folders["sd3"], 5.0)
    assert sizes == [2, 2, 2] and nfe == 3  # guidance 1: no unconditional half
    assert cfg_sizes == [4, 4, 4] and cfg_nfe == 3  # both halves batched: one call per step
    assert (plain != guided).any()


def test_native_is_the_shipped_scheduler_recorded_in_the_key(folders, prompts, tmp_path):
    run = evalkit.render(sweep(folders["sd3"], prompts, tmp_path / "n", schedulers=["native", "flow_euler"],
                               reference_scheduler="same"))
    images = run.images[run.images.role == "sweep"]
    native, euler = images[images.scheduler == "native"], images[images.scheduler == "flow_euler"]
    assert list(native.sha256) == list(euler.sha256)  # SD3 ships plain FlowMatchEuler: same pixels...
    assert set(native.key).isdisjoint(euler.key)  # ...under another name and key
    model = load_model(f"diffusers:{folders['sd3']}", LoadOptions())
    from evalkit.sweep.plan import _scheduler_config

    recorded = _scheduler_config("native", model)
    assert recorded["_class_name"] == "FlowMatchEulerDiscreteScheduler" and recorded["shift"] == 3.0
    assert all(recorded[k] == v for k, v in model.scheduler_config.items() if not k.startswith("_"))


def test_a_ddpm_scheduler_for_a_flow_model_is_one_line_exit_2(folders, prompts, tmp_path, evalkit_cli):
    code, _, err = evalkit_cli(["run", "--model", f"diffusers:{folders['flux-dev']}", "--prompts", prompts,
                                "--out", str(tmp_path / "bad"), "--schedulers", "flow_euler,euler"])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "scheduler 'euler' (ddpm) can't sample" in lines[0] and "flow_euler" in lines[0]
    assert not (tmp_path / "bad" / "images.parquet").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"schedulers": ["flow_eulr"]}, "unknown scheduler 'flow_eulr': did you mean 'flow_euler'"),
    ({"reference_scheduler": "dpmpp_2m_karras"}, "scheduler 'dpmpp_2m_karras' \\(ddpm\\) can't sample"),
    ({"schedulers": ["DPM++ 2M"]}, "scheduler 'dpmpp_2m' \\(ddpm\\) can't sample .*flow_dpmpp_2m"),
])
def test_bad_flow_inputs_are_one_line_errors(folders, prompts, tmp_path, overrides, message):
    with pytest.raises(EvalkitError, match=message) as caught:
        evalkit.render(sweep(folders["flux-dev"], prompts, tmp_path / "bad", **overrides))
    assert "\n" not in str(caught.value)


def test_flow_scheduler_on_a_ddpm_model_is_refused(tmp_path):
    from tiny_models import save_tiny_sd

    with pytest.raises(EvalkitError, match="scheduler 'flow_heun' \\(flow\\) can't sample .* \\(ddpm model\\)"):
        evalkit.render({"model": f"diffusers:{save_tiny_sd(tmp_path / 'sd')}", "schedulers": ["flow_heun"],
                        "out": str(tmp_path / "r")})


@pytest.mark.parametrize("kind", ["flux-dev", "sd3"])
def test_model_alone_gives_a_full_flow_run(folders, prompts, tmp_path, kind, evalkit_cli):
    """`evalkit run --model diffusers:DIR`: flow defaults, the flow reference, scores, min-steps per solver, report."""
    out = tmp_path / "run"
    code, _, err = evalkit_cli(["run", "--model", f"diffusers:{folders[kind]}", "--prompts", prompts, "--out", str(out),
                                "--size", "32", "--device", "cpu", "--seeds", "1", "--steps", "1,2,4",
                                "--reference-steps", "12", "--metrics", "ssim,psnr"])
    assert code == 0, err
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert tuple(resolved["schedulers"]) == DEFAULTS["flow"] and resolved["reference_scheduler"] == REFERENCE["flow"]
    images = pd.read_parquet(out / "images.parquet")
    checks = images[images.role == "check"]  # the reference's certification: flow_dpmpp_2m at its steps
    assert len(DEFAULTS["flow"]) >= 5 and set(images.scheduler) == {*DEFAULTS["flow"], REFERENCE["flow"]}
    assert set(checks.scheduler) == {"flow_dpmpp_2m"} and set(checks.steps) <= {12, 24}  # 24: a tie-break
    assert len(images) - len(checks) == 2 * len(DEFAULTS["flow"]) * 3 + 2
    summary = json.loads((out / "summary.json").read_text())
    min_steps = summary["min_steps"]["schedulers"]
    assert set(min_steps) == set(DEFAULTS["flow"])
    assert all("min_steps" in entry for entry in min_steps.values())
    assert (out / "report.html").is_file() and "flow_dpmpp_2m" in (out / "report.html").read_text()
