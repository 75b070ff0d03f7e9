"""Everything the report shows, read from the run folder's files only (no model, no metrics code)."""
from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import EvalkitError
from ..plateau import DEFAULT_TOLERANCES  # per-prompt view when min_steps was not computed
from ..store import RunDir

MAIN_METRICS = ("lpips", "ssim", "psnr")


@dataclass
class RunData:
    dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    images: pd.DataFrame  # the current sweep's rows: role 'sweep' and its references
    scores: pd.DataFrame  # per image: key, metric, value (+ image columns)
    set_scores: pd.DataFrame
    metrics: list[str] = field(default_factory=list)  # scored metrics, in display order

    @property
    def sweep(self) -> pd.DataFrame:
        return self.images[self.images["role"] == "sweep"]

    @property
    def references(self) -> pd.DataFrame:
        return self.images[self.images["role"] == "reference"]

    @property
    def schedulers(self) -> list[str]:
        present = set(self.sweep["scheduler"]) | set(self.set_scores["scheduler"])
        ordered = [s for s in self.config.get("schedulers", []) if s in present]
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
    run_dir = Path(run_dir)
    for name in ("config.toml", "images.parquet", "jobs.parquet"):
        if not (run_dir / name).is_file():
            raise EvalkitError(f"{run_dir} has no {name}: pass a run folder made by `evalkit run`")
    for name in ("summary.json", "set_scores.parquet"):
        if not (run_dir / name).is_file():
            raise EvalkitError(f"{run_dir} has no {name} yet: run `evalkit score {run_dir}` first")
    config = tomllib.loads((run_dir / "config.toml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    scores_file = run_dir / "scores.parquet"
    scores = pd.read_parquet(scores_file) if scores_file.is_file() else pd.DataFrame(columns=["key", "metric", "value"])
    images = RunDir(run_dir).current_images()
    images["flags"] = images["flags"].fillna("").astype(str)
    set_scores = pd.read_parquet(run_dir / "set_scores.parquet")
    if "flags" not in set_scores.columns:
        set_scores["flags"] = ""
    set_scores["flags"] = set_scores["flags"].fillna("").astype(str)
    scores = scores.merge(images[["key", "prompt_id", "prompt", "seed", "scheduler", "steps"]], on="key")
    return RunData(run_dir, config, summary, images, scores, set_scores, metric_order(set_scores, summary))


def metric_order(set_scores: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    present = set(set_scores["metric"])
    known = [m for m in MAIN_METRICS if m in present] + [m for m in summary.get("metrics", {}) if m in present]
    ordered = list(dict.fromkeys(known))
    return ordered + sorted(present - set(ordered))
