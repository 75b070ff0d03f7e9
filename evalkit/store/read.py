"""`ScoredRun`: the one read model of a scored run folder, read and checked once. The report, compare, recommend,
the gate, the min-steps search, the self-test and the CLI read a run through it and nothing else."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import SweepConfig, load_config
from ..errors import EvalkitError
from ..metrics import METRICS
from ..sweep.plan import REFERENCE, SWEEP
from .files import BOOL, NUMBER, TEXT, WHOLE, fits, held, or_empty, read_json
from .folder import RESCORE, RunDir
from .tables import CERTIFICATION_COLUMNS, UNCERTIFIED, has_flag, is_broken, join_values, sweep_values

Column = tuple[str, int]  # (scheduler, steps)
# The quality metric readers lead with when none is named (recommend, the report's Pareto and per-prompt views):
# the first of these that was scored, else the first scored metric.
PREFERRED_METRICS = ("lpips", "ssim", "psnr")
REFERENCES = "references"  # `broken(REFERENCES)`: the run's reference images rather than a scheduler's

# The summary.json fields readers use, and what each holds (`check_summary`). A kind (files.TEXT, ...), [spec]: a list
# of spec, {"*": spec}: an object whose every value is spec, {field: spec}: an object whose fields, when present,
# are spec (others are left alone: the stages add facts readers don't use).
_ANSWER = {"min_steps": or_empty(WHOLE), "reached": or_empty(BOOL), "why": or_empty(TEXT)}
_ENTRY = {**_ANSWER, "nfe": or_empty(NUMBER), "seconds_per_image": or_empty(NUMBER),
          "quality": {"*": {"value": or_empty(NUMBER), "plateau": or_empty(NUMBER)}}, "knee": {"*": or_empty(WHOLE)},
          "rules": {"*": _ANSWER}, "judged_by": [TEXT], "distribution": {"metric": or_empty(TEXT)}}
SUMMARY_FIELDS = {
    "created": TEXT, "date": TEXT, "device": TEXT, "warnings": [TEXT], "broken_images": {"*": WHOLE},
    "config": {}, "skipped_metrics": {"*": TEXT}, "versions": {"*": or_empty(TEXT)},
    "metrics": {"*": {"kind": TEXT, "higher_is_better": or_empty(BOOL), "perfect": or_empty(NUMBER),
                      "backbone": or_empty(TEXT)}},
    "render": {"seconds": or_empty(NUMBER), "rendered": or_empty(WHOLE), "planned": or_empty(WHOLE)},
    "min_steps": {"rule": TEXT, "tolerances": {"*": NUMBER}, "schedulers": {"*": _ENTRY}},
}
# Config fields that change how fast a run comes, never what it holds (README: "none of these change a result"),
# and `out`, which every reader sets to the folder it reads: left out when config.toml is matched against the
# config the run was scored with.
UNSCORED_CONFIG = ("out", "device", "batch_size", "backend", "ray_address", "workers", "gpus_per_worker")


@dataclass
class ScoredRun:
    """A scored run folder. `values` is the one join of per-image scores to their (prompt, seed, scheduler,
    steps) place; broken images have no value (NaN), and set_scores counts them per column (`broken`)."""

    dir: Path
    config: SweepConfig
    images: pd.DataFrame  # the current sweep's rows (SWEEP), its references (REFERENCE) and checks (CHECK), plan order
    values: pd.DataFrame  # per image: key, metric, value, prompt_id, prompt, seed, scheduler, steps, role
    set_scores: pd.DataFrame  # SET_SCORE_COLUMNS
    summary: dict[str, Any]
    # references.parquet: each reference's certification (stages/certify.py); None for a run scored before
    # references were certified
    certification: pd.DataFrame | None = None

    FILES = ("config.toml", "images.parquet", "jobs.parquet", "scores.parquet", "set_scores.parquet", "summary.json")

    @classmethod
    def read(cls, path: str | os.PathLike) -> ScoredRun:
        """Read and check a scored run folder: every table typed (files.read_table), the summary's fields typed
        (`check_summary`), config.toml still the config that was scored (`check_config`), every image of the
        current sweep present and intact (RunDir.current_images). Anything else is one line naming the file."""
        folder = RunDir(path)
        for name in cls.FILES:
            if not (folder.path / name).is_file():
                raise EvalkitError(f"{folder.path} is not a scored run folder (no {name}): run `evalkit run` or "
                                   f"{RESCORE.format(dir=folder.path)} first")
        config = load_config(folder.config_file, out=str(folder.path))
        rescore = f"rescore with {RESCORE.format(dir=folder.path)}"
        summary = check_summary(read_json(folder.summary_file, rescore), folder.summary_file, rescore)
        check_config(config, summary, folder)
        images = folder.current_images()
        images = images.assign(flags=images["flags"].fillna("").astype(str))
        values = join_values(folder.read_scores(), images)
        return cls(folder.path, config, images, values, folder.read_set_scores(), summary, folder.read_references())

    # -- images ---------------------------------------------------------------------------------------------
    @property
    def sweep(self) -> pd.DataFrame:
        return self.images[self.images.role == SWEEP]

    @property
    def references(self) -> pd.DataFrame:
        return self.images[self.images.role == REFERENCE]

    def uncertified(self) -> pd.DataFrame:
        """References whose second solution disagrees (certify.UNCERTIFIED): their units have no convergence values."""
        table = self.certification
        return table[table.status == UNCERTIFIED] if table is not None else pd.DataFrame(columns=CERTIFICATION_COLUMNS)

    def sweep_values(self) -> pd.DataFrame:
        """Per-image values of the sweep, in the shape stats takes."""
        return sweep_values(self.values)

    @property
    def schedulers(self) -> list[str]:
        """Swept schedulers in the config's order (then any others the tables hold)."""
        # unique() first: iterating an arrow-backed column value by value cost ~60 ms per call at 200,000 images
        present = set(self.sweep["scheduler"].unique()) | set(self.set_scores["scheduler"].unique())
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


