"""Per-(scheduler, steps, metric) aggregates with paired bootstrap intervals, and summary.json provenance."""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import subprocess
from importlib import metadata
from typing import Any

import pandas as pd

from .config import PROJECT_ROOT, SweepConfig
from .metrics import METRICS
from .metrics.base import CONVERGENCE
from .schedulers import SCHEDULERS
from .score import ScoreResult
from .stats import bootstrap_means
from .store import (BROKEN, SET_SCORE_COLUMNS, SWEEP, UNIT_COLUMN, RunDir, atomic_write, atomic_write_table, is_broken,
                    join_values)

PACKAGES = ("evalkit", "torch", "diffusers", "transformers", "open-clip-torch", "lpips", "torchmetrics", "numpy",
            "pandas")


def summarize_scores(run: RunDir, images: pd.DataFrame, config: SweepConfig, result: ScoreResult) -> pd.DataFrame:
    """`score_table`, written as set_scores.parquet."""
    table = score_table(images, config, result)
    atomic_write_table(run.path / "set_scores.parquet", table[SET_SCORE_COLUMNS])
    return table


def score_table(images: pd.DataFrame, config: SweepConfig, result: ScoreResult) -> pd.DataFrame:
    """Per-image metrics: means with paired-bootstrap CIs over (prompt, seed) units (references are their own
    column); set metrics as computed. `broken` counts the column's images left unscored as broken; `flags`
    marks values to read with care (see `flag_rows`)."""
    values = join_values(result.scores, images)
    frames = [bootstrap_means(values[[*UNIT_COLUMN, "metric", "value"]])] if not values.empty else []
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SET_SCORE_COLUMNS[:7])
    if len(result.broken):
        table = table.merge(result.broken, on=["scheduler", "steps", "metric"], how="left")
    table["broken"] = table.get("broken", pd.Series(0, index=table.index)).fillna(0).astype(int)
    sets = [frame.assign(metric=name) for name, frame in result.set_scores.items()]
    table = pd.concat([table, *sets], ignore_index=True) if sets else table
    table["broken"] = table["broken"].fillna(0).astype(int)
    table["flags"] = flag_rows(table, config)
    return table


def flag_rows(table: pd.DataFrame, config: SweepConfig) -> list[str]:
    """`not-convergent`: a stochastic sampler on a convergence metric; `small-n`: a set metric below its min n;
    `broken-images`: images of the column (or their references) were non-finite or blank, left unscored."""
    flags = []
    for row in table.itertuples():
        spec, scheduler = METRICS.get(row.metric), SCHEDULERS.get(row.scheduler)
        row_flags = []
        if scheduler.stochastic and spec.kind == CONVERGENCE:
            row_flags.append("not-convergent")
        if spec.min_n and row.n < spec.min_n:
            row_flags.append("small-n")
        if row.broken:
            row_flags.append(BROKEN)
        flags.append(",".join(row_flags))
    return flags


def broken_images(images: pd.DataFrame) -> dict[str, int]:
    """Non-finite or blank images of the run per column label (`scheduler@steps`), only where there are some."""
    bad = images[[is_broken(f) for f in images["flags"]]]
    return {f"{s}@{int(n)}" + ("" if role == SWEEP else " (reference)"): int(k)
            for (s, n, role), k in bad.groupby(["scheduler", "steps", "role"]).size().items()}


def warnings_for(table: pd.DataFrame, config: SweepConfig, images: pd.DataFrame | None = None) -> list[str]:
    out = []
    broken = broken_images(images) if images is not None else {}
    if broken:
        out.append(f"{sum(broken.values())} broken image(s) (non-finite or blank output), left unscored and failing "
                   f"the gate by default: {', '.join(f'{c}: {k}' for c, k in broken.items())}")
    for metric, rows in table[table["flags"].str.contains("small-n")].groupby("metric"):
        spec = METRICS.get(metric)
        out.append(f"{metric}: sets of {int(rows.n.min())}-{int(rows.n.max())} images, below the {spec.min_n} its "
                   "authors ask for: biased upwards by an amount that depends on the model; compare only at equal n "
                   "and read KID beside it")
    stochastic = [s for s in config.schedulers if SCHEDULERS.get(s).stochastic]
    if stochastic:
        out.append(f"{', '.join(stochastic)}: stochastic sampler(s): reference-based metrics are computed but never "
                   "converge per seed; judge them on distribution metrics (the distribution rule: CMMD or KID)")
    return out


def write_summary(run: RunDir, config: SweepConfig, device: str, result: ScoreResult, table: pd.DataFrame,
                  extra: dict[str, Any] | None = None, images: pd.DataFrame | None = None) -> dict[str, Any]:
    summary = {
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "warnings": result.warnings + warnings_for(table, config, images),
        "broken_images": broken_images(images) if images is not None else {},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        "device": device,
        "metrics": result.metrics,
        "skipped_metrics": result.skipped,
        "stochastic_schedulers": [s for s in config.schedulers if SCHEDULERS.get(s).stochastic],
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
