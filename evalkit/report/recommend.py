"""Which (scheduler, steps) to ship: the cheapest setting that meets the min-steps bar, or the best within a budget.

Reads only what a scored run folder holds: summary.json's `min_steps` block (the min-steps answer: a scheduler
meets the bar from its `min_steps` count on), set_scores (the quality and its CI at each column) and the
per-image cost (NFE, measured seconds) from images.parquet.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from ..errors import EvalkitError
from ..store.read import ScoredRun
from ..store.tables import NOT_CONVERGENT
from ..stats.bootstrap import orientation

COSTS = {"nfe": "NFE", "seconds": "s/image"}


@dataclass(frozen=True)
class Setting:
    """One (scheduler, steps) column with its cost and quality on the chosen metric."""

    scheduler: str
    steps: int
    nfe: float
    seconds: float
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    meets_bar: bool

    def text(self) -> str:
        ci = f" (95% CI {self.ci_low:.4g}–{self.ci_high:.4g})" if self.ci_low is not None else ""
        value = f"{self.metric} {self.value:.4g}{ci}" if self.value is not None else f"{self.metric} not scored"
        return f"{self.scheduler} at {self.steps} steps: {self.nfe:.4g} NFE, {self.seconds:.3g} s/image, {value}"


def recommend(data: ScoredRun, metric: str | None = None, max_seconds: float | None = None,
              max_nfe: float | None = None, cost: str = "nfe") -> dict[str, Any]:
    """The pick, the runner-up and one sentence of why; bad input is an EvalkitError."""
    if max_seconds is not None and max_nfe is not None:
        raise EvalkitError("pass one budget: --max-seconds or --max-nfe, not both")
    if cost not in COSTS:
        raise EvalkitError(f"unknown cost {cost!r}: use nfe or seconds")
    metric = metric or data.main_metric
    if metric is None or metric not in data.metrics:
        have = ", ".join(data.metrics) or "none"
        raise EvalkitError(f"metric {metric!r} was not scored in {data.dir} (scored: {have}): pass --metric one of them")
    table = settings(data, metric)
    if max_seconds is not None or max_nfe is not None:
        cost, budget = ("seconds", max_seconds) if max_seconds is not None else ("nfe", max_nfe)
        ranked = best_within(table, cost, budget, data.higher_is_better(metric))
        why = (f"the best {metric} among the {len(ranked)} convergent setting(s) costing at most {budget:g} "
               f"{COSTS[cost]}" + ("" if ranked[0].meets_bar else "; it does NOT meet the min-steps bar"))
    else:
        ranked = cheapest_meeting_bar(table, cost)
        if not ranked:
            raise EvalkitError(f"no scheduler in {data.dir} reaches the min-steps bar: sweep more steps, or pass "
                               "--max-nfe / --max-seconds for the best quality within a budget")
        tolerances = ", ".join(f"{m} within {t:g}" for m, t in min_steps_block(data).get("tolerances", {}).items())
        why = (f"the cheapest setting by {COSTS[cost]} that meets the min-steps bar ({tolerances or 'the rule'} of "
               "the plateau at the 95% bound, at that count and every larger one)")
    left_out = len(data.uncertified())
    if left_out:  # their units have no convergence values: the pick never rests on them
        why += (f"; {left_out} unit(s) whose reference is uncertified are left out of every convergence value it "
                "rests on")
    return {"metric": metric, "cost": cost, "budget": {"max_seconds": max_seconds, "max_nfe": max_nfe},
            "pick": asdict(ranked[0]), "runner_up": asdict(ranked[1]) if len(ranked) > 1 else None,
            "why": why, "sentence": f"{ranked[0].text()}: {why}."}


def min_steps_block(data: ScoredRun) -> dict[str, Any]:
    block = data.summary.get("min_steps") or {}
    if "schedulers" not in block:
        raise EvalkitError(f"{data.dir}/summary.json has no min_steps: rescore it with `evalkit score {data.dir}`")
    return block


def settings(data: ScoredRun, metric: str) -> list[Setting]:
    """Every swept (scheduler, steps) column, with cost, quality and whether it meets the min-steps bar."""
    bars = {s: e.get("min_steps") if e.get("reached") else None
            for s, e in min_steps_block(data)["schedulers"].items()}
    rows = data.set_scores[data.set_scores["metric"] == metric].merge(data.speed(), on=["scheduler", "steps"])
    out = []
    for r in rows.itertuples():
        if NOT_CONVERGENT in str(r.flags):
            continue  # a stochastic sampler's convergence value says nothing about its quality
        bar = bars.get(r.scheduler)
        out.append(Setting(r.scheduler, int(r.steps), float(r.nfe), float(r.seconds), metric, _num(r.value),
                           _num(r.ci_low), _num(r.ci_high), bar is not None and int(r.steps) >= bar))
    return out


def cheapest_meeting_bar(table: list[Setting], cost: str) -> list[Setting]:
    """Each scheduler at its min useful steps, cheapest first (ties: fewer steps); then the other settings
    that meet the bar (more steps of the same schedulers), so a runner-up exists even with one scheduler."""
    order = lambda s: (getattr(s, cost), s.steps, s.scheduler)  # noqa: E731
    firsts: dict[str, Setting] = {}
    for s in sorted((s for s in table if s.meets_bar), key=lambda s: s.steps):
        firsts.setdefault(s.scheduler, s)
    rest = [s for s in table if s.meets_bar and s not in firsts.values()]
    return sorted(firsts.values(), key=order) + sorted(rest, key=order)


def best_within(table: list[Setting], cost: str, budget: float, higher_is_better: bool) -> list[Setting]:
    inside = [s for s in table if getattr(s, cost) <= budget and s.value is not None]
    if not inside:
        cheapest = min((getattr(s, cost) for s in table), default=math.nan)
        raise EvalkitError(f"no convergent setting costs at most {budget:g} {COSTS[cost]} (the cheapest costs "
                           f"{cheapest:.4g}): raise the budget")
    better_first = -orientation(higher_is_better)  # ascending sort key: the best value first
    return sorted(inside, key=lambda s: (better_first * s.value, getattr(s, cost), s.scheduler))


def recommendation_text(result: dict[str, Any]) -> str:
    lines = [f"recommend: {result['sentence']}"]
    if result["runner_up"]:
        lines.append(f"runner-up: {Setting(**result['runner_up']).text()}")
    return "\n".join(lines)


def _num(v) -> float | None:
    return float(v) if v is not None and pd.notna(v) else None
