"""summary.json's `min_steps`: per scheduler, the one answer from every rule that can judge it, with cost, quality
at the answer, knees and evidence. Exhaustive min-steps, the adaptive search and the self-test all call it."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..sweep.plan import SWEEP
from ..sweep.schedulers import SCHEDULERS
from .categories import RULE as CATEGORY_RULE
from .categories import summarize_categories
from .perseed import RULE, evidence, gating_tolerances, judges, kind_of, knee, value_at
from .rule import Evidence, combine, decide


def summarize_min_steps(set_scores: pd.DataFrame, values: pd.DataFrame, images: pd.DataFrame,
                        tolerances: dict[str, float] | None = None,
                        distribution: dict[str, Any] | None = None) -> dict[str, Any]:
    """`min_steps` for summary.json: per scheduler the rules' answer, cost there, evidence and knees.

    `values`: per-image rows (prompt_id, seed, scheduler, steps, metric, value) of the sweep.
    `distribution`: distribution.judge_run's block; with it every scheduler is also judged on the distribution
    rule (stochastic ones only by it and absolute metrics), and each entry names the rules that judged it.
    """
    gates = gating_tolerances(tolerances, set(set_scores.metric))
    sweep = images[images.role == SWEEP]
    out = {"rule": RULE, "tolerances": gates, "schedulers": {}}
    if distribution is not None:  # the distribution rule (distribution.py)
        out.update(rule=RULE + " " + distribution.get("rule", ""), distribution={
            k: v for k, v in distribution.items() if k != "schedulers"})
    for scheduler in sorted(set(sweep.scheduler)):
        out["schedulers"][scheduler] = scheduler_answer(scheduler, sweep[sweep.scheduler == scheduler], gates,
                                                        set_scores, values, distribution)
    categories = summarize_categories(values, images, gates)
    if categories:
        out.update(category_rule=CATEGORY_RULE, categories=categories)
    return out


def scheduler_answer(scheduler: str, rows: pd.DataFrame, gates: dict[str, float], set_scores: pd.DataFrame,
                     values: pd.DataFrame, distribution: dict[str, Any] | None) -> dict[str, Any]:
    """One scheduler's answer over the step counts its sweep `rows` hold."""
    steps = sorted(set(rows.steps))
    stochastic = SCHEDULERS.get(scheduler).stochastic
    found = {m: evidence(m, t, scheduler, steps, set_scores, values) for m, t in gates.items()
             if judges(m, stochastic)}
    entry = decide(steps, found, stochastic)
    if distribution is not None:
        dist = (distribution.get("schedulers") or {}).get(scheduler) or (
            {"why": distribution["why"]} if distribution.get("why") else None)
        kinds = sorted({kind_of(m) for m in found}, reverse=True)
        per_kind = {k: decide(steps, {m: ev for m, ev in found.items() if kind_of(m) == k}, stochastic) for k in kinds}
        entry = {**combine(entry, per_kind, dist), "distribution": dist}
    cost = rows[rows.steps == entry.get("min_steps")]
    entry.update(
        nfe=float(cost.nfe.mean()) if len(cost) else None,
        seconds_per_image=float(cost.seconds.mean()) if len(cost) else None,
        quality={m: {"value": value_at(set_scores, m, scheduler, entry.get("min_steps")),
                     "plateau": ev[-1]["plateau"]} for m, ev in found.items()} if entry["reached"] else {},
        knee={m: knee(set_scores, m, scheduler) for m in sorted(set(set_scores.metric))},
        evidence=found,
    )
    return entry


def judged_evidence(entry: dict[str, Any]) -> dict[str, Evidence]:
    """Every rule's evidence in a scheduler's answer: per gating metric, and the distribution rule's when it judged.
    A count passes for the answer when all of them pass there."""
    dist = entry.get("distribution") or {}
    return {**entry.get("evidence", {}), **({"distribution": dist["evidence"]} if "evidence" in dist else {})}
