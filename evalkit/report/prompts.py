"""Per-prompt view: which prompts plateau latest (the hard ones), from per-image scores.

Descriptive: each prompt's mean over its seeds against the tolerance (not the CI bound the min-steps rule uses,
which needs units to resample), decided by the same rule (minsteps/rule.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..minsteps.perseed import default_tolerances
from ..minsteps.rule import decide
from ..store.read import ScoredRun
from ..store.tables import NOT_CONVERGENT
from ..stats.bootstrap import orientation
from .charts import clean, direction, figure, ptext

HARD_COLORS = ["#d62728", "#ff7f0e", "#9467bd"]
# A suite has thousands of prompts: the chart draws the hardest CHART_PROMPTS, the table lists the hardest
# TABLE_PROMPTS, and the note (`shown_note`) counts every prompt by its median steps to plateau.
CHART_PROMPTS = 30
TABLE_PROMPTS = 100


def prompt_curves(data: ScoredRun, metric: str) -> pd.DataFrame:
    """Mean over seeds per (prompt, scheduler, steps)."""
    rows = data.values[data.values["metric"] == metric]
    return rows.groupby(["prompt_id", "prompt", "scheduler", "steps"], as_index=False)["value"].mean()


def plateau_steps(steps: np.ndarray, values: np.ndarray, tolerance: float, target: float | None,
                  higher_is_better: bool) -> float:
    """Smallest swept count from which the mean stays within tolerance of the plateau: `target` (the reference's
    value, for convergence metrics) or the value at the largest swept count; inf: not within by the last count.
    One curve as arrays, sorted by steps, without missing values."""
    if len(steps) == 0:
        return np.nan
    plateau = float(values[-1]) if target is None else target
    distances = orientation(higher_is_better) * (plateau - values)
    counts = [int(s) for s in steps]
    evidence = [{"steps": s, "distance": float(d), "pass": bool(d <= tolerance + 1e-12)}
                for s, d in zip(counts, distances)]
    answer = decide(counts, {"mean": evidence})
    return float(answer["min_steps"]) if answer["reached"] else np.inf


def stated_tolerance(data: ScoredRun, metric: str) -> tuple[float | None, str]:
    """The tolerance the per-prompt view uses, and where it comes from."""
    given = data.min_steps().get("tolerances", {})
    if metric in given:
        return float(given[metric]), "summary.json min_steps tolerances"
    defaults = default_tolerances()
    if metric in defaults:
        return defaults[metric], "report default (min_steps not computed)"
    return None, "none"


def effective_tolerance(data: ScoredRun, metric: str) -> float:
    given, _ = stated_tolerance(data, metric)
    if given is not None:
        return given
    values = data.set_scores.loc[data.set_scores["metric"] == metric, "value"].abs()
    return 0.02 * float(values.max()) if len(values) else 0.0  # stated in the page: 2% of the largest value


def judged_schedulers(data: ScoredRun, metric: str) -> list[str]:
    rows = data.set_scores[data.set_scores["metric"] == metric]
    flagged = set(rows[rows["flags"].str.contains(NOT_CONVERGENT)]["scheduler"])
    return [s for s in data.schedulers if s not in flagged]


def ranking(data: ScoredRun, metric: str) -> pd.DataFrame:
    """One row per prompt: steps to plateau per scheduler and their median over convergent schedulers,
    hardest (latest) first."""
    curves, tolerance = prompt_curves(data, metric), effective_tolerance(data, metric)
    target, hib = data.perfect(metric), data.higher_is_better(metric)
    table = plateau_table(curves, tolerance, target, hib).unstack("scheduler")
    judged = [s for s in judged_schedulers(data, metric) if s in table.columns]
    table = table[[s for s in data.schedulers if s in table.columns]]
    table["median"] = table[judged].median(axis=1) if judged else np.nan
    return table.reset_index().sort_values(["median", "prompt_id"], ascending=[False, True]).reset_index(drop=True)


def plateau_table(curves: pd.DataFrame, tolerance: float, target: float | None, higher_is_better: bool) -> pd.Series:
    """plateau_steps per (prompt_id, prompt, scheduler) curve of `curves` (prompt_curves), as a Series indexed
    by them. One sort and one pass over plain arrays: a pandas group per curve cost ~6 ms, a minute at 10,000
    prompts."""
    keys = ["prompt_id", "prompt", "scheduler"]
    curves = curves.sort_values([*keys, "steps"], kind="stable")
    groups = curves.groupby(keys, sort=False).size()  # contiguous blocks of the sorted table, in its order
    steps, values = curves["steps"].to_numpy(), curves["value"].to_numpy(float)
    present = ~np.isnan(values)
    answers = []
    for end, size in zip(np.cumsum(groups.to_numpy()), groups.to_numpy()):
        block = slice(end - size, end)
        kept = present[block]
        answers.append(plateau_steps(steps[block][kept], values[block][kept], tolerance, target, higher_is_better))
    return pd.Series(answers, index=groups.index, dtype=float).sort_index()


def steps_cell(value: float, largest: int) -> str:
    """A steps-to-plateau value as the page shows it (HTML): &gt;largest where never within, — where unknown."""
    if value != value:
        return "—"
    return f"&gt;{largest}" if value == float("inf") else f"{value:.3g}"


def shown_note(ranked: pd.DataFrame, largest: int) -> str:
    """What the chart and the table show of `ranked` (HTML), and every prompt counted by its median steps."""
    count = len(ranked)
    if count <= CHART_PROMPTS:
        return "The chart highlights the three hardest."
    table = f"the table lists the {TABLE_PROMPTS} hardest" if count > TABLE_PROMPTS else "the table lists them all"
    spread = ranked["median"].value_counts(dropna=False, sort=False).sort_index(na_position="last")
    counts = " · ".join(f"{steps_cell(value, largest)}: {k:,}" for value, k in spread.items())
    return (f"The chart draws the {CHART_PROMPTS} hardest of {count:,} prompts (the three hardest highlighted); "
            f"{table}. All {count:,} prompts by median steps to plateau: {counts}.")


def prompt_figure(data: ScoredRun, metric: str, ranked: pd.DataFrame) -> dict:
    """One line per prompt of `ranked`'s first CHART_PROMPTS (the hardest), per scheduler; a menu picks the
    scheduler."""
    shown = ranked.head(CHART_PROMPTS)
    curves = prompt_curves(data, metric)
    schedulers = [s for s in data.schedulers if s in set(curves["scheduler"].unique())]
    curves = curves[curves["prompt_id"].isin(set(shown["prompt_id"]))]
    by_curve = {key: curve for key, curve in curves.groupby(["prompt_id", "scheduler"], sort=False)}
    default = next(iter(judged_schedulers(data, metric)), schedulers[0])
    empty = curves.iloc[:0]
    traces, owner = [], []
    for scheduler in schedulers:
        for rank, row in shown.iterrows():
            curve = by_curve.get((row["prompt_id"], scheduler), empty)
            traces.append((prompt_trace(curve, row["prompt"], rank, scheduler == default), curve))
            owner.append(scheduler)
    menu = {"buttons": [{"label": s, "method": "restyle", "args": [{"visible": [o == s for o in owner]}]}
                        for s in schedulers], "active": schedulers.index(default), "x": 0, "y": 1.13,
            "xanchor": "left", "yanchor": "bottom", "pad": {"t": 0}}
    label = {"text": "scheduler", "x": 0, "y": 1.16, "xref": "paper", "yref": "paper", "xanchor": "right",
             "yanchor": "bottom", "showarrow": False, "xshift": -6}
    per_mode = [(t, {"steps": (list(map(int, c["steps"])), clean(c["value"]))}) for t, c in traces]
    layout = {"annotations": [label],
              "title": {"text": f"Per prompt · <b>{ptext(metric)}</b> (mean over seeds)",
                        "y": 0.98, "font": {"size": 14}},
              "yaxis": {"title": {"text": f"{ptext(metric)} ({direction(data, metric)})"}}, "height": 460}
    fig = figure(per_mode, layout, ["steps"], [menu])
    fig["layout"]["updatemenus"] = fig["layout"]["updatemenus"][1:]  # a single x mode needs no buttons
    return fig


def prompt_trace(curve: pd.DataFrame, prompt: str, rank: int, visible: bool) -> dict:
    short = prompt if len(prompt) <= 42 else prompt[:40] + "…"
    hard = rank < len(HARD_COLORS)
    return {"type": "scatter", "mode": "lines+markers", "visible": visible,
            "name": f"#{rank + 1} {ptext(short)}",
            "line": {"width": 3 if hard else 1, "color": HARD_COLORS[rank] if hard else "rgba(90,110,140,0.45)"},
            "marker": {"size": 5 if hard else 3},
            "meta": [f"#{rank + 1} {ptext(prompt)}"],  # in meta, not the template: a prompt may contain %{...}
            "hovertemplate": "%{meta[0]}<br>%{x} steps: %{y:.4g}<extra></extra>"}
