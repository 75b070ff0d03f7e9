"""Reference-solver candidates against the exact ODE solution, on evalkit's three exact built-in models.

A sweep's reference is one deterministic solver at reference_steps (evalkit/sweep/schedulers.py, FAMILY_DEFAULTS):
every convergence number assumes it is the picture the model's ODE converges to. This script renders each candidate
(solver, steps) for every unit (prompt, seed) of builtin:mixture (DDPM family), builtin:mixture-flow (flow matching,
FLUX-style) and builtin:mixture-early (flow; every prompt picks its picture near t = 1: evalkit/models/exact/variants.py)
and compares it with `pipe.ground_truth(prompt, seed)`, the exact solution (DOP853 at tolerance 1e-9 / 1e-10).

Per candidate: NFE per image (as evalkit counts it: schedulers.timestep_count), the worst unit's max and mean absolute
error and the mean over units of the mean absolute error (float images in [0, 1], before quantisation), and "wrong
units": units whose candidate is not the same picture as the truth by evalkit's certification bound
(stages/certify.py: `agree(ssim, mean_error)` on both images quantised to uint8, as evalkit stores them).

Units: builtin:mixture and builtin:mixture-flow use prompts that select several components each (PROMPTS below),
builtin:mixture-early the 12 default prompts (prompts/default.txt), each x seeds 0..15. Ground truths are computed once
per model and kept in memory only. `--quick`: 4 seeds, a smoke run.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    # before numpy/torch load: multi-threaded BLAS makes the exact models ~8x slower on a 2-core machine
    os.environ.setdefault(_var, "1")

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from _common import ROOT, machine

from evalkit.models import load_model
from evalkit.stages.certify import agree, distances
from evalkit.sweep.prompts import load_prompts
from evalkit.sweep.schedulers import build_scheduler, get_scheduler, timestep_count

# prompts that select several components each (evalkit/models/exact/components.py), so the ODE has a choice to make
PROMPTS = ["a landscape", "a portrait of a woman", "some texture", "an animal", "count the dots", "text", "abstract",
           "pets and fish"]

DDPM = [("dpmpp_2m_karras", 50), ("dpmpp_2m_karras", 100), ("dpmpp_2m_karras", 200), ("unipc_karras", 100),
        ("unipc_karras", 200), ("dpmpp_2m", 200), ("dpmpp_2m", 400), ("unipc", 200), ("heun", 100), ("euler", 200),
        ("ddim", 200)]
FLOW = [("flow_dpmpp_2m_karras", 50), ("flow_dpmpp_2m_karras", 100), ("flow_dpmpp_2m_karras", 200),
        ("flow_dpmpp_2m_karras", 400), ("flow_unipc", 50), ("flow_unipc", 100), ("flow_unipc", 200),
        ("flow_dpmpp_2m", 100), ("flow_dpmpp_2m", 200), ("flow_dpmpp_2m", 400), ("flow_heun", 50), ("flow_heun", 100),
        ("flow_euler", 100), ("flow_euler", 200), ("flow_euler_karras", 200)]


def default_prompts() -> list[str]:
    return [p.text for p in load_prompts(ROOT / "prompts" / "default.txt")]


MODELS = {"builtin:mixture": (lambda: PROMPTS, DDPM), "builtin:mixture-flow": (lambda: PROMPTS, FLOW),
          "builtin:mixture-early": (default_prompts, FLOW)}


@dataclass
class Result:
    model: str
    solver: str
    steps: int
    nfe: int
    max_error: list[float] = field(default_factory=list)  # per unit, float images
    mean_error: list[float] = field(default_factory=list)
    wrong: list[tuple[str, int, float, float]] = field(default_factory=list)  # prompt, seed, ssim, uint8 mean error
    seconds: float = 0.0


def quantise(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) float in [0, 1] -> (B, 3, H, W) uint8, as evalkit stores an image."""
    return torch.from_numpy(np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)).permute(0, 3, 1, 2)


def ground_truths(pipe, prompts: list[str], seeds: list[int]) -> dict[str, np.ndarray]:
    """prompt -> (seeds, H, W, 3) float64 exact solutions."""
    start, out = time.perf_counter(), {}
    for prompt in prompts:
        out[prompt] = np.stack([pipe.ground_truth(prompt, s) for s in seeds])
    units = len(prompts) * len(seeds)
    log(f"  ground truth: {units} units in {time.perf_counter() - start:.1f} s "
        f"({(time.perf_counter() - start) / units:.2f} s per unit)")
    return out


def measure(spec: str, model, truths: dict[str, np.ndarray], seeds: list[int], solver: str, steps: int) -> Result:
    scheduler_spec = get_scheduler(solver)
    result = Result(spec, solver, steps, timestep_count(scheduler_spec, model.scheduler_config, steps))
    pipe = model.pipe
    start = time.perf_counter()
    for prompt, truth in truths.items():
        pipe.scheduler = build_scheduler(scheduler_spec, model.scheduler_config)  # fresh per call, as the render stage
        images = pipe([prompt] * len(seeds), num_inference_steps=steps,
                      generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np").images
        images = np.asarray(images, dtype=np.float64)
        err = np.abs(images - truth).reshape(len(seeds), -1)
        result.max_error += err.max(1).tolist()
        result.mean_error += err.mean(1).tolist()
        ssim, _, mean_u8 = distances(quantise(images), quantise(truth))
        for seed, s, m in zip(seeds, ssim.tolist(), mean_u8.tolist()):
            if not agree(s, m):
                result.wrong.append((prompt, seed, s, m))
    result.seconds = time.perf_counter() - start
    return result


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(results: list[Result], units: dict[str, int]) -> str:
    lines = ["| model | solver | steps | NFE | worst max error | worst mean error | mean error | wrong units |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.model} | {r.solver} | {r.steps} | {r.nfe} | {max(r.max_error):.1e} | "
                     f"{max(r.mean_error):.1e} | {np.mean(r.mean_error):.1e} | {len(r.wrong)} / {units[r.model]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 seeds per prompt: a smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per prompt (default 16; 4 with --quick)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    seeds = list(range(args.seeds or (4 if args.quick else 16)))
    results, units = [], {}
    wall = time.perf_counter()
    for spec in args.models.split(","):
        prompts_of, candidates = MODELS[spec]
        prompts = prompts_of()
        units[spec] = len(prompts) * len(seeds)
        log(f"{spec}: {len(prompts)} prompts x {len(seeds)} seeds = {units[spec]} units")
        model = load_model(spec)
        truths = ground_truths(model.pipe, prompts, seeds)  # in memory, this model only
        for solver, steps in candidates:
            r = measure(spec, model, truths, seeds, solver, steps)
            log(f"  {solver}@{steps}: NFE {r.nfe}, worst max {max(r.max_error):.2g}, wrong {len(r.wrong)}"
                f" ({r.seconds:.1f} s)")
            results.append(r)
        del truths
    print(f"seeds 0..{len(seeds) - 1}; errors in [0, 1] pixel units on the float images; wrong = not "
          f"agree(ssim, mean error) on uint8 (evalkit.stages.certify); {time.perf_counter() - wall:.0f} s in all")
    print()
    print(table(results, units))
    wrong = [r for r in results if r.wrong]
    if wrong:
        print()
        print("wrong units (prompt, seed: SSIM, uint8 mean error):")
        for r in wrong:
            cells = "; ".join(f"{p!r} {s}: {ss:.3f}, {m:.3f}" for p, s, ss, m in r.wrong)
            print(f"  {r.model} {r.solver}@{r.steps}: {cells}")


if __name__ == "__main__":
    main()
