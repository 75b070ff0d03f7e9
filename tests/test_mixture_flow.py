"""builtin:mixture-flow: the exact velocity, its ground truth, and the real flow solvers converging to it."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import solve_ivp

from evalkit.models import load_model
from evalkit.models.exact.denoiser import COMPONENT_STD, guided_denoiser
from evalkit.models.exact.flow_pipeline import mixture_flow_pipeline
from evalkit.models.exact.flow_velocity import guided_velocity, velocity
from evalkit.models.exact.prototypes import K, prototypes
from evalkit.stages.render import CallCounter, SamplerCache
from evalkit.sweep.schedulers import SCHEDULERS

S = COMPONENT_STD
FLOW_SOLVERS = [s.name for s in SCHEDULERS if s.family == "flow" and not s.stochastic]


def test_velocity_of_one_gaussian_is_the_closed_form_regression():
    """One component: (eps - x0, x_t) is jointly Gaussian, so E[eps - x0 | x_t] is a linear regression,
    computed here without the posterior mean: -m + Cov(v, x_t) / Var(x_t) * (x_t - E[x_t])."""
    rng = np.random.default_rng(0)
    m = rng.uniform(-1, 1, size=(1, 12))
    x = rng.normal(size=12)
    for t in (1.0, 0.999999, 0.9, 0.5, 0.1, 1e-4, 0.0):
        var = (1 - t) ** 2 * S**2 + t**2
        expected = -m[0] + (t - (1 - t) * S**2) / var * (x - (1 - t) * m[0])
        np.testing.assert_allclose(velocity(x, t, np.ones(1), m), expected, rtol=1e-9, atol=1e-9)


def test_velocity_of_a_mixture_matches_monte_carlo():
    """Two components in 2-D: E[eps - x0 | x_t] by self-normalised importance sampling of x0 from the prior."""
    rng = np.random.default_rng(1)
    mu = np.array([[-0.6, 0.2], [0.7, -0.4]])
    weights = np.array([0.3, 0.7])
    n = 400_000
    x0 = mu[rng.choice(2, size=n, p=weights)] + S * rng.normal(size=(n, 2))
    for t, x in ((0.8, np.array([0.5, -1.0])), (0.4, np.array([0.1, 0.2])), (0.15, np.array([0.55, -0.3]))):
        eps = (x - (1 - t) * x0) / t  # the eps that takes each x0 to x
        log_w = -0.5 * np.sum(eps**2, axis=1)  # p(x_t | x0) up to a constant
        w = np.exp(log_w - log_w.max())
        estimate = (w[:, None] * (eps - x0)).sum(axis=0) / w.sum()
        np.testing.assert_allclose(velocity(x, t, weights, mu), estimate, atol=0.02)


def test_velocity_is_continuous_at_both_ends():
    rng = np.random.default_rng(2)
    mu, weights = rng.uniform(-1, 1, size=(3, 48)), np.array([0.2, 0.5, 0.3])
    x = rng.normal(size=48)
    np.testing.assert_allclose(velocity(x, 1 - 1e-9, weights, mu),
                               velocity(x, 1.0, weights, mu), atol=1e-6)
    np.testing.assert_allclose(velocity(x, 1e-9, weights, mu),
                               velocity(x, 0.0, weights, mu), atol=1e-6)


def test_ground_truth_agrees_with_the_variance_exploding_ode():
    """x_t / (1 - t) is the VE state at sigma = t / (1 - t): half the flow ODE, then the DDPM model's VE ODE
    (denoiser.denoise, in log sigma) to sigma = 1e-7, lands where the flow ODE lands at t = 0."""
    pipe = mixture_flow_pipeline(size=16)
    prompt, seed = "a cat", 3
    truth = pipe.ground_truth(prompt, seed, height=16, width=16)

    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(seed)).double().numpy().reshape(-1)
    means = prototypes(16).reshape(K, -1)
    v = guided_velocity(prompt, mu=means)
    half = solve_ivp(lambda t, x: v(x, t), (1.0, 0.5), noise, method="DOP853", rtol=1e-11, atol=1e-11).y[:, -1]
    d = guided_denoiser(prompt, height=16)
    ve = solve_ivp(lambda ls, x: x - d(x, math.exp(ls)), (0.0, math.log(1e-7)), half / 0.5,
                   method="DOP853", rtol=1e-11, atol=1e-11).y[:, -1]
    other = np.clip((d(ve, 1e-7).reshape(3, 16, 16).transpose(1, 2, 0) + 1) / 2, 0, 1)
    assert np.abs(truth - other).max() < 1e-6


def test_the_pipeline_is_sampled_on_fluxs_shifted_schedule():
    """mu from the token count exactly as FluxPipeline computes it; the first step below t = 1 is shifted."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    model = load_model("builtin:mixture-flow")
    assert model.scheduler_config["use_dynamic_shifting"] is True
    pipe = model.pipe
    pipe(["a cat"], num_inference_steps=4, generator=[torch.Generator().manual_seed(0)], output_type="np")
    mu = calculate_shift(32 * 32, 256, 4096, 0.5, 1.15)  # 64x64 pixels in 2x2 patches: 1024 tokens
    shift = math.exp(mu)
    expected = [shift * s / (1 + (shift - 1) * s) for s in np.linspace(1.0, 1 / 4, 4)] + [0.0]
    np.testing.assert_allclose(pipe.scheduler.sigmas.numpy(), expected, atol=1e-6)
    assert expected[1] > 0.8  # shifted toward high noise (unshifted: 0.75)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_every_deterministic_flow_solver_converges_to_the_ground_truth(guidance):
    """Error to the exact ODE solution falls with steps for every deterministic flow solver in the registry;
    one transformer call per step (Heun 2N-1), guidance or not (both halves of CFG go in one call)."""
    model = load_model("builtin:mixture-flow")
    pipe, samplers = model.pipe, SamplerCache(model)
    units = [("a photo of a cat", 0), ("three apples on a table", 1)]
    truth = np.stack([pipe.ground_truth(p, s, guidance_scale=guidance) for p, s in units])
    counter = CallCounter(pipe.transformer)
    errors = {}
    try:
        for name in FLOW_SOLVERS:
            for steps in (8, 32, 128):
                pipe.scheduler = samplers.get(name)
                before = counter.calls
                generators = [torch.Generator().manual_seed(s) for _, s in units]
                images = pipe([p for p, _ in units], num_inference_steps=steps, guidance_scale=guidance,
                              output_type="np", generator=generators).images
                assert counter.calls - before == (2 * steps - 1 if "heun" in name else steps), name
                errors[name, steps] = float(np.abs(images - truth).mean())
    finally:
        counter.close()
    table = pd.Series(errors).unstack()
    print(f"\nmean abs error vs ground truth (guidance {guidance}):\n{table.to_string(float_format='%.2e')}")
    for name in FLOW_SOLVERS:
        assert errors[name, 8] > errors[name, 32] > errors[name, 128], name
        assert errors[name, 128] < 1 / 255, name  # within one 8-bit step on average
    assert min(errors[name, 128] for name in FLOW_SOLVERS) < 5e-4


