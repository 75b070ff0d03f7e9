"""The stages wired together: what `evalkit run`, `render`, `score` and `report` do, importable for notebooks.

    render(config)  plan, then render what is missing (stages/render.py)
    score(config)   render what is missing, then per-image and set scores, set_scores.parquet, the min-steps
                    answer (minsteps/) and summary.json (stages/)
    report(folder)  report.html from a scored folder (report/)
    run(config)     all three
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import SweepConfig, check_plotly_js, resolve_config
from .metrics import METRICS
from .minsteps.answer import summarize_min_steps
from .minsteps.distribution import judge_run
from .models import check_device, resolve_device
from .store.folder import RunDir
from .store.tables import join_values
from .stages.aggregate import aggregate_scores
from .stages.certify import settle
from .stages.checks import check_image_size, check_metrics
from .stages.executors import make_executor
from .stages.render import RenderStats, render_jobs, renderer_for
from .stages.score import ScoreResult, score_images
from .stages.summary import write_summary
from .sweep.plan import RenderJob, RenderSettings, model_options, plan_jobs, prepare_sweep
from .sweep.sample import run_prompts


@dataclass
class Run:
    """A run folder and the sweep it holds; tables are pandas DataFrames."""

    dir: Path
    config: SweepConfig  # resolved: the family's defaults filled in, as config.toml records it
    jobs: list[RenderJob]
    stats: RenderStats
    score: ScoreResult | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json as the score stage wrote it
    report: Path | None = None

    @property
    def scores(self) -> pd.DataFrame:
        return RunDir(self.dir).read_scores()

    @property
    def set_scores(self) -> pd.DataFrame:
        return RunDir(self.dir).read_set_scores()

    @property
    def images(self) -> pd.DataFrame:
        """One row per rendered job of this sweep (sweep and references), in plan order."""
        return RunDir(self.dir).current_images()


def render(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, progress: bool = False,
           **overrides: Any) -> Run:
    """Stage 1 for a config: plan, then render what is missing. Safe to rerun; resumes a killed run."""
    config = resolve_config(config, **overrides)
    check_metrics(config)
    chosen = run_prompts(config)  # read (and sampled) before the folder is touched: a bad source changes nothing
    prompts = chosen.prompts
    if config.backend == "local":  # Ray workers resolve the device on their own nodes
        check_device(config.device)
    config, model = prepare_sweep(config)
    settings = RenderSettings.resolve(config, model)
    check_image_size(config, settings.size)
    jobs = plan_jobs(config, model, prompts)  # a plan too large to render is refused before the folder is touched
    run_dir = RunDir(config.run_dir())
    run_dir.check_reusable()
    with run_dir.lock():  # before anything in the folder is touched: a second run must not clean our temp files
        run_dir.prepare()
        resolved = run_dir.save_config(config)
        run_dir.write_prompts(chosen)
        run_dir.write_jobs([job.key for job in jobs])
        executor = make_executor(config)
        renderer = renderer_for(executor, model, settings, model_options(config, device=config.device))
        stats = render_jobs(run_dir, jobs, renderer, config.batch_size, executor, progress=progress)
        tiebreaks = settle(run_dir, jobs, config, model, prompts, lambda extra: stats.add(
            render_jobs(run_dir, extra, renderer, config.batch_size, executor, progress=progress)))
        jobs += tiebreaks
        stats.planned = len(jobs)
        run_dir.write_jobs([job.key for job in jobs])
    return Run(dir=run_dir.path, config=resolved, jobs=jobs, stats=stats)


def score(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, rendered: Run | None = None,
          progress: bool = False, **overrides: Any) -> Run:
    """Stage 2 for a rendered sweep: per-image scores, aggregates with CIs, the min-steps answer, summary.json."""
    result = rendered or render(config, progress=progress, **overrides)
    config = result.config
    run_dir = RunDir(result.dir)
    names = list(config.metrics) or METRICS.names()
    device = resolve_device(config.device) if config.backend == "local" else f"{config.device} (on each worker)"
    executor = make_executor(config)
    with run_dir.lock():
        images = result.images
        outcome = score_images(run_dir, images, config, names, executor, progress)
        table = aggregate_scores(images, config, outcome)
        run_dir.write_set_scores(table)
        distribution = judge_run(run_dir, images, config, outcome, executor)  # the distribution rule
        min_steps = summarize_min_steps(table, join_values(outcome.scores, images), images, config.tolerances or None,
                                        distribution)
        summary = write_summary(run_dir, config, device, outcome, table,
                                extra={"render": dataclasses.asdict(result.stats), "min_steps": min_steps,
                                       "execution": {"backend": executor.name, "workers": executor.workers}},
                                images=images)
    outcome.warnings = summary["warnings"]  # the stage's own (truncated prompts) plus small n, stochastic samplers
    result.score, result.summary = outcome, summary
    return result


def report(path: str | os.PathLike, plotly_js: str = "inline") -> Path:
    """Stage 3: the report.html of a scored run folder (self-contained, or with plotly_js="shared" loading a
    plotly.min.js written beside it)."""
    from .report import write_report

    return write_report(Path(path), plotly_js)


def run(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, progress: bool = False,
        plotly_js: str = "inline", **overrides: Any) -> Run:
    """All stages for a config: render what is missing, score, and write report.html."""
    check_plotly_js(plotly_js)  # a typo fails before anything renders
    result = score(rendered=render(config, progress=progress, **overrides), progress=progress)
    result.report = report(result.dir, plotly_js)
    return result
