"""Minimum useful steps without the whole sweep: coarse counts first, then integer bisection between the
last failing and the first passing count, per scheduler, reusing every cached image and score.

Assumes what the exhaustive rule checks explicitly: once a scheduler is within tolerance it stays there
at larger counts (true of deterministic solvers converging to their reference).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .config import SweepConfig
from .executors import make_executor
from .metrics import METRICS
from .metrics.base import CONVERGENCE, SET, MetricOptions
from .models import Model
from .plan import RenderSettings, plan_jobs, resolve_defaults
from .plateau import DEFAULT_TOLERANCES, RULE, summarize_plateau
from .prompts import load_prompts
from .render import render_jobs, renderer_for
from .runner import load_options, load_sweep_model, resolve_config, save_config
from .schedulers import build_scheduler, get_scheduler
from .score import score_images
from .store import RunDir, join_values
from .summary import score_table

COARSE_FACTOR = 2.5  # each coarse count is the first swept count at least this many times the previous one


def coarse_counts(steps: list[int]) -> list[int]:
    """A geometric subset of the swept counts below the largest (the largest is the last resort)."""
    chosen = [steps[0]]
    for s in steps[1:-1]:
        if s >= COARSE_FACTOR * chosen[-1]:
            chosen.append(s)
    return chosen


def nfe_of(scheduler: str, steps: int, model: Model) -> int:
    """Model evaluations of one image: the diffusers loop calls the model once per entry of `timesteps`."""
    instance = build_scheduler(get_scheduler(scheduler), model.scheduler_config)
    instance.set_timesteps(steps, device="cpu")
    return len(instance.timesteps)


class _Evaluator:
    """Renders and scores one scheduler at chosen counts (plus references), then applies the rule."""

    def __init__(self, config: SweepConfig, model: Model, tolerances: dict[str, float]):
        self.config, self.model, self.tolerances = config, model, tolerances
        self.prompts = load_prompts(config.prompts_path())
        self.run = RunDir(config.run_dir())
        self.metrics = [m for m in tolerances if METRICS.get(m).inputs != SET]
        self.executor = make_executor(config)
        self.renderer = renderer_for(self.executor, model, RenderSettings.resolve(config, model),
                                     load_options(config, device=config.device))
        self.rendered = 0
        self.keys: dict[str, None] = {}  # every job evaluated, in order: the folder's sweep afterwards

    def evaluate(self, scheduler: str, counts: list[int]) -> dict[str, Any]:
        config = dataclasses.replace(self.config, schedulers=(scheduler,), steps=tuple(sorted(counts)))
        jobs = plan_jobs(config, self.model, self.prompts)
        self.keys.update(dict.fromkeys(j.key for j in jobs))
        stats = render_jobs(self.run, jobs, self.renderer, config.batch_size, self.executor, progress=False)
        self.rendered += stats.rendered
        table = self.run.read_images().set_index("key")
        images = table.loc[[j.key for j in jobs]].reset_index()
        self.run.check_intact(images)
        outcome = score_images(self.run, images, config, self.metrics, self.executor)
        set_scores = score_table(images, config, outcome)
        self.last_images = images
        values = join_values(outcome.scores, images)
        return summarize_plateau(set_scores, values, images, self.tolerances)["schedulers"][scheduler]


def adaptive_min_steps(config: SweepConfig | str | None = None, tolerances: dict[str, float] | None = None,
                       **overrides: Any) -> dict[str, Any]:
    config = resolve_config(config, **overrides)
    model = load_sweep_model(config)
    config = resolve_defaults(config, model)
    tolerances = _gates(config, tolerances or config.tolerances or DEFAULT_TOLERANCES)
    evaluator = _Evaluator(config, model, tolerances)
    run_dir = RunDir(config.run_dir())
    steps = sorted(config.steps)
    results: dict[str, Any] = {}
    with run_dir.lock():
        run_dir.prepare()
        save_config(run_dir, config)
        for scheduler in dict.fromkeys(get_scheduler(s).name for s in config.schedulers):
            results[scheduler] = _search_one(evaluator, scheduler, steps)
        run_dir.write_jobs(list(evaluator.keys))
    exhaustive_nfe = sum(nfe_of(s, n, model) for s in results for n in steps) * len(evaluator.prompts) * \
        len(config.seeds)
    searched_nfe = sum(nfe_of(s, n, model) for s, r in results.items() for n in r["evaluated_steps"]) * \
        len(evaluator.prompts) * len(config.seeds)
    return {"rule": RULE, "tolerances": tolerances, "search": "adaptive", "schedulers": results,
            "run_dir": str(config.run_dir()),
            "cost": {"sweep_nfe": searched_nfe, "exhaustive_sweep_nfe": exhaustive_nfe,
                     "nfe_ratio": searched_nfe / exhaustive_nfe, "images_rendered": evaluator.rendered,
                     "note": "NFE of sweep images only; the references are the same in both"}}


def _gates(config: SweepConfig, tolerances: dict[str, float]) -> dict[str, float]:
    """The gating metrics this run can score: per-image, selected by the config, weights present."""
    gates = {}
    for name, tolerance in tolerances.items():
        spec = METRICS.get(name)
        options = MetricOptions(backbone=config.backbones.get(name))
        if spec.inputs != SET and (not config.metrics or name in config.metrics) and not spec.missing_weights(options):
            gates[name] = tolerance
    return gates


def _search_one(evaluator: _Evaluator, scheduler: str, steps: list[int]) -> dict[str, Any]:
    # absolute metrics measure against the highest swept count: it must be rendered first
    absolute = any(METRICS.get(m).kind != CONVERGENCE for m in evaluator.metrics)
    evaluated: list[int] = [steps[-1]] if absolute else []
    entry: dict[str, Any] = {}

    def passes(count: int) -> bool:
        nonlocal entry
        evaluated.extend([] if count in evaluated else [count])
        entry = evaluator.evaluate(scheduler, evaluated)
        index = sorted(evaluated).index(count)
        return bool(entry["evidence"]) and all(ev[index]["pass"] for ev in entry["evidence"].values())

    failing = passing = None
    for count in coarse_counts(steps):
        if passes(count):
            passing = count
            break
        if not entry["evidence"]:  # nothing can be judged (e.g. a stochastic sampler on convergence metrics)
            return {**entry, "min_steps": None, "reached": False, "evaluated_steps": sorted(evaluated)}
        failing = count
    # integer bisection over the swept counts between the last failure and the first pass (presumed to be
    # the largest count when no coarse count passed: it is rendered only if the search ends there)
    lo = steps.index(failing) + 1 if failing is not None else 0
    hi = steps.index(passing) if passing is not None else len(steps) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(steps[mid]):
            hi = mid
        else:
            lo = mid + 1
    passing = steps[hi] if (steps[hi] == passing or passes(steps[hi])) else None
    entry = evaluator.evaluate(scheduler, evaluated)
    entry.update(min_steps=passing, reached=passing is not None, evaluated_steps=sorted(evaluated))
    if passing is not None:
        entry.pop("why", None)
        cost = evaluator.last_images.query("scheduler == @scheduler and steps == @passing")
        entry.update(nfe=float(cost.nfe.mean()), seconds_per_image=float(cost.seconds.mean()))
    elif "why" not in entry:
        entry["why"] = f"not within tolerance even at {steps[-1]} steps: sweep more steps"
    return entry
