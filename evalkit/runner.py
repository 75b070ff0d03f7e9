"""The stages wired together: what `evalkit run` does, importable for notebooks."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import SweepConfig, load_config, make_config, to_toml
from .errors import EvalkitError
from .metrics import METRICS
from .models import LoadOptions, Model, load_model, resolve_device
from .plan import RenderJob, RenderSettings, check_sweep, plan_jobs
from .distribution import judge_run
from .plateau import summarize_plateau
from .prompts import load_prompts
from .executors import make_executor
from .render import RenderStats, render_jobs, renderer_for
from .score import ScoreResult, score_images
from .summary import summarize_scores, write_summary
from .store import RunDir, atomic_write


@dataclass
class Run:
    """A run folder and the sweep it holds; tables are pandas DataFrames."""

    dir: Path
    config: SweepConfig
    jobs: list[RenderJob]
    stats: RenderStats
    score: ScoreResult | None = None
    report: Path | None = None

    @property
    def scores(self) -> pd.DataFrame:
        return pd.read_parquet(self.dir / "scores.parquet")

    @property
    def set_scores(self) -> pd.DataFrame:
        return pd.read_parquet(self.dir / "set_scores.parquet")

    @property
    def images(self) -> pd.DataFrame:
        """One row per rendered job of this sweep (sweep and references), in plan order."""
        return RunDir(self.dir).current_images()


def resolve_config(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None,
                   **overrides: Any) -> SweepConfig:
    if isinstance(config, SweepConfig):  # overrides are validated like any other value
        return make_config({**dataclasses.asdict(config), **{k: v for k, v in overrides.items() if v is not None}}) \
            if overrides else config
    if isinstance(config, dict):
        return make_config({**config, **{k: v for k, v in overrides.items() if v is not None}})
    return load_config(config, **overrides)


def load_options(config: SweepConfig, device: str | None = None) -> LoadOptions:
    return LoadOptions(device=device or resolve_device(config.device), dtype=config.dtype,
                       revision=config.revision, variant=config.variant)


def load_sweep_model(config: SweepConfig) -> Model:
    """The model as the driver needs it: identity and scheduler config for planning (the pipeline is lazy)."""
    model = load_model(config.model, load_options(config))
    check_sweep(config, model)
    return model


def render(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, progress: bool = False,
           **overrides: Any) -> Run:
    """Stage 1 for a config: plan, then render what is missing. Safe to rerun; resumes a killed run."""
    config = resolve_config(config, **overrides)
    for name in [*config.metrics, *config.backbones]:
        METRICS.get(name)  # an unknown metric fails before anything renders
    prompts = load_prompts(config.prompts_path())
    model = load_sweep_model(config)
    run_dir = RunDir(config.run_dir())
    run_dir.prepare()
    with run_dir.lock():
        resolved = save_config(run_dir, config)
        jobs = plan_jobs(config, model, prompts)
        run_dir.write_jobs([job.key for job in jobs])
        executor = make_executor(config)
        settings = RenderSettings.resolve(config, model)
        renderer = renderer_for(executor, model, settings, load_options(config, device=config.device))
        stats = render_jobs(run_dir, jobs, renderer, config.batch_size, executor, progress=progress)
    return Run(dir=run_dir.path, config=resolved, jobs=jobs, stats=stats)


def score(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, rendered: Run | None = None,
          **overrides: Any) -> Run:
    """Stage 2 for a rendered sweep: per-image scores, aggregates with CIs, summary.json."""
    result = rendered or render(config, **overrides)
    config = result.config
    run_dir = RunDir(result.dir)
    names = list(config.metrics) or METRICS.names()
    device = resolve_device(config.device) if config.backend == "local" else f"{config.device} (on each worker)"
    executor = make_executor(config)
    with run_dir.lock():
        images = result.images
        outcome = score_images(run_dir, images, config, names, executor)
        table = summarize_scores(run_dir, images, config, outcome)
        values = outcome.scores.merge(images[["key", "prompt_id", "seed", "scheduler", "steps"]], on="key")
        distribution = judge_run(run_dir, images, config, outcome, executor)  # issue 12: the distribution rule
        plateau = summarize_plateau(table, values, images, config.tolerances or None, distribution)
        summary = write_summary(run_dir, config, device, outcome, table,
                                extra={"render": dataclasses.asdict(result.stats), "min_steps": plateau,
                                       "execution": {"backend": executor.name, "workers": executor.workers}})
    outcome.warnings = summary["warnings"]  # the stage's own (truncated prompts) plus small n, stochastic samplers
    result.score = outcome
    return result


def report(path: str | os.PathLike) -> Path:
    """Stage 3: the self-contained report.html of a scored run folder."""
    from .report import write_report

    return write_report(Path(path))


def run(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, progress: bool = False,
        **overrides: Any) -> Run:
    """All stages for a config: render what is missing, score, and write report.html."""
    result = score(rendered=render(config, progress=progress, **overrides))
    result.report = report(result.dir)
    return result


def save_config(run_dir: RunDir, config: SweepConfig) -> SweepConfig:
    """Write the resolved config (absolute paths) as the run folder's config.toml, and return it."""
    resolved = dataclasses.replace(config, out=str(run_dir.path.resolve()), prompts=str(config.prompts_path().resolve()))
    atomic_write(run_dir.config_file, to_toml(resolved).encode())
    return resolved


def open_run(path: str | os.PathLike) -> SweepConfig:
    """The config of an existing run folder (for stage commands given a folder)."""
    folder = Path(path)
    if not (folder / "config.toml").is_file():
        raise EvalkitError(f"{folder} is not a run folder (no config.toml): pass a run folder or a config file")
    return load_config(folder / "config.toml", out=str(folder))