def test_a_flow_run_is_batch_size_and_rerun_invariant(tmp_path, evalkit_cli):
    """`evalkit run --model builtin:mixture-flow`: the same PNG bytes at batch size 1 and 4 for every job; a rerun
    renders nothing; the report explains the exact model."""
    (tmp_path / "prompts.txt").write_text("a cat\nthe word HELLO\n")
    shas = []
    for batch in (1, 4):
        out = tmp_path / f"batch{batch}"
        args = ["run", "--model", "builtin:mixture-flow", "--prompts", str(tmp_path / "prompts.txt"), "--seeds", "2",
                "--schedulers", "flow_euler,flow_heun,flow_unipc", "--steps", "1,3,6", "--reference-steps", "12",
                "--metrics", "ssim", "--batch-size", str(batch), "--out", str(out), "--no-progress"]
        code, _, err = evalkit_cli(args)
        assert code == 0, err
        images = pd.read_parquet(out / "images.parquet").set_index("key")
        assert len(images) == 2 * 2 * 3 * 3 + 2 * 2 + 2 * 2  # sweep, references, their checks
        shas.append(images["sha256"].sort_index())
        code, printed, _ = evalkit_cli(args)
        assert code == 0 and "rendered 0 new image(s)" in printed
        assert "The exact flow-matching model" in (out / "report.html").read_text()  # the report says what it is
    pd.testing.assert_series_equal(shas[0], shas[1])


def test_selftest_covers_both_families(tmp_path):
    """A small sweep: the flow solvers' min steps against the high-step reference = against the exact ODE."""
    from evalkit.config import resolve_config
    from evalkit.selftest import format_rows, selftest

    (tmp_path / "prompts.txt").write_text("a cat sitting on a mat\nthree apples on a table\n")
    config = resolve_config({"prompts": str(tmp_path / "prompts.txt"), "seeds": 2, "steps": [1, 2, 4, 8, 16, 32],
                             "reference_steps": 100, "schedulers": ["euler", "flow_euler", "flow_unipc"],
                             "out": str(tmp_path / "selftest")})
    rows, ok = selftest(config)
    print("\n".join(format_rows(rows)))
    # each run adds its certification row; builtin:mixture-early runs the flow solvers against a weak reference
    assert [(r["family"], r["scheduler"]) for r in rows] == [
        ("ddpm", "euler"), ("ddpm", "references x4"), ("flow", "flow_euler"), ("flow", "flow_unipc"),
        ("flow", "references x4"), ("early", "flow_euler"), ("early", "flow_unipc"), ("early", "references x4")]
    assert ok and all(r["truth"] is not None for r in rows)
    assert format_rows(rows)[0].split()[:2] == ["family", "scheduler"]
