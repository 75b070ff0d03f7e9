"""The stages wired together: what `evalkit run` does, importable for notebooks."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import TOML_HEADER, SweepConfig, check_plotly_js, resolve_config, to_toml
from .errors import EvalkitError
from .metrics import METRICS
from .metrics.base import MetricOptions
from .metrics.fid import check_fid_reference
from .models import LoadOptions, Model, check_device, load_model, resolve_device
from .plan import RenderJob, RenderSettings, check_sweep, plan_jobs, resolve_defaults
from .distribution import judge_run
from .plateau import summarize_plateau
from .prompts import load_prompts
from .executors import make_executor
from .render import RenderStats, render_jobs, renderer_for
from .score import ScoreResult, score_images
from .summary import summarize_scores, write_summary
from .store import RunDir, atomic_write, join_values


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
    check_metrics(config)
    prompts = load_prompts(config.prompts_path())
    if config.backend == "local":  # Ray workers resolve the device on their own nodes
        check_device(config.device)
    model = load_sweep_model(config)
    config = resolve_defaults(config, model)
    run_dir = RunDir(config.run_dir())
    check_run_folder(run_dir.path)
    with run_dir.lock():  # before anything in the folder is touched: a second run must not clean our temp files
        run_dir.prepare()
        resolved = save_config(run_dir, config)
        jobs = plan_jobs(config, model, prompts)
        run_dir.write_jobs([job.key for job in jobs])
        executor = make_executor(config)
        settings = RenderSettings.resolve(config, model)
        renderer = renderer_for(executor, model, settings, load_options(config, device=config.device))
        stats = render_jobs(run_dir, jobs, renderer, config.batch_size, executor, progress=progress)
    return Run(dir=run_dir.path, config=resolved, jobs=jobs, stats=stats)


def check_metrics(config: SweepConfig) -> None:
    """Unknown metrics, bad backbones and unusable FID targets fail before anything renders (and before
    config.toml records them, where they would break every later `evalkit score DIR`)."""
    for name in [*config.metrics, *config.backbones, *config.tolerances]:
        if not name.startswith("python:"):  # plugins were loaded (and named) with the config
            METRICS.get(name)
    for name, backbone in config.backbones.items():
        METRICS.get(name).weights(MetricOptions(backbone=backbone))  # parses and resolves the backbone name
    if config.fid_reference != "references" and {"fid", "kid"} & set(config.metrics or METRICS.names()):
        check_fid_reference(Path(config.fid_reference))


def check_run_folder(path: Path) -> None:
    """Refuse to write a run into a folder that holds something else (its config.toml, report.html...)."""
    if not path.is_dir() or not any(path.iterdir()):
        return
    config = path / "config.toml"
    if any((path / name).exists() for name in (".lock", "images.parquet", "images.journal")) or (
            config.is_file() and config.read_text(errors="replace").startswith(TOML_HEADER)):
        return
    raise EvalkitError(f"--out {path} is a folder with other files, not an evalkit run folder: "
                       "pass --out with a new or empty folder (or an earlier run's folder)")


def score(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None, *, rendered: Run | None = None,
          progress: bool = False, **overrides: Any) -> Run:
    """Stage 2 for a rendered sweep: per-image scores, aggregates with CIs, summary.json."""
    result = rendered or render(config, progress=progress, **overrides)
    config = result.config
    run_dir = RunDir(result.dir)
    names = list(config.metrics) or METRICS.names()
    device = resolve_device(config.device) if config.backend == "local" else f"{config.device} (on each worker)"
    executor = make_executor(config)
    with run_dir.lock():
        images = result.images
        outcome = score_images(run_dir, images, config, names, executor, progress)
        table = summarize_scores(run_dir, images, config, outcome)
        distribution = judge_run(run_dir, images, config, outcome, executor)  # the distribution rule
        plateau = summarize_plateau(table, join_values(outcome.scores, images), images, config.tolerances or None,
                                    distribution)
        summary = write_summary(run_dir, config, device, outcome, table,
                                extra={"render": dataclasses.asdict(result.stats), "min_steps": plateau,
                                       "execution": {"backend": executor.name, "workers": executor.workers}},
                                images=images)
    outcome.warnings = summary["warnings"]  # the stage's own (truncated prompts) plus small n, stochastic samplers
    result.score = outcome
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


def save_config(run_dir: RunDir, config: SweepConfig) -> SweepConfig:
    """Write the resolved config (absolute paths) as the run folder's config.toml, and return it."""
    resolved = dataclasses.replace(config, out=str(run_dir.path.resolve()), prompts=str(config.prompts_path().resolve()))
    atomic_write(run_dir.config_file, to_toml(resolved).encode())
    return resolved
