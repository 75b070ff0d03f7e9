"""Plotly figures as plain JSON-able dicts (rendered by the one embedded plotly.js).

Every trace carries its x (and y) for each x-axis mode, so one `update` button per mode swaps them all.
Text shown by plotly (names, hover) is HTML-escaped: plotly.js decodes entities and displays them as text.
"""
from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from ..store.read import ScoredRun
from ..store.tables import NOT_CONVERGENT, SMALL_N
from ..stats.bootstrap import orientation

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
X_LABELS = {"steps": "steps", "nfe": "NFE (denoiser calls per image)", "seconds": "seconds per image"}
KIND_LABELS = {"convergence": "convergence to the high-step reference (same prompt and seed)",
               "alignment": "absolute quality: prompt alignment",
               "realism": "absolute quality: realism (image sets vs the reference set)"}


def ptext(value) -> str:
    """Text for plotly (legend, titles, hover): plotly.js parses a few tags and decodes &lt; &gt; &amp;, so
    escaping those shows user text literally; it does not decode &quot;, so quotes are left as they are.
    It also fills `%{...}` templates in trace names and titles: `{` as &#123; keeps user text out of them."""
    return html.escape(str(value), quote=False).replace("%{", "%&#123;")


def clean(values) -> list:
    """Plain floats for JSON; NaN/inf -> None (a gap in plotly)."""
    out = []
    for v in values:
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def color(data: ScoredRun, scheduler: str, alpha: float | None = None) -> str:
    names = data.schedulers
    hex_ = PALETTE[names.index(scheduler) % len(PALETTE)] if scheduler in names else "#333333"
    return hex_ if alpha is None else rgba(hex_, alpha)


