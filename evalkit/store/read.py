"""`ScoredRun`: the one read model of a scored run folder, read and checked once. The report, compare, recommend,
the gate, the min-steps search, the self-test and the CLI read a run through it and nothing else."""
from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import SweepConfig, load_config
from ..errors import EvalkitError
from ..metrics import METRICS
from ..sweep.plan import REFERENCE, SWEEP
from .files import read_json, read_table
from .folder import RESCORE, RunDir
from .tables import SCORE_COLUMNS, SET_SCORE_COLUMNS, has_flag, is_broken, join_values, sweep_values

Column = tuple[str, int]  # (scheduler, steps)
# The quality metric readers lead with when none is named (recommend, the report's Pareto and per-prompt views):
# the first of these that was scored, else the first scored metric.
PREFERRED_METRICS = ("lpips", "ssim", "psnr")
REFERENCES = "references"  # `broken(REFERENCES)`: the run's reference images rather than a scheduler's


@dataclass
class ScoredRun:
    """A scored run folder. `values` is the one join of per-image scores to their (prompt, seed, scheduler,
    steps) place; broken images have no value (NaN), and set_scores counts them per column (`broken`)."""

    dir: Path
    config: SweepConfig
    images: pd.DataFrame  # the current sweep's rows (role SWEEP) and its references (REFERENCE), plan order
    values: pd.DataFrame  # per image: key, metric, value, prompt_id, prompt, seed, scheduler, steps, role
    set_scores: pd.DataFrame  # SET_SCORE_COLUMNS
    summary: dict[str, Any]

    FILES = ("config.toml", "images.parquet", "jobs.parquet", "scores.parquet", "set_scores.parquet", "summary.json")

    @classmethod
    def read(cls, path: str | os.PathLike) -> ScoredRun:
        folder = RunDir(path)
        for name in cls.FILES:
            if not (folder.path / name).is_file():
                raise EvalkitError(f"{folder.path} is not a scored run folder (no {name}): run `evalkit run` or "
                                   f"{RESCORE.format(dir=folder.path)} first")
        config = load_config(folder.config_file, out=str(folder.path))
        images = folder.current_images()
        images = images.assign(flags=images["flags"].fillna("").astype(str))
        rescore = f"rescore with {RESCORE.format(dir=folder.path)}"
        scores = read_table(folder.scores_table, SCORE_COLUMNS, rescore)[SCORE_COLUMNS]
        set_scores = read_table(folder.set_scores_table, SET_SCORE_COLUMNS[:7], rescore)
        set_scores = set_scores.assign(broken=set_scores.get("broken", 0),
                                       flags=set_scores.get("flags", "")).fillna({"flags": "", "broken": 0})
        summary = read_json(folder.summary_file, rescore)
        return cls(folder.path, config, images, join_values(scores, images), set_scores[SET_SCORE_COLUMNS], summary)

    # -- images ---------------------------------------------------------------------------------------------
    @property
    def sweep(self) -> pd.DataFrame:
        return self.images[self.images.role == SWEEP]

    @property
    def references(self) -> pd.DataFrame:
        return self.images[self.images.role == REFERENCE]

    def sweep_values(self) -> pd.DataFrame:
        """Per-image values of the sweep, in the shape stats takes."""
        return sweep_values(self.values)

    @property
    def schedulers(self) -> list[str]:
        """Swept schedulers in the config's order (then any others the tables hold)."""
        present = set(self.sweep["scheduler"]) | set(self.set_scores["scheduler"])
        ordered = [s for s in self.config.schedulers if s in present]
        return ordered + sorted(present - set(ordered))

    def broken(self, scheduler: str) -> tuple[int, int]:
        """(broken, all) images of one swept scheduler, or of the references (REFERENCES)."""
        rows = self.references if scheduler == REFERENCES else self.sweep[self.sweep.scheduler == scheduler]
        return sum(is_broken(f) for f in rows["flags"]), len(rows)

    def broken_images(self) -> dict[str, int]:
        """Broken (non-finite or blank) images per column label, as summary.json counted them."""
        return self.summary.get("broken_images") or {}

    def speed(self) -> pd.DataFrame:
        """Mean NFE and seconds per image per (scheduler, steps)."""
        return self.sweep.groupby(["scheduler", "steps"], as_index=False)[["nfe", "seconds"]].mean()

    # -- metrics --------------------------------------------------------------------------------------------
    @functools.cached_property
    def metrics(self) -> list[str]:
        """Scored metrics: PREFERRED_METRICS first, then in summary.json's order, then any others."""
        present = set(self.set_scores["metric"])
        known = [m for m in PREFERRED_METRICS if m in present] + [m for m in self.summary.get("metrics", {})
                                                                  if m in present]
        ordered = list(dict.fromkeys(known))
        return ordered + sorted(present - set(ordered))

    @property
    def main_metric(self) -> str | None:
        return next((m for m in PREFERRED_METRICS if m in self.metrics), self.metrics[0] if self.metrics else None)

    def metric_info(self, name: str) -> dict[str, Any]:
        """What summary.json recorded of a metric when it was scored (kind, direction, backbone, ...)."""
        return self.summary.get("metrics", {}).get(name, {})

    def higher_is_better(self, name: str) -> bool:
        """The metric's direction as recorded when it was scored, else as its spec declares it."""
        recorded = self.metric_info(name).get("higher_is_better")
        return bool(recorded) if recorded is not None else METRICS.get(name).higher_is_better

    def perfect(self, name: str) -> float | None:
        """The plateau of a convergence metric (its value at the reference); None for absolute metrics."""
        info = self.metric_info(name)
        return info.get("perfect") if info.get("kind", "convergence") == "convergence" else None

    # -- set_scores -----------------------------------------------------------------------------------------
    def columns(self, metric: str) -> set[Column]:
        """The (scheduler, steps) columns of the current sweep that have a `metric` row."""
        rows = self.set_scores[self.set_scores.metric == metric]
        return {(s, int(n)) for s, n in zip(rows.scheduler, rows.steps)
                if s in self.config.schedulers and int(n) in self.config.steps}

    def set_row(self, metric: str, column: Column) -> pd.Series | None:
        t = self.set_scores
        rows = t[(t.metric == metric) & (t.scheduler == column[0]) & (t.steps == column[1])]
        return rows.iloc[0] if len(rows) else None

    def set_value(self, metric: str, column: Column) -> float | None:
        row = self.set_row(metric, column)
        return None if row is None else float(row["value"])

    def set_interval(self, metric: str, column: Column) -> tuple[float, float] | None:
        """The column's own 95% interval from set_scores (set metrics: the score stage's unit bootstrap)."""
        row = self.set_row(metric, column)
        if row is None or pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
            return None
        return float(row["ci_low"]), float(row["ci_high"])

    def flagged(self, metric: str, column: Column, flag: str) -> bool:
        row = self.set_row(metric, column)
        return row is not None and has_flag(row.get("flags", ""), flag)

    # -- summary.json ---------------------------------------------------------------------------------------
    def min_steps(self) -> dict[str, Any]:
        return self.summary.get("min_steps") or {}

    def created(self) -> str:
        stamp = self.summary.get("date") or self.summary.get("created")
        if stamp:
            return str(stamp)
        mtime = RunDir(self.dir).summary_file.stat().st_mtime
        return dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
