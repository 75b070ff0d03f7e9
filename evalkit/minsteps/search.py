"""Minimum useful steps without the whole sweep: coarse counts first, then integer bisection between the
last failing and the first passing count, per scheduler, reusing every cached image and score.

Each step of the search renders and scores what it needs, then asks the one answer the exhaustive run gives
(answer.scheduler_answer over the counts evaluated so far, every rule included: per-seed metrics and the
distribution rule), so both report the same rules, evidence and decision. The search assumes what the
exhaustive rule checks explicitly: once a scheduler is within tolerance it stays there at larger counts (true of
deterministic solvers converging to their reference, and of a distribution converging to its target); where a
count it evaluated contradicts that, the decision over the evaluated counts says so rather than the bisection.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import SweepConfig, resolve_config
from ..metrics import metric_spec
from ..metrics.base import CONVERGENCE
from ..models import Model
from ..store.folder import RunDir
from ..store.tables import join_values
from ..stages.aggregate import aggregate_scores
from ..stages.certify import settle
from ..stages.checks import scorable
from ..stages.executors import make_executor
from ..stages.render import render_jobs, renderer_for
from ..stages.score import score_images
from ..sweep.plan import RenderSettings, model_options, plan_jobs, prepare_sweep
from ..sweep.sample import RunPrompts, run_prompts
from ..sweep.schedulers import get_scheduler, timestep_count
from .answer import judged_evidence, summarize_min_steps
from .distribution import JUDGES, judge_run
from .perseed import gating_tolerances

COARSE_FACTOR = 2.5  # each coarse count is the first swept count at least this many times the previous one


def coarse_counts(steps: list[int]) -> list[int]:
    """A geometric subset of the swept counts below the largest (the largest is the last resort)."""
    chosen = [steps[0]]
    for s in steps[1:-1]:
        if s >= COARSE_FACTOR * chosen[-1]:
            chosen.append(s)
    return chosen


class _Evaluator:
    """Renders and scores one scheduler at chosen counts (plus references), then asks for the run's answer."""

    def __init__(self, config: SweepConfig, model: Model, run: RunDir, prompts: RunPrompts):
        self.config, self.model, self.run = config, model, run
        run.write_prompts(prompts)
        self.prompts = prompts.prompts
        names = [spec.name for spec in scorable(config)]
        self.gates = gating_tolerances(config.tolerances or None, names)
        self.judges = [m for m in JUDGES if m in names]  # the distribution rule judges on the first one scored
        self.executor = make_executor(config)
        self.renderer = renderer_for(self.executor, model, RenderSettings.resolve(config, model),
                                     model_options(config, device=config.device))
        self.rendered = 0
        self.keys: dict[str, None] = {}  # every job evaluated, in order: the folder's sweep afterwards
        self.header: dict[str, Any] = {}  # the answer's rule, tolerances and distribution block

    def evaluate(self, scheduler: str, counts: list[int]) -> dict[str, Any]:
        config = dataclasses.replace(self.config, schedulers=(scheduler,), steps=tuple(sorted(counts)))
        jobs = plan_jobs(config, self.model, self.prompts)
        self._render(jobs)
        self.run.write_jobs([j.key for j in jobs])  # what `settle` reads as the current sweep
        jobs += settle(self.run, jobs, config, self.model, self.prompts, self._render)
        self.keys.update(dict.fromkeys(j.key for j in jobs))
        table = self.run.read_images().set_index("key")
        images = table.loc[[j.key for j in jobs]].reset_index()
        self.run.check_intact(images)
        outcome = score_images(self.run, images, config, [*self.gates, *self.judges], self.executor)
        answer = summarize_min_steps(aggregate_scores(images, config, outcome), join_values(outcome.scores, images),
                                     images, self.gates, judge_run(self.run, images, config, outcome, self.executor))
        self.header = {k: v for k, v in answer.items() if k != "schedulers"}
        return answer["schedulers"][scheduler]

    def _render(self, jobs: list) -> None:
        self.rendered += render_jobs(self.run, jobs, self.renderer, self.config.batch_size, self.executor,
                                     progress=False).rendered


def adaptive_min_steps(config: SweepConfig | str | None = None, tolerances: dict[str, float] | None = None,
                       **overrides: Any) -> dict[str, Any]:
    """The min-steps answer of `evalkit min-steps --search adaptive`, written into the run folder's summary.json."""
    config, model = prepare_sweep(resolve_config(config, tolerances=tolerances, **overrides))
    run = RunDir(config.run_dir())
    run.check_reusable()
    prompts = run_prompts(config)  # read (and sampled) before the folder is touched: a bad source changes nothing
    steps = sorted(config.steps)
    results: dict[str, Any] = {}
    with run.lock():
        run.prepare()
        run.save_config(config)
        evaluator = _Evaluator(config, model, run, prompts)
        for scheduler in dict.fromkeys(get_scheduler(s).name for s in config.schedulers):
            results[scheduler] = _search_one(evaluator, scheduler, steps)
        run.write_jobs(list(evaluator.keys))
        answer = {**evaluator.header, "search": "adaptive", "schedulers": results, "run_dir": str(run.path),
                  "cost": _cost(results, steps, model, len(evaluator.prompts) * len(config.seeds), evaluator.rendered)}
        run.merge_summary({"min_steps": answer})
    return answer


def _cost(results: dict[str, Any], steps: list[int], model: Model, units: int, rendered: int) -> dict[str, Any]:
    """Sweep NFE of the search against the exhaustive sweep's (references are the same in both)."""
    def nfe(scheduler: str, counts: list[int]) -> int:
        return sum(timestep_count(get_scheduler(scheduler), model.scheduler_config, n) for n in counts) * units

    exhaustive = sum(nfe(s, steps) for s in results)
    searched = sum(nfe(s, r["evaluated_steps"]) for s, r in results.items())
    return {"sweep_nfe": searched, "exhaustive_sweep_nfe": exhaustive, "nfe_ratio": searched / exhaustive,
            "images_rendered": rendered, "note": "NFE of sweep images only; the references are the same in both"}


def _search_one(evaluator: _Evaluator, scheduler: str, steps: list[int]) -> dict[str, Any]:
    """Coarse counts, then bisection; the answer is the one decision over every count evaluated."""
    # absolute metrics measure against the highest swept count: it must be rendered first
    absolute = any(metric_spec(m).kind != CONVERGENCE for m in evaluator.gates)
    evaluated: list[int] = [steps[-1]] if absolute else []
    entry: dict[str, Any] = {}

    def passes(count: int) -> bool:
        nonlocal entry
        evaluated.extend([] if count in evaluated else [count])
        entry = evaluator.evaluate(scheduler, evaluated)
        index, judged = sorted(evaluated).index(count), judged_evidence(entry)
        return bool(judged) and all(ev[index]["pass"] for ev in judged.values())

    failing = passing = None
    for count in coarse_counts(steps):
        if passes(count):
            passing = count
            break
        if not judged_evidence(entry):  # no rule can judge (e.g. a stochastic sampler with no distribution metric)
            return {**entry, "evaluated_steps": sorted(evaluated)}
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
    if steps[hi] not in evaluated:
        passes(steps[hi])
    return {**entry, "evaluated_steps": sorted(evaluated)}  # `entry` answers every count evaluated