def rgba(hex_: str, alpha: float) -> str:
    r, g, b = (int(hex_[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def kind_label(data: ScoredRun, metric: str) -> str:
    info = data.metric_info(metric)
    kind = info.get("kind", "unknown")
    label = KIND_LABELS.get(kind, f"absolute quality: {kind}" if kind != "unknown" else "kind: unknown")
    return f"{label}; plugin {info['plugin']}" if info.get("plugin") else label


def direction(data: ScoredRun, metric: str) -> str:
    return "higher is better" if data.higher_is_better(metric) else "lower is better"


def metric_rows(data: ScoredRun, metric: str, scheduler: str) -> pd.DataFrame:
    rows = data.set_scores[(data.set_scores["metric"] == metric) & (data.set_scores["scheduler"] == scheduler)]
    rows = rows.merge(data.speed(), on=["scheduler", "steps"], how="left")
    return rows.sort_values("steps").reset_index(drop=True)


def mode_buttons(traces: list[tuple[dict, dict]], modes: list[str]) -> dict:
    """An updatemenu whose buttons set every trace's x/y for one x-axis mode."""
    buttons = []
    for mode in modes:
        restyle = {"x": [per_mode[mode][0] for _, per_mode in traces],
                   "y": [per_mode[mode][1] for _, per_mode in traces]}
        if any(len(per_mode[mode]) > 2 for _, per_mode in traces):
            restyle["text"] = [per_mode[mode][2] if len(per_mode[mode]) > 2 else None for _, per_mode in traces]
        buttons.append({"label": X_LABELS[mode].split(" (")[0], "method": "update",
                        "args": [restyle, {"xaxis.title.text": X_LABELS[mode], "xaxis.autorange": True}]})
    return {"type": "buttons", "direction": "right", "buttons": buttons, "x": 0, "y": 1.13, "xanchor": "left",
            "yanchor": "bottom", "showactive": True, "pad": {"r": 4, "t": 0}}


def scale_buttons() -> dict:
    buttons = [{"label": label, "method": "relayout", "args": [{"xaxis.type": kind, "xaxis.autorange": True}]}
               for label, kind in (("linear x", "linear"), ("log x", "log"))]
    return {"type": "buttons", "direction": "right", "buttons": buttons, "x": 1, "y": 1.13, "xanchor": "right",
            "yanchor": "bottom", "showactive": True, "pad": {"t": 0}}


def figure(traces: list[tuple[dict, dict]], layout: dict, modes: list[str], menus: list | None = None) -> dict:
    first = modes[0]
    for trace, per_mode in traces:
        trace["x"], trace["y"] = per_mode[first][:2]
        if len(per_mode[first]) > 2:
            trace["text"] = per_mode[first][2]
    base = {"margin": {"l": 60, "r": 20, "t": 70, "b": 50}, "height": 430, "hovermode": "closest",
            "xaxis": {"title": {"text": X_LABELS[first]}, "type": "linear"},
            "legend": {"font": {"size": 11}}, "font": {"size": 12}}
    base.update(layout)
    base["updatemenus"] = [mode_buttons(traces, modes), scale_buttons()] + (menus or [])
    return {"data": [t for t, _ in traces], "layout": base}


def xy(rows: pd.DataFrame, modes: list[str], y: list) -> dict:
    return {mode: (clean(rows[mode]), y) for mode in modes}


def band_trace(data: ScoredRun, rows: pd.DataFrame, scheduler: str, modes: list[str], hue: str | None = None,
               label: str | None = None) -> tuple[dict, dict] | None:
    """The CI band; `hue`/`label` override the scheduler's colour and name (a comparison colours by run)."""
    ok = rows.dropna(subset=["ci_low", "ci_high"])
    if ok.empty:
        return None
    per_mode = {m: (clean(list(ok[m]) + list(ok[m])[::-1]), clean(list(ok["ci_high"]) + list(ok["ci_low"])[::-1]))
                for m in modes}
    label = label or scheduler
    trace = {"type": "scatter", "mode": "lines", "fill": "toself", "fillcolor": rgba(hue or color(data, scheduler), 0.15),
             "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, "legendgroup": label,
             "name": f"{label} 95% CI"}
    return trace, per_mode


def line_trace(data: ScoredRun, rows: pd.DataFrame, scheduler: str, modes: list[str], hue: str | None = None,
               label: str | None = None) -> tuple[dict, dict]:
    flags = [str(f) for f in rows["flags"]]
    flagged = any(NOT_CONVERGENT in f for f in flags)
    symbols = ["x" if SMALL_N in f else ("circle-open" if NOT_CONVERGENT in f else "circle") for f in flags]
    custom = [[int(s), _num(n), _num(sec), _num(lo), _num(hi), int(k), f or "none"]
              for s, n, sec, lo, hi, k, f in zip(rows["steps"], rows["nfe"], rows["seconds"], rows["ci_low"],
                                                 rows["ci_high"], rows["n"], flags)]
    label = label or scheduler
    trace = {"type": "scatter", "mode": "lines+markers", "name": ptext(label) + (" (not convergent)" if flagged else ""),
             "legendgroup": label, "meta": {"scheduler": scheduler, "role": "line"},
             "line": {"color": hue or color(data, scheduler), "width": 2, "dash": "dash" if flagged else "solid"},
             "marker": {"symbol": symbols, "size": 7}, "customdata": custom,
             "hovertemplate": (f"<b>{ptext(scheduler)}</b><br>steps %{{customdata[0]}} · NFE %{{customdata[1]:.3g}}"
                               " · %{customdata[2]:.3g} s/image<br>value %{y:.4g} (95% CI %{customdata[3]:.4g}"
                               " – %{customdata[4]:.4g}, n %{customdata[5]})<br>flags: %{customdata[6]}"
                               "<extra></extra>")}
    if label != scheduler:  # in meta, not the template: a label may contain %{...}
        trace["meta"]["label"] = ptext(label)
        trace["hovertemplate"] = "<b>%{meta.label}</b> · " + trace["hovertemplate"]
    return trace, xy(rows, modes, clean(rows["value"]))


def _num(v) -> float | None:
    return clean([v])[0]


def min_steps_info(data: ScoredRun) -> dict[str, Any]:
    return ((data.summary.get("min_steps") or {}).get("schedulers") or {})


def marker_traces(data: ScoredRun, rows: pd.DataFrame, scheduler: str, metric: str, modes: list[str],
                  hue: str | None = None, label: str | None = None) -> list:
    info = min_steps_info(data).get(scheduler) or {}
    marks = []
    if info.get("reached") and info.get("min_steps") is not None:
        marks.append(("min useful steps", info["min_steps"], "star", 15))
    knee = (info.get("knee") or {}).get(metric)
    if knee is not None:
        marks.append(("knee", knee, "diamond-open", 13))
    out, group = [], label or scheduler
    for mark, steps, symbol, size in marks:
        at = rows[rows["steps"] == steps]
        if at.empty:
            continue
        trace = {"type": "scatter", "mode": "markers", "name": f"{ptext(group)} {mark}", "legendgroup": group,
                 "showlegend": False, "meta": {"scheduler": scheduler, "role": mark},
                 "marker": {"symbol": symbol, "size": size, "color": hue or color(data, scheduler),
                            "line": {"width": 1.5, "color": "#000"}},
                 "hovertemplate": f"<b>{ptext(scheduler)}</b>: {mark} = {int(steps)} steps<br>"
                                  "value %{y:.4g}<extra></extra>"}
        out.append((trace, xy(at, modes, clean(at["value"]))))
    return out


def legend_keys(modes: list[str]) -> list[tuple[dict, dict]]:
    keys = [("★ min useful steps", "star", 13), ("◇ knee", "diamond-open", 11), ("× small n / ○ not convergent", "x", 8)]
    return [({"type": "scatter", "mode": "markers", "name": name, "hoverinfo": "skip",
              "marker": {"symbol": sym, "size": size, "color": "#555"}}, {m: ([None], [None]) for m in modes})
            for name, sym, size in keys]


def plateau_figure(data: ScoredRun, metric: str) -> dict:
    modes = ["steps", "nfe", "seconds"]
    traces: list[tuple[dict, dict]] = []
    for scheduler in data.schedulers:
        rows = metric_rows(data, metric, scheduler)
        if rows.empty:
            continue
        band = band_trace(data, rows, scheduler, modes)
        traces += ([band] if band else []) + [line_trace(data, rows, scheduler, modes)]
        traces += marker_traces(data, rows, scheduler, metric, modes)
    traces += legend_keys(modes)
    layout = {"title": {"text": f"<b>{ptext(metric)}</b> · {kind_label(data, metric)}", "y": 0.98,
                        "font": {"size": 14}},
              "yaxis": {"title": {"text": f"{ptext(metric)} ({direction(data, metric)})"}}}
    return figure(traces, layout, modes)


def pareto_points(data: ScoredRun, metric: str) -> pd.DataFrame:
    rows = data.set_scores[data.set_scores["metric"] == metric]
    rows = rows.merge(data.speed(), on=["scheduler", "steps"], how="inner").dropna(subset=["value"])
    rows = rows.assign(convergent=~rows["flags"].str.contains(NOT_CONVERGENT))
    return rows.reset_index(drop=True)


def frontier(points: pd.DataFrame, x: str, higher_is_better: bool) -> pd.DataFrame:
    """Points no other (convergent) point beats on both cost x and quality."""
    pts = points[points["convergent"]]
    pts = pts.assign(better=orientation(higher_is_better) * pts["value"]).sort_values([x, "better"],
                                                                                     ascending=[True, False])
    keep, best = [], None
    for idx, value in zip(pts.index, pts["better"]):
        if best is None or value > best:
            keep.append(idx)
            best = value
    return pts.loc[keep].drop(columns="better")


def pareto_figure(data: ScoredRun, metric: str) -> dict:
    modes = ["seconds", "nfe"]
    points, hib = pareto_points(data, metric), data.higher_is_better(metric)
    traces: list[tuple[dict, dict]] = []
    for scheduler in data.schedulers:
        rows = points[points["scheduler"] == scheduler]
        if rows.empty:
            continue
        convergent = bool(rows["convergent"].all())
        trace = {"type": "scatter", "mode": "markers", "name": scheduler + ("" if convergent else " (not convergent)"),
                 "marker": {"color": color(data, scheduler), "size": 8,
                            "symbol": "circle" if convergent else "circle-open"},
                 "customdata": [[int(s)] for s in rows["steps"]],
                 "hovertemplate": f"<b>{ptext(scheduler)}</b> · %{{customdata[0]}} steps<br>%{{x:.3g}}"
                                  f" · {ptext(metric)} %{{y:.4g}}<extra></extra>"}
        traces.append((trace, xy(rows, modes, clean(rows["value"]))))
    front = {m: frontier(points, m, hib) for m in modes}
    trace = {"type": "scatter", "mode": "lines+markers", "name": "Pareto frontier",
             "line": {"color": "#000", "width": 1.5, "shape": "hv"},
             "marker": {"symbol": "circle-open", "size": 14, "color": "#000", "line": {"width": 2}},
             "hovertemplate": "frontier: %{text}<br>%{x:.3g} · %{y:.4g}<extra></extra>"}
    traces.append((trace, {m: (clean(f[m]), clean(f["value"]),
                               [f"{ptext(s)} {int(k)} steps" for s, k in zip(f["scheduler"], f["steps"])])
                           for m, f in front.items()}))
    layout = {"title": {"text": f"Speed vs quality · <b>{ptext(metric)}</b>",
                        "y": 0.98, "font": {"size": 14}},
              "yaxis": {"title": {"text": f"{ptext(metric)} ({direction(data, metric)})"}}}
    return figure(traces, layout, modes)