# -- checks on read ------------------------------------------------------------------------------------------------
def check_summary(summary: dict[str, Any], path: Path, fix: str) -> dict[str, Any]:
    """summary.json with every field readers use of the type they use it as (SUMMARY_FIELDS), else one line naming
    the file, the field, what it holds and the fix. It must also record the config it was scored with."""
    if not isinstance(summary.get("config"), Mapping):
        what = held(summary["config"]) if "config" in summary else "nothing"
        raise EvalkitError(f"{path}: field 'config' holds {what} where the config the run was scored with is "
                           f"expected: {fix}")
    _check_value(summary, SUMMARY_FIELDS, "", path, fix)
    return summary


def _check_value(value: Any, spec: Any, where: str, path: Path, fix: str) -> None:
    if isinstance(spec, str):
        ok, expected = fits(value, spec), spec
    elif isinstance(spec, list):
        ok, expected = isinstance(value, list), "a list"
    else:
        ok, expected = isinstance(value, Mapping), "an object"
    if not ok:
        raise EvalkitError(f"{path}: field {where!r} holds {held(value)} where {expected} is expected: {fix}")
    if isinstance(spec, list):
        for i, item in enumerate(value):
            _check_value(item, spec[0], f"{where}[{i}]", path, fix)
    elif isinstance(spec, dict):
        for key, item in value.items():
            inner = spec.get("*", spec.get(key))
            if inner is not None:
                _check_value(item, inner, f"{where}.{key}" if where else str(key), path, fix)


def check_config(config: SweepConfig, summary: dict[str, Any], folder: RunDir) -> None:
    """Refuse a run folder whose config.toml no longer matches the config its scores were made with.

    "Matches" means: the config config.toml resolves to and the one summary.json records under "config" are equal,
    compared as JSON values, in every field but UNSCORED_CONFIG: `out` (readers set it to the folder they read,
    so a moved or copied folder still reads) and the execution fields (they change how fast a result comes, never
    the result). A field the summary does not record (written before the field existed) must hold its default.
    `prompts` and `fid_reference` are compared as the absolute paths config.toml records: moving the run folder
    does not change them; a path edited after scoring (even to a copy of the same file) is refused until
    `evalkit score DIR`, which re-plans from config.toml and renders and computes only what changed (nothing, for
    the same prompts). What readers show of the prompts comes from the sweep's own rows, never from the file."""
    recorded = _as_json(summary["config"])
    current = _as_json(dataclasses.asdict(config))
    default = _as_json(dataclasses.asdict(SweepConfig()))
    changed = [k for k in current if k not in UNSCORED_CONFIG and current[k] != recorded.get(k, default.get(k))]
    if changed:
        field = changed[0]
        scored = _short(recorded[field]) if field in recorded else "(not recorded)"
        raise EvalkitError(
            f"{folder.config_file} no longer matches the config the run was scored with ({field} "
            f"{_short(current[field])}, scored with {scored}"
            f"{f'; {len(changed) - 1} more field(s) differ' if len(changed) > 1 else ''}): rescore with "
            f"{RESCORE.format(dir=folder.path)} (it re-plans from config.toml), or restore config.toml")


def _as_json(value: Any) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:59] + "…"
