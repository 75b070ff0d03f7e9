"""The report's category view: minimum useful steps per category x scheduler (summary.json min_steps.categories),
hardest categories first, as a heat-map table whose long reasons are stated once below it, and the main metric's
mean curve per category for one scheduler at a time."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..minsteps.categories import MIN_UNITS
from ..store.read import ScoredRun
from ..sweep.plan import SWEEP
from .charts import ptext
from .text import Notes, clauses, esc


TOO_FEW = (f"fewer than {MIN_UNITS} (prompt, seed) units: too few to judge (a bootstrap over so few units covers far "
           "less than 95%); sample more of the category's prompts or add seeds")


def answers(data: ScoredRun) -> dict[str, Any]:
    return data.min_steps().get("categories") or {}


def hardness(entry: dict[str, Any]) -> tuple[int, float]:
    """Sort key, hardest first: judged before not judged, then the most steps any scheduler needs (not reached =
    more than any count), then the most schedulers not reaching."""
    if not entry.get("judged"):
        return (1, 0.0)
    counts = [a.get("min_steps") for a in (entry.get("schedulers") or {}).values()]
    worst = max((math.inf if c is None else c for c in counts), default=0)
    return (0, -worst - sum(c is None for c in counts) / 100)


def ranked(data: ScoredRun) -> list[tuple[str, dict[str, Any]]]:
    return sorted(answers(data).items(), key=lambda kv: (hardness(kv[1]), kv[0]))


def heat(steps: int, swept: list[int]) -> str:
    """A cell's background: green at the fewest swept counts, red at the most (by rank, as counts are spaced)."""
    rank = swept.index(steps) / max(len(swept) - 1, 1) if steps in swept else 1.0
    return f"hsl({int(120 * (1 - rank))}, 70%, 85%)"


def table(data: ScoredRun, notes: Notes) -> str:
    """Min steps per category (rows, hardest first) x scheduler (columns); each distinct reason once, numbered
    (`notes`: the page's, so a reason the min-steps table stated is cited by its number)."""
    schedulers = list(data.schedulers)
    swept = sorted(int(s) for s in data.sweep.steps.unique())
    body = []
    for name, entry in ranked(data):
        head = (f'<th scope="row">{esc(name)}</th><td class="num">{entry.get("prompts", "?")}</td>'
                f'<td class="num">{entry.get("units", "?")}</td>')
        if not entry.get("judged"):
            cells = (f'<td class="unjudged" colspan="{len(schedulers)}">not judged: {entry.get("units", "?")} units'
                     f'{notes.cite(TOO_FEW)}</td>')
        else:
            answer = entry.get("schedulers") or {}
            cells = "".join(cell(answer.get(s), swept, notes) for s in schedulers)
        body.append(f"<tr>{head}{cells}</tr>")
    header = "".join(f"<th>{esc(s)}</th>" for s in schedulers)
    return (f'<table class="data categories"><thead><tr><th>category (hardest first)</th><th>prompts</th>'
            f'<th>units</th>{header}</tr></thead><tbody>{"".join(body)}</tbody></table>{notes.items()}')


def cell(answer: dict[str, Any] | None, swept: list[int], notes: Notes) -> str:
    if answer is None:
        return '<td class="absent">—</td>'
    if answer.get("reached") and answer.get("min_steps") is not None:
        steps = int(answer["min_steps"])
        return f'<td class="num" style="background:{heat(steps, swept)}">{steps}</td>'
    why = answer.get("why", "")
    return f'<td class="unreached">not reached{"".join(notes.cite(c) for c in clauses(why) if c)}</td>'


def curves(data: ScoredRun, metric: str) -> pd.DataFrame:
    """Mean of `metric` per (category, scheduler, steps) over the category's swept units."""
    labels = data.sweep[["prompt_id", "category"]].drop_duplicates("prompt_id")
    values = data.values[(data.values.metric == metric) & (data.values.role == SWEEP)]
    values = values.merge(labels, on="prompt_id")
    return values.groupby(["category", "scheduler", "steps"], as_index=False).value.mean()


def figure(data: ScoredRun, metric: str) -> dict | None:
    """One trace per category (hardest first) for each scheduler; a menu shows one scheduler's at a time."""
    means = curves(data, metric)
    if means.empty:
        return None
    order = [name for name, _ in ranked(data) if name in set(means.category)]
    schedulers = [s for s in data.schedulers if s in set(means.scheduler)]
    traces, owner = [], []
    for scheduler in schedulers:
        for category in order:
            rows = means[(means.scheduler == scheduler) & (means.category == category)].sort_values("steps")
            traces.append({"type": "scatter", "mode": "lines+markers", "name": category,
                           "x": [int(s) for s in rows.steps], "y": [float(v) for v in rows.value],
                           "visible": scheduler == schedulers[0]})
            owner.append(scheduler)
    buttons = [{"label": s, "method": "update",
                "args": [{"visible": [o == s for o in owner]},
                         {"title.text": f"<b>{ptext(metric)}</b> per category · {ptext(s)}"}]} for s in schedulers]
    direction = "higher is better" if data.higher_is_better(metric) else "lower is better"
    layout = {"title": {"text": f"<b>{ptext(metric)}</b> per category · {ptext(schedulers[0])}", "y": 0.98,
                        "font": {"size": 14}},
              "xaxis": {"title": {"text": "steps"}, "type": "log"},
              "yaxis": {"title": {"text": f"{ptext(metric)} ({direction}), mean over the category's units"}},
              "margin": {"l": 60, "r": 20, "t": 70, "b": 50}, "height": 430, "hovermode": "closest",
              "legend": {"font": {"size": 11}, "title": {"text": "hardest first"}}, "font": {"size": 12},
              "updatemenus": [{"type": "dropdown", "buttons": buttons, "x": 0, "y": 1.13, "xanchor": "left",
                               "yanchor": "bottom", "showactive": True}]}
    return {"data": traces, "layout": layout}
