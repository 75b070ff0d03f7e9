"""Per-(scheduler, steps, metric) aggregates with paired bootstrap intervals, and summary.json provenance."""
from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from importlib import metadata
from typing import Any

import pandas as pd

from .config import PROJECT_ROOT, SweepConfig
from .schedulers import get_scheduler
from .score import ScoreResult
from .stats import bootstrap_means
from .store import RunDir, atomic_write, atomic_write_table

SET_SCORE_COLUMNS = ["scheduler", "steps", "metric", "value", "ci_low", "ci_high", "n"]
PACKAGES = ("evalkit", "torch", "diffusers", "transformers", "open-clip-torch", "lpips", "torchmetrics", "numpy",
            "pandas")


def summarize_scores(run: RunDir, images: pd.DataFrame, result: ScoreResult) -> pd.DataFrame:
    """Means and 95% paired-bootstrap CIs over (prompt, seed) units; references form their own column."""
    values = result.scores.merge(images[["key", "prompt_id", "seed", "scheduler", "steps"]], on="key")
    if values.empty:
        table = pd.DataFrame(columns=SET_SCORE_COLUMNS)
    else:
        table = bootstrap_means(values[["prompt_id", "seed", "scheduler", "steps", "metric", "value"]])
    # Set metrics (FID/KID) carry n but no interval yet: a per-column bootstrap of a 2048-d Fréchet
    # distance costs seconds per replicate; their CI columns are NaN until that is made affordable.
    sets = [frame.assign(metric=name, ci_low=float("nan"), ci_high=float("nan"))
            for name, frame in result.set_scores.items()]
    table = pd.concat([t for t in [table, *sets] if not t.empty], ignore_index=True) if sets else table
    atomic_write_table(run.path / "set_scores.parquet", table[SET_SCORE_COLUMNS])
    return table


def write_summary(run: RunDir, config: SweepConfig, device: str, result: ScoreResult,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    summary = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        "device": device,
        "metrics": result.metrics,
        "skipped_metrics": result.skipped,
        "stochastic_schedulers": [s for s in config.schedulers if get_scheduler(s).stochastic],
        "notes": {name: "stochastic sampler: reference-based metrics are computed but it does not converge to "
                        "one image per seed; judge it on distribution metrics"
                  for name in config.schedulers if get_scheduler(name).stochastic},
        "versions": versions(),
        **(extra or {}),
    }
    atomic_write(run.path / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        found["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found
