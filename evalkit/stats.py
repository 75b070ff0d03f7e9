"""Per-(scheduler, steps, metric) means with paired percentile-bootstrap CIs over units (prompt_id, seed).

Pairing: for one metric, every (scheduler, steps) column is resampled with the SAME unit indices, so
comparisons between columns are judged on the same prompts and seeds. Each metric gets a fresh
``np.random.default_rng(seed)``, so a metric's CIs do not depend on which other metrics are present.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

UNIT = ["prompt_id", "seed"]
COLUMN = ["scheduler", "steps"]
REQUIRED = UNIT + COLUMN + ["metric", "value"]
OUT_COLUMNS = ["scheduler", "steps", "metric", "value", "ci_low", "ci_high", "n"]


def orientation(higher_is_better: bool) -> float:
    """+1 or -1: multiplied into a metric's values or differences, larger always means better (the one
    sign flip for lower-is-better metrics)."""
    return 1.0 if higher_is_better else -1.0


def passing_from(passing) -> int:
    """The first index from which every entry passes ("within tolerance from here on"); len if the last fails."""
    first = len(passing)
    while first > 0 and passing[first - 1]:
        first -= 1
    return first


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


def _resample_counts(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot × n_units multiplicities of one paired resample, so replicate sums are a matmul."""
    idx = np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))
    flat = (idx + n_units * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)


def _boot_nanmeans(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-replicate nanmean of each column of x (units × cols): same resample for every column."""
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, x, 0.0)) / (counts @ present.astype(float))


def _percentile_ci(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column; replicates that drew no present unit (NaN) are skipped."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN CI
        lo, hi = np.nanquantile(boot, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _check_level(level: float, n_boot: int) -> None:
    """Reject nonsense settings early rather than returning meaningless intervals."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _metric_table(wide: pd.DataFrame, metric: str, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Means, paired CIs and present-unit counts for every column of one metric's wide table."""
    x = wide.to_numpy()
    boot = _boot_nanmeans(x, _resample_counts(x.shape[0], n_boot, seed))
    lo, hi = _percentile_ci(boot, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(x, axis=0)
    cols = wide.columns.to_frame(index=False)
    return cols.assign(metric=metric, value=means, ci_low=lo, ci_high=hi, n=(~np.isnan(x)).sum(axis=0))


def bootstrap_means(values: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
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
                      n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
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
    boot = _boot_nanmeans(d[:, None], _resample_counts(d.size, n_boot, seed))
    lo, hi = _percentile_ci(boot, level)
    return {"mean": float(d.mean()), "ci_low": float(lo[0]), "ci_high": float(hi[0]), "n": int(d.size)}
