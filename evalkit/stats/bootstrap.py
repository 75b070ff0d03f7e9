"""The paired percentile bootstrap over (prompt, seed) units, its constants, and the one orientation sign.

Pairing: for one metric, every (scheduler, steps) column is resampled with the SAME unit indices, so
comparisons between columns are judged on the same prompts and seeds. Each metric gets a fresh
``np.random.default_rng(seed)``, so a metric's CIs do not depend on which other metrics are present.
Every interval evalkit prints is drawn here: per-image means (set_scores), the gate's paired deltas, set-metric
intervals (score and gate), the distribution rule and its noise floor each take their replicate count below.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

LEVEL = 0.95  # every interval is a 95% percentile interval
SEED = 0  # every resample starts from default_rng(SEED): reruns give the same intervals
N_BOOT = 2000  # per-image means (set_scores) and the gate's paired per-image deltas
SET_BOOTSTRAP = 200  # set metrics (FID/KID/CMMD) in set_scores and the gate: one kernel or decomposition per column
DISTRIBUTION_BOOT = 1000  # the distribution rule's interval per step count
FLOOR_BOOT = 200  # each split of the distribution rule's noise floor

UNIT = ["prompt_id", "seed"]
COLUMN = ["scheduler", "steps"]
REQUIRED = UNIT + COLUMN + ["metric", "value"]
OUT_COLUMNS = ["scheduler", "steps", "metric", "value", "ci_low", "ci_high", "n"]


def orientation(higher_is_better: bool) -> float:
    """+1 or -1: multiplied into a metric's values or differences, larger always means better (the one
    sign flip for lower-is-better metrics)."""
    return 1.0 if higher_is_better else -1.0


def quantiles(level: float = LEVEL) -> tuple[float, float]:
    """The lower and upper quantile of a central `level` interval."""
    alpha = (1.0 - level) / 2.0
    return alpha, 1.0 - alpha


def resample_draws(n_units: int, n_boot: int, seed: int = SEED, rng: np.random.Generator | None = None) -> np.ndarray:
    """n_boot × n_units unit indices drawn with replacement: row b is replicate b's resample (from `rng` when
    given: several draws from one stream)."""
    return (rng or np.random.default_rng(seed)).integers(0, n_units, size=(n_boot, n_units))


def counts_of(draws: np.ndarray, n_units: int) -> np.ndarray:
    """(B, n_units) float multiplicities of (B, m) drawn indices, so replicate sums are a matmul."""
    rows = len(draws)
    flat = (draws + n_units * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n_units).reshape(rows, n_units).astype(float)


def resample_counts(n_units: int, n_boot: int, seed: int = SEED) -> np.ndarray:
    """The multiplicities of `resample_draws`: what every paired bootstrap here resamples with."""
    return counts_of(resample_draws(n_units, n_boot, seed), n_units)


def percentile_ci(replicates: np.ndarray, level: float = LEVEL, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along `axis`; replicates that are NaN (drew no present unit) are skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN CI
        lo, hi = np.nanquantile(replicates, quantiles(level), axis=axis)
    return lo, hi


def _check(values: pd.DataFrame) -> None:
    """Fail loudly on missing columns or duplicate images, which would silently bias means."""
    missing = [c for c in REQUIRED if c not in values.columns]
    if missing:
        raise ValueError(f"values is missing columns {missing}")
    dup = values.duplicated(UNIT + COLUMN + ["metric"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate (unit, scheduler, steps, metric) rows in values")


def _wide(values: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Units × (scheduler, steps) table for one metric; absent images become NaN, units sorted."""
    sub = values[values["metric"] == metric]
    wide = sub.pivot(index=UNIT, columns=COLUMN, values="value")
    return wide.sort_index().sort_index(axis=1).astype(float)


def _boot_nanmeans(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-replicate nanmean of each column of x (units × cols): same resample for every column."""
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, x, 0.0)) / (counts @ present.astype(float))


def _check_level(level: float, n_boot: int) -> None:
    """Reject nonsense settings early rather than returning meaningless intervals."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _metric_table(wide: pd.DataFrame, metric: str, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Means, paired CIs and present-unit counts for every column of one metric's wide table."""
    x = wide.to_numpy()
    boot = _boot_nanmeans(x, resample_counts(x.shape[0], n_boot, seed))
    lo, hi = percentile_ci(boot, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(x, axis=0)
    cols = wide.columns.to_frame(index=False)
    return cols.assign(metric=metric, value=means, ci_low=lo, ci_high=hi, n=(~np.isnan(x)).sum(axis=0))


def bootstrap_means(values: pd.DataFrame, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> pd.DataFrame:
    """Mean over units per (scheduler, steps, metric), with a paired percentile-bootstrap CI."""
    _check(values)
    _check_level(level, n_boot)
    metrics = sorted(values["metric"].unique())
    parts = [_metric_table(_wide(values, m), m, n_boot, level, seed) for m in metrics]
    if not parts:
        return pd.DataFrame(columns=OUT_COLUMNS)
    out = pd.concat(parts, ignore_index=True)[OUT_COLUMNS]
    out["n"] = out["n"].astype(int)
    return out.sort_values(["metric", "scheduler", "steps"], ignore_index=True)


def paired_difference(values: pd.DataFrame, metric: str, a: tuple, b: tuple,
                      n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> dict:
    """Mean of a − b over units present in both, CI from resampling those units jointly."""
    _check(values)
    _check_level(level, n_boot)
    wide = _wide(values, metric)
    for col in (a, b):
        if tuple(col) not in wide.columns:
            raise KeyError(f"no values for (scheduler, steps)={tuple(col)} in metric {metric!r}")
    d = (wide[tuple(a)] - wide[tuple(b)]).dropna().to_numpy()
    if d.size == 0:
        raise ValueError(f"{tuple(a)} and {tuple(b)} share no units for metric {metric!r}")
    boot = _boot_nanmeans(d[:, None], resample_counts(d.size, n_boot, seed))
    lo, hi = percentile_ci(boot, level)
    return {"mean": float(d.mean()), "ci_low": float(lo[0]), "ci_high": float(hi[0]), "n": int(d.size)}
