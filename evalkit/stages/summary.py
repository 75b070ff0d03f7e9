"""summary.json: what a scored run says beyond its tables, with its provenance (resolved config, device, versions,
git commit), warnings, skipped metrics with their fetch commands, and the stages' own facts (timings, min steps)."""
from __future__ import annotations

import dataclasses
import datetime
import platform
import subprocess
from importlib import metadata
from typing import Any

import pandas as pd

from ..config import PROJECT_ROOT, SweepConfig
from ..metrics import METRICS
from ..store.folder import RunDir
from ..store.tables import SMALL_N, broken_images
from ..sweep.schedulers import SCHEDULERS
from .certify import summarize
from .score import ScoreResult

PACKAGES = ("evalkit", "torch", "diffusers", "transformers", "open-clip-torch", "lpips", "torchmetrics", "numpy",
            "pandas")


def warnings_for(table: pd.DataFrame, config: SweepConfig, images: pd.DataFrame | None = None,
                 references: dict[str, Any] | None = None) -> list[str]:
    out = []
    for status, what in (("corrected", "corrected: the check disagreed, a tie-break at twice the steps sided with the "
                                        "check, which stands in for them"),
                         ("uncertified", "uncertified: no two of reference, check and tie-break agree (or the check "
                                         "is broken); left out of convergence metrics, failing the gate by default")):
        units = (references or {}).get(f"{status}_units") or []
        if units:
            named = ", ".join(f"{u['prompt_id']} seed {u['seed']}" for u in units[:8]) + (" ..." if len(units) > 8 else "")
            out.append(f"{len(units)} of {references['checked']} references {what}: {named}; a more accurate "
                       "reference_scheduler or more reference_steps avoids this")
    broken = broken_images(images) if images is not None else {}
    if broken:
        out.append(f"{sum(broken.values())} broken image(s) (non-finite or blank output), left unscored and failing "
                   f"the gate by default: {', '.join(f'{c}: {k}' for c, k in broken.items())}")
    for metric, rows in table[table["flags"].str.contains(SMALL_N)].groupby("metric"):
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
    references = summarize(result.references, config)
    summary = {
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "warnings": result.warnings + warnings_for(table, config, images, references),
        "broken_images": broken_images(images) if images is not None else {},
        "references": references,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        "device": device,
        "metrics": result.metrics,
        "skipped_metrics": result.skipped,
        "stochastic_schedulers": [s for s in config.schedulers if SCHEDULERS.get(s).stochastic],
        "versions": versions(),
        **(extra or {}),
    }
    run.write_summary(summary)
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
