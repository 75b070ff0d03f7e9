"""Everything the report shows, read from the run folder's files only (no model, no metrics code)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from ..plateau import DEFAULT_TOLERANCES  # per-prompt view when min_steps was not computed
from ..store import REFERENCE, SWEEP, ScoredRun

MAIN_METRICS = ("lpips", "ssim", "psnr")


class RunData:
    """The report's view of a scored run (`store.ScoredRun`: read and checked once), plus display helpers."""

    def __init__(self, run: ScoredRun):
        self.run = run
        self.dir, self.config, self.summary = run.dir, run.config, run.summary
        self.images = run.images.assign(flags=run.images["flags"].fillna("").astype(str))
        self.scores = run.values  # per image: key, metric, value + prompt_id, prompt, seed, scheduler, steps, role
        self.set_scores = run.set_scores
        self.metrics = metric_order(run.set_scores, run.summary)  # scored metrics, in display order

    @property
    def sweep(self) -> pd.DataFrame:
        return self.images[self.images["role"] == SWEEP]

    @property
    def references(self) -> pd.DataFrame:
        return self.images[self.images["role"] == REFERENCE]

    def broken(self) -> dict[str, int]:
        """Broken (non-finite or blank) images per column label, as summary.json counted them."""
        return self.summary.get("broken_images") or {}

    @property
    def schedulers(self) -> list[str]:
        present = set(self.sweep["scheduler"]) | set(self.set_scores["scheduler"])
        ordered = [s for s in self.config.schedulers if s in present]
        return ordered + sorted(present - set(ordered))

    @property
    def main_metric(self) -> str | None:
        for name in MAIN_METRICS:
            if name in self.metrics:
                return name
        return self.metrics[0] if self.metrics else None

    def metric_info(self, name: str) -> dict[str, Any]:
        return self.summary.get("metrics", {}).get(name, {})

    def higher_is_better(self, name: str) -> bool:
        return bool(self.metric_info(name).get("higher_is_better", True))

    def perfect(self, name: str) -> float | None:
        """The plateau of a convergence metric (its value at the reference); None for absolute metrics."""
        info = self.metric_info(name)
        if info.get("kind", "convergence") != "convergence":
            return None
        return info.get("perfect")

    def tolerance(self, name: str) -> tuple[float | None, str]:
        given = (self.summary.get("min_steps") or {}).get("tolerances", {})
        if name in given:
            return float(given[name]), "summary.json min_steps tolerances"
        if name in DEFAULT_TOLERANCES:
            return DEFAULT_TOLERANCES[name], "report default (min_steps not computed)"
        return None, "none"

    def date(self) -> str:
        stamp = self.summary.get("date") or self.summary.get("created")
        if stamp:
            return str(stamp)
        mtime = (self.dir / "summary.json").stat().st_mtime
        return dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def speed(self) -> pd.DataFrame:
        """Mean NFE and seconds per image per (scheduler, steps), from images.parquet."""
        return self.sweep.groupby(["scheduler", "steps"], as_index=False)[["nfe", "seconds"]].mean()


def load_run(run_dir: Path) -> RunData:
    return RunData(ScoredRun.read(run_dir))


def metric_order(set_scores: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    present = set(set_scores["metric"])
    known = [m for m in MAIN_METRICS if m in present] + [m for m in summary.get("metrics", {}) if m in present]
    ordered = list(dict.fromkeys(known))
    return ordered + sorted(present - set(ordered))
