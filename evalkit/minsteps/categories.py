"""Minimum useful steps per (scheduler, category): the per-seed rule, unchanged, over one category's (prompt, seed)
units only. Text rendering, counting and fine texture keep improving long after a landscape has settled, so a
suite's answer for the whole run can hide the categories that need more steps.

Same tolerances, same 95% bound, means and paired-bootstrap intervals over the category's units alone, broken images
counted per category. The distribution rule (CMMD/KID) judges the run as a whole: a set metric needs far more images
than one category holds. A category with fewer than MIN_UNITS units is named but not judged: a percentile bootstrap
over a handful of units gives intervals that cover far less often than 95%.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..metrics import METRICS
from ..metrics.base import CONVERGENCE
from ..stats.bootstrap import bootstrap_means
from ..store.tables import UNIT_COLUMN, is_broken
from ..sweep.plan import REFERENCE, SWEEP
from ..sweep.schedulers import SCHEDULERS
from .perseed import evidence, judges
from .rule import decide

MIN_UNITS = 10  # (prompt, seed) units a category needs before it is judged

RULE = (f"Per category: the same rule over that category's (prompt, seed) units only (means and paired-bootstrap "
        f"intervals over them, the same tolerances); a category with fewer than {MIN_UNITS} units is not judged. "
        "The distribution rule judges the run as a whole, not per category.")


def categories_of(images: pd.DataFrame) -> pd.DataFrame:
    """prompt_id -> category (and challenge) of the sweep's prompts; empty when the prompts have no categories."""
    if "category" not in images:
        return pd.DataFrame(columns=["prompt_id", "category", "challenge"])
    labels = images[images.role == SWEEP][["prompt_id", "category", "challenge"]].drop_duplicates("prompt_id")
    return labels if (labels.category != "").any() else labels.iloc[:0]


def summarize_categories(values: pd.DataFrame, images: pd.DataFrame, gates: dict[str, float]) -> dict[str, Any]:
    """summary.json's `min_steps.categories`: per category its units and, per scheduler, the per-seed answer
    ({min_steps, reached[, why]}); {} when the prompts carry no category."""
    labels = categories_of(images)
    if labels.empty:
        return {}
    sweep = images[images.role == SWEEP]
    broken_units = _broken_units(images)
    out: dict[str, Any] = {}
    for category, ids in labels.groupby("category").prompt_id:
        ids = set(ids)
        rows = sweep[sweep.prompt_id.isin(ids)]
        units = int(rows[["prompt_id", "seed"]].drop_duplicates().shape[0])
        entry: dict[str, Any] = {"units": units, "prompts": len(ids)}
        if units < MIN_UNITS:
            entry.update(judged=False, why=f"{units} (prompt, seed) units, fewer than {MIN_UNITS}: sample more of "
                                           "its prompts or add seeds")
        else:
            mine = values[values.prompt_id.isin(ids)]
            set_scores = _set_scores(mine, rows, broken_units)
            entry.update(judged=True, schedulers={
                scheduler: _answer(scheduler, sorted(set(part.steps)), gates, set_scores, mine)
                for scheduler, part in rows.groupby("scheduler")})
        out[str(category) or "(none)"] = entry
    return out


def _answer(scheduler: str, steps: list[int], gates: dict[str, float], set_scores: pd.DataFrame,
            values: pd.DataFrame) -> dict[str, Any]:
    stochastic = SCHEDULERS.get(scheduler).stochastic
    found = {m: evidence(m, t, scheduler, steps, set_scores, values) for m, t in gates.items()
             if judges(m, stochastic) and ((set_scores.metric == m) & (set_scores.scheduler == scheduler)).any()}
    return decide(steps, found, stochastic)


def _set_scores(values: pd.DataFrame, rows: pd.DataFrame, broken_units: set[tuple[str, int]]) -> pd.DataFrame:
    """Means and paired-bootstrap intervals over the category's units, with its images left unscored as broken per
    column: the image itself, and for convergence metrics also its reference."""
    table = bootstrap_means(values[values.role == SWEEP][[*UNIT_COLUMN, "metric", "value"]])
    own = [is_broken(f) for f in rows["flags"]]
    ref = [u in broken_units for u in zip(rows.prompt_id, rows.seed)]
    counts = rows.assign(own=own, any=[a or b for a, b in zip(own, ref)]).groupby(["scheduler", "steps"])[["own", "any"]]
    table = table.merge(counts.sum().reset_index(), on=["scheduler", "steps"], how="left").fillna({"own": 0, "any": 0})
    convergence = [METRICS.get(m).kind == CONVERGENCE for m in table.metric]
    table["broken"] = [int(a if c else o) for a, o, c in zip(table["any"], table["own"], convergence)]
    return table.drop(columns=["own", "any"])


def _broken_units(images: pd.DataFrame) -> set[tuple[str, int]]:
    """(prompt, seed) units whose reference is broken: nothing is judged against it."""
    refs = images[images.role == REFERENCE]
    return {(p, int(s)) for p, s, f in zip(refs.prompt_id, refs.seed, refs["flags"]) if is_broken(f)}
