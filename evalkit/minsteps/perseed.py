"""The per-seed rule's evidence: how far each swept count is from the plateau on each gating per-image metric,
judged on the worse end of its paired-bootstrap interval, and each curve's knee (descriptive).

Rule: for scheduler S, the minimum useful step count is the smallest swept count s such that, for every
gating metric, the distance from the plateau is within the metric's tolerance at the 95% confidence bound
(the worse end of the paired-bootstrap interval, not the mean), at s and at every larger swept count.
The plateau is the same-seed high-step reference for convergence metrics (distance = how far the mean is
from an image's value against itself, e.g. 1 - SSIM, LPIPS) and S's highest swept count for absolute
per-image metrics (distance = paired drop from it, e.g. CLIP score there minus here). Set metrics
(FID/KID/CMMD) gate through the distribution rule (distribution.py), not here: they have no per-unit values.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from ..metrics import METRICS
from ..metrics.base import CONVERGENCE, SET
from ..stats.bootstrap import orientation, paired_difference
from .rule import Evidence

RULE = ("Minimum useful steps: the smallest swept step count from which, at that count and every larger swept "
        "count, each gating metric stays within its tolerance of the plateau at the 95% confidence bound (the "
        "worse end of the paired-bootstrap interval over prompt+seed units, not the mean). The plateau is the "
        "same-seed high-step reference for convergence metrics and the scheduler's highest swept count for "
        "absolute metrics such as CLIP score. Stochastic samplers are judged by this rule only on absolute metrics. "
        "A count with any broken (non-finite or blank) image, or broken reference, never passes.")


def default_tolerances() -> dict[str, float]:
    """Each registered metric's default min-steps tolerance, as its spec declares it, built-ins and plugins alike
    (what a difference that size means: spec.meaning, the README's table, the report)."""
    return {spec.name: spec.tolerance for spec in METRICS if spec.tolerance is not None}


def gating_tolerances(tolerances: dict[str, float] | None, scored: set[str] | list[str]) -> dict[str, float]:
    """The per-image metrics that gate, with their tolerances: the given ones (config or flag), else the defaults,
    among the `scored` metrics."""
    return {m: t for m, t in (tolerances or default_tolerances()).items()
            if m in scored and METRICS.get(m).inputs != SET}


def kind_of(metric: str) -> str:
    """The per-seed rule's kind of evidence a gating metric gives, as answers name it."""
    return "per-seed convergence" if METRICS.get(metric).kind == CONVERGENCE else "absolute"


def judges(metric: str, stochastic: bool) -> bool:
    """Whether `metric` judges a scheduler: a stochastic sampler never converges per seed."""
    return not (stochastic and METRICS.get(metric).kind == CONVERGENCE)


def evidence(metric: str, tolerance: float, scheduler: str, steps: list[int], set_scores: pd.DataFrame,
             values: pd.DataFrame) -> Evidence:
    """Per swept count: distance from the plateau (positive = worse), its CI, and pass/fail on the bound."""
    spec = METRICS.get(metric)
    rows = set_scores[(set_scores.metric == metric) & (set_scores.scheduler == scheduler)].set_index("steps")
    broken = rows["broken"] if "broken" in rows else pd.Series(0, index=rows.index)
    sign = orientation(spec.higher_is_better)
    out = []
    for s in steps:
        if spec.kind == CONVERGENCE:
            plateau = spec.perfect
            mean = sign * (plateau - rows.value[s])
            low, high = sorted([sign * (plateau - rows.ci_low[s]), sign * (plateau - rows.ci_high[s])])
        else:
            plateau = float(rows.value[steps[-1]])
            try:
                diff = paired_difference(values, metric, (scheduler, steps[-1]), (scheduler, s))
            except (KeyError, ValueError):  # no unit scored at both counts (broken images)
                diff = {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}
            mean, low, high = sign * diff["mean"], *sorted([sign * diff["ci_low"], sign * diff["ci_high"]])
        out.append({"steps": int(s), "distance": float(mean), "ci_low": float(low), "ci_high": float(high),
                    "plateau": float(plateau), "broken": int(broken.get(s, 0)),
                    "pass": bool(high <= tolerance) and not broken.get(s, 0)})
    return out


def knee(set_scores: pd.DataFrame, metric: str, scheduler: str) -> int | None:
    """Kneedle on the mean curve against log(steps): the swept count farthest above the chord of the
    normalised, improving curve. Descriptive only; the rule decides."""
    rows = set_scores[(set_scores.metric == metric) & (set_scores.scheduler == scheduler)].sort_values("steps")
    rows = rows.dropna(subset=["value"])
    if len(rows) < 3:
        return None
    x = np.log(rows.steps.to_numpy(dtype=float))
    y = rows.value.to_numpy(dtype=float) * orientation(METRICS.get(metric).higher_is_better)
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return None
    xn, yn = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
    return int(rows.steps.iloc[int(np.argmax(yn - xn))])


def value_at(set_scores: pd.DataFrame, metric: str, scheduler: str, steps: int | None) -> float | None:
    row = set_scores[(set_scores.metric == metric) & (set_scores.scheduler == scheduler) & (set_scores.steps == steps)]
    return float(row.value.iloc[0]) if len(row) else None
