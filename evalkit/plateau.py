"""Minimum useful steps per scheduler (a stated rule on CI bounds) and each curve's knee (descriptive).

Rule: for scheduler S, the minimum useful step count is the smallest swept count s such that, for every
gating metric, the distance from the plateau is within the metric's tolerance at the 95% confidence bound
(the worse end of the paired-bootstrap interval, not the mean), at s and at every larger swept count.
The plateau is the same-seed high-step reference for convergence metrics (distance = how far the mean is
from an image's value against itself, e.g. 1 - SSIM, LPIPS) and S's highest swept count for absolute
per-image metrics (distance = paired drop from it, e.g. CLIP score there minus here). Set metrics
(FID/KID) are reported, not gated: they have no per-unit pairing.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import METRICS
from .metrics.base import CONVERGENCE, SET
from .schedulers import SCHEDULERS
from .distribution import combine
from .stats import orientation, paired_difference, passing_from
from .store import SWEEP

# What a user sees at each default tolerance:
DEFAULT_TOLERANCES = {
    # mean LPIPS to the same-seed reference <= 0.05: side by side, only small texture differences remain
    "lpips": 0.05,
    # mean SSIM to the reference >= 0.95: the same picture; what differs is fine grain, visible only when
    # flipping between the two (on the exact model, Euler at 30 steps sits at 0.95, at 50 steps at 0.97)
    "ssim": 0.05,
    # CLIP score within 0.5 points (of 100) of the highest swept count: below typical run-to-run noise
    "clip_score": 0.5,
}

RULE = ("Minimum useful steps: the smallest swept step count from which, at that count and every larger swept "
        "count, each gating metric stays within its tolerance of the plateau at the 95% confidence bound (the "
        "worse end of the paired-bootstrap interval over prompt+seed units, not the mean). The plateau is the "
        "same-seed high-step reference for convergence metrics and the scheduler's highest swept count for "
        "absolute metrics such as CLIP score. Stochastic samplers are judged by this rule only on absolute metrics. "
        "A count with any broken (non-finite or blank) image, or broken reference, never passes.")


def summarize_plateau(set_scores: pd.DataFrame, values: pd.DataFrame, images: pd.DataFrame,
                      tolerances: dict[str, float] | None = None,
                      distribution: dict[str, Any] | None = None) -> dict[str, Any]:
    """`min_steps` for summary.json: per scheduler the rule's answer, cost there, evidence and knees.

    `values`: per-image rows (prompt_id, seed, scheduler, steps, metric, value) of the sweep.
    `distribution`: distribution.judge_run's block; with it every scheduler is also judged on the distribution
    rule (stochastic ones only by it and absolute metrics), and each entry names the rules that judged it.
    """
    scored = set(set_scores.metric)
    declared = {spec.name: spec.tolerance for spec in METRICS if spec.tolerance is not None}  # plugins
    gates = {m: t for m, t in (tolerances or {**DEFAULT_TOLERANCES, **declared}).items()
             if m in scored and METRICS.get(m).inputs != SET}
    sweep = images[images.role == SWEEP]
    out = {"rule": RULE, "tolerances": gates, "schedulers": {}}
    if distribution is not None:  # the distribution rule (evalkit/distribution.py)
        out.update(rule=RULE + " " + distribution.get("rule", ""), distribution={
            k: v for k, v in distribution.items() if k != "schedulers"})
    for scheduler in sorted(set(sweep.scheduler)):
        steps = sorted(set(sweep[sweep.scheduler == scheduler].steps))
        stochastic = SCHEDULERS.get(scheduler).stochastic
        judged = {m: t for m, t in gates.items() if not (stochastic and METRICS.get(m).kind == CONVERGENCE)}
        evidence = {m: _evidence(m, t, scheduler, steps, set_scores, values) for m, t in judged.items()}
        entry = _decide(steps, evidence, stochastic)
        if distribution is not None:
            dist = (distribution.get("schedulers") or {}).get(scheduler) or (
                {"why": distribution["why"]} if distribution.get("why") else None)
            kinds = sorted({"per-seed convergence" if METRICS.get(m).kind == CONVERGENCE else "absolute"
                            for m in evidence}, reverse=True)
            entry = {**combine(entry, kinds, dist), "distribution": dist}
        cost = sweep[(sweep.scheduler == scheduler) & (sweep.steps == entry.get("min_steps"))]
        entry.update(
            nfe=float(cost.nfe.mean()) if len(cost) else None,
            seconds_per_image=float(cost.seconds.mean()) if len(cost) else None,
            quality={m: {"value": _value(set_scores, m, scheduler, entry.get("min_steps")),
                         "plateau": ev[-1]["plateau"]} for m, ev in evidence.items()} if entry["reached"] else {},
            knee={m: knee(set_scores, m, scheduler) for m in sorted(scored)},
            evidence=evidence,
        )
        out["schedulers"][scheduler] = entry
    return out


def _evidence(metric: str, tolerance: float, scheduler: str, steps: list[int], set_scores: pd.DataFrame,
              values: pd.DataFrame) -> list[dict[str, Any]]:
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


def _decide(steps: list[int], evidence: dict[str, list[dict[str, Any]]], stochastic: bool) -> dict[str, Any]:
    if not evidence:
        why = ("stochastic sampler: it never converges to one image per seed, and no absolute gating metric "
               "(e.g. clip_score) was scored") if stochastic else "no gating metric was scored"
        return {"min_steps": None, "reached": False, "why": why}
    passing = [all(ev[i]["pass"] for ev in evidence.values()) for i in range(len(steps))]
    first = passing_from(passing)
    if first == len(steps):
        broken = {m: ev[-1]["broken"] for m, ev in evidence.items() if ev[-1].get("broken")}
        if broken:
            return {"min_steps": None, "reached": False,
                    "why": f"broken (non-finite or blank) images at {steps[-1]} steps ("
                           f"{', '.join(f'{m}: {k} unscored' for m, k in broken.items())}): fix the model's output"}
        failing = [m for m, ev in evidence.items() if not ev[-1]["pass"]]
        return {"min_steps": None, "reached": False,
                "why": f"not within tolerance even at {steps[-1]} steps ({', '.join(failing)}): sweep more steps"}
    return {"min_steps": int(steps[first]), "reached": True}


def _value(set_scores: pd.DataFrame, metric: str, scheduler: str, steps: int | None) -> float | None:
    row = set_scores[(set_scores.metric == metric) & (set_scores.scheduler == scheduler) & (set_scores.steps == steps)]
    return float(row.value.iloc[0]) if len(row) else None


def knee(set_scores: pd.DataFrame, metric: str, scheduler: str) -> int | None:
    """Kneedle on the mean curve against log(steps): the swept count farthest above the chord of the
    normalised, improving curve. Descriptive only; the rule above decides."""
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
