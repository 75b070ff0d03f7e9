"""`evalkit compare`: one HTML page for several scored runs of the same prompts and seeds (models, releases).

The first run is the baseline: min-steps changes and the gate's verdict (with a rules file) are against it.
Figures reuse charts.py (colour by run instead of by scheduler), thumbnails grid.py, the page html.py and
template.html; the verdict is the gate's own evaluation, so it is what `evalkit gate` decides.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..config import parse_list, user_path
from ..errors import EvalkitError
from ..gate.comparable import check_comparable
from ..gate.judge import judge
from ..gate.outcome import Outcome
from ..gate.outputs import DELTA_NOTE, HEADER, SUMMARY_HEADER, rows, scheduler_summary, verdict
from ..gate.rules import Rule, load_rules
from ..store.files import atomic_write, check_output_file, make_dirs
from ..store.read import ScoredRun
from . import categories, charts, grid
from .html import chart, fill_page, nav, plotly_script, section
from .recommend import recommend
from .text import esc, fmt

STRIP_PAIRS, STRIP_STEPS = 4, 5


@dataclass
class ComparedRun:
    label: str
    data: ScoredRun  # what the report and the gate read, read once

    @property
    def dir(self) -> Path:
        return self.data.dir


def read_run(path: Path, label: str | None) -> ComparedRun:
    data = ScoredRun.read(path)
    return ComparedRun(label or data.config.model, data)


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """RUN or RUN=label (a folder whose own name holds '=' is taken whole)."""
    if user_path(spec).is_dir() or "=" not in spec:
        return user_path(spec), None
    path, _, label = spec.partition("=")
    if not label.strip():
        raise EvalkitError(f"empty label in {spec!r}: write RUN=label, or RUN alone for the model spec")
    return user_path(path), label.strip()


def read_runs(specs: list[str]) -> list[ComparedRun]:
    if not specs:
        raise EvalkitError("compare needs at least one run folder: evalkit compare RUN [RUN ...]")
    runs = [read_run(*parse_spec(spec)) for spec in specs]
    for rename in (lambda run, n: f"{run.label} ({run.dir.name})", lambda run, n: f"{run.label} #{n}"):
        counts = Counter(r.label for r in runs)  # same model twice (two releases of one spec): tell them apart
        seen: Counter = Counter()
        for run in runs:
            seen[run.label] += 1
            if counts[run.label] > 1:
                run.label = rename(run, seen[run.label])
    for run in runs[1:]:
        try:
            check_comparable(runs[0].data, run.data)
        except EvalkitError as exc:
            raise EvalkitError(f"{run.dir} vs {runs[0].dir}: {exc}") from None
    return runs


def gate_outcomes(rules: list[Rule], runs: list[ComparedRun]) -> list[tuple[ComparedRun, list[Outcome]]]:
    """Each later run judged against the first by the gate's own evaluation (as `gate_main` does)."""
    return [(run, judge(rules, runs[0].data, run.data)) for run in runs[1:]]


def write_comparison(specs: list[str], out: Path, rules: str | Path | None = None, strip_steps: str | None = None,
                     plotly_js: str = "inline") -> Path:
    """Read and check the runs, judge them if a rules file is given, write `out` atomically, return it."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise EvalkitError(f"--out {out} should be an .html file: e.g. --out compare.html")
    check_output_file("--out", out, "compare.html", make_parents=True)
    if rules is not None and len(specs) < 2:
        raise EvalkitError("--rules judges a candidate against a baseline: pass at least two runs")
    parsed = load_rules(rules) if rules is not None else None  # a bad rules file fails before any run is read
    runs = read_runs(specs)
    verdicts = gate_outcomes(parsed, runs) if parsed is not None else None
    steps = chosen_steps(runs, strip_steps)
    make_dirs(out.parent)
    atomic_write(out, render_comparison(runs, out, verdicts, steps, plotly_script(plotly_js, out)).encode("utf-8"))
    return out


def render_comparison(runs: list[ComparedRun], out: Path, verdicts, steps: list[int], plotly_tag: str) -> str:
    counter = iter(range(10_000))
    sections = ([("verdict", "Gate verdict")] if verdicts is not None else []) + [
        ("runs", "Runs"), ("min-steps", "Minimum useful steps")] + (
        [("categories", "Per category")] if any(categories.answers(r.data) for r in runs) else []) + [
        ("plateau", "Plateau curves"), ("pareto", "Speed vs quality"), ("strip", "Image strip")]
    content = {"verdict": lambda: verdict_section(runs, verdicts), "runs": lambda: runs_section(runs),
               "min-steps": lambda: min_steps_section(runs), "categories": lambda: category_section(runs),
               "plateau": lambda: plateau_section(runs, counter),
               "pareto": lambda: pareto_section(runs, counter), "strip": lambda: strip_section(runs, out, steps)}
    labels = " vs ".join(r.label for r in runs)
    body = (f'<h1>evalkit comparison <span class="model">{esc(labels)}</span></h1>' + nav(sections)
            + "".join(section(sid, content[sid](), sections) for sid, _ in sections))
    return fill_page(f"evalkit comparison · {labels}", body, plotly_tag)


def hue(index: int) -> str:
    return charts.PALETTE[index % len(charts.PALETTE)]


def schedulers(runs: list[ComparedRun]) -> list[str]:
    """Schedulers swept in every run, in the baseline's order."""
    return [s for s in runs[0].data.schedulers if all(s in r.data.schedulers for r in runs[1:])]


def metrics(runs: list[ComparedRun]) -> list[str]:
    return [m for m in runs[0].data.metrics if all(m in r.data.metrics for r in runs[1:])]


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------

def verdict_section(runs: list[ComparedRun], verdicts) -> str:
    parts = []
    for run, outcomes in verdicts:
        failed = [o for o in outcomes if not o.passed]
        state = "fail" if failed else "pass"
        summary = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                          for row in scheduler_summary(outcomes))
        failing = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row[:-1]) + f"<td>{esc(o.message)}</td></tr>"
                          for row, o in zip(rows(failed), failed))
        head = lambda cols: "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr></thead>"  # noqa: E731
        parts.append(
            f'<p class="verdict {state}"><b>{esc(verdict(outcomes))}</b>: {esc(run.label)} (candidate) vs '
            f"{esc(runs[0].label)} (baseline)</p>"
            f'<table class="data gate-summary">{head(SUMMARY_HEADER)}<tbody>{summary}</tbody></table>'
            + (f'<h3>Failing rules ({len(failed)})</h3><div class="table-scroll"><table class="data gate-failing">'
               f'{head(HEADER[:-1] + ["why"])}<tbody>{failing}</tbody></table></div>' if failed else ""))
    return "".join(parts) + f'<p class="note">{esc(DELTA_NOTE)}. Same rules and decisions as <code>evalkit gate</code>.</p>'


def runs_section(runs: list[ComparedRun]) -> str:
    rows = []
    for i, run in enumerate(runs):
        cfg, sweep = run.data.config, run.data.sweep
        try:
            pick = esc(recommend(run.data)["sentence"])
        except EvalkitError as exc:
            pick = f"none: {esc(exc)}"
        rows.append(f'<tr><td><span class="swatch" style="background:{hue(i)}"></span> <b>{esc(run.label)}</b>'
                    f'{" (baseline)" if i == 0 else ""}</td><td><code>{esc(cfg.model)}</code></td>'
                    f"<td><code>{esc(run.dir.resolve())}</code></td><td>{esc(run.data.created())}</td>"
                    f"<td>{len(sweep)}</td><td>{pick}</td></tr>")
    first = runs[0].data.sweep
    return ('<table class="data runs"><thead><tr><th>run</th><th>model</th><th>folder</th><th>date</th>'
            f'<th>sweep images</th><th>recommendation</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="note">Same {first["prompt_id"].nunique()} prompts and seeds '
            f'{esc(", ".join(str(s) for s in sorted(first["seed"].unique())))} in every run (checked as the gate does).'
            "</p>")


def min_steps_cell(run: ComparedRun, scheduler: str) -> tuple[str, int | None]:
    info = charts.min_steps_info(run.data).get(scheduler) or {}
    if not info:
        return "not computed", None
    if not info.get("reached") or info.get("min_steps") is None:
        return f'<span class="unreached" title="{esc(info.get("why", ""))}">not reached</span>', None
    return f"<b>{int(info['min_steps'])}</b> <small>({fmt(info.get('nfe'))} NFE)</small>", int(info["min_steps"])


def change_cell(base: int | None, other: int | None) -> str:
    if base is None and other is None:
        return "—"
    if other is None:
        return '<b class="worse">lost</b> (no longer reached)'
    if base is None:
        return '<b class="better">gained</b> (now reached)'
    diff = other - base
    css = "worse" if diff > 0 else "better" if diff < 0 else "same"
    return f'<b class="{css}">{diff:+d}</b>'


def min_steps_section(runs: list[ComparedRun]) -> str:
    head = "".join(f"<th>{esc(r.label)}</th>" for r in runs)
    head += "".join(f"<th>change {esc(r.label)}<br><small>vs {esc(runs[0].label)}</small></th>" for r in runs[1:])
    rows = []
    for scheduler in schedulers(runs):
        cells = [min_steps_cell(r, scheduler) for r in runs]
        changes = "".join(f"<td>{change_cell(cells[0][1], c[1])}</td>" for c in cells[1:])
        rows.append(f"<tr><td>{esc(scheduler)}</td>" + "".join(f"<td>{c[0]}</td>" for c in cells) + changes + "</tr>")
    rule = (runs[0].data.summary.get("min_steps") or {}).get("rule", "(not stated)")
    return (f'<table class="data min-steps-compare"><thead><tr><th>scheduler</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="rule"><b>Rule:</b> {esc(rule)}</p>'
            '<p class="note">change: candidate minus baseline minimum useful steps (positive = needs more steps).</p>')


def category_answer(run: ComparedRun, category: str, scheduler: str) -> tuple[str, int | None]:
    entry = categories.answers(run.data).get(category)
    if entry is None:
        return "—", None
    if not entry.get("judged"):
        return f'<span class="unjudged">not judged ({entry.get("units", "?")} units)</span>', None
    answer = (entry.get("schedulers") or {}).get(scheduler) or {}
    if answer.get("reached") and answer.get("min_steps") is not None:
        return str(int(answer["min_steps"])), int(answer["min_steps"])
    return '<span class="unreached">not reached</span>', None


def category_section(runs: list[ComparedRun]) -> str:
    """Min steps per category x scheduler: the first run's answer and each other run's change against it, the
    categories where any answer changed first, then the first run's hardest."""
    names = [name for name, _ in categories.ranked(runs[0].data)]
    names += sorted({n for r in runs[1:] for n in categories.answers(r.data)} - set(names))
    shown = schedulers(runs)
    rows = []
    for name in names:
        cells, changed = [], False
        for scheduler in shown:
            answers = [category_answer(r, name, scheduler) for r in runs]
            changes = [change_cell(answers[0][1], a[1]) for a in answers[1:]]
            changed |= any(a[1] != answers[0][1] for a in answers[1:])
            cells.append(f"<td>{answers[0][0]} → " + " · ".join(f"{a[0]} {c}" for a, c in zip(answers[1:], changes))
                         + "</td>")
        rows.append((not changed, f'<tr><th scope="row">{esc(name)}</th>{"".join(cells)}</tr>'))
    body = "".join(row for _, row in sorted(rows, key=lambda r: r[0]))  # stable: changed ones first
    head = "".join(f"<th>{esc(s)}</th>" for s in shown)
    return (f'<table class="data categories-compare"><thead><tr><th>category</th>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table><p class="note">Each cell: {esc(runs[0].label)}\'s minimum useful steps '
            f'→ {esc(" · ".join(r.label for r in runs[1:]))} and the change (positive = needs more steps); '
            'categories whose answer changed first.</p>')


def plateau_section(runs: list[ComparedRun], counter) -> str:
    names = metrics(runs)
    if not names or not schedulers(runs):
        return "<p>No metric and scheduler shared by every run.</p>"
    note = ("One chart per metric, one line per run (mean over prompt+seed units, shaded: its 95% bootstrap "
            "interval); pick the scheduler in the menu, the x axis with the buttons (steps, NFE, seconds). "
            "★ each run's min useful steps, ◇ knee.")
    return f'<p class="note">{note}</p>' + "".join(
        chart(plateau_figure(runs, m), counter, "plateau", m) for m in names)


def plateau_figure(runs: list[ComparedRun], metric: str) -> dict:
    modes, shared = ["steps", "nfe", "seconds"], schedulers(runs)
    traces, owner = [], []
    for scheduler in shared:
        for i, run in enumerate(runs):
            rows = charts.metric_rows(run.data, metric, scheduler)
            if rows.empty:
                continue
            band = charts.band_trace(run.data, rows, scheduler, modes, hue(i), run.label)
            made = ([band] if band else []) + [charts.line_trace(run.data, rows, scheduler, modes, hue(i), run.label)]
            made += charts.marker_traces(run.data, rows, scheduler, metric, modes, hue(i), run.label)
            traces += made
            owner += [scheduler] * len(made)
    keys = charts.legend_keys(modes)
    traces, owner = traces + keys, owner + [None] * len(keys)
    reached = [s for s in shared if any(charts.min_steps_info(r.data).get(s, {}).get("reached") for r in runs)]
    default = (reached or shared)[0]  # open on a scheduler whose min-steps markers show
    for (trace, _), who in zip(traces, owner):
        trace["visible"] = who in (None, default)
    menu = {"buttons": [{"label": s, "method": "restyle", "args": [{"visible": [o in (None, s) for o in owner]}]}
                        for s in shared], "active": shared.index(default), "x": 0.42, "y": 1.13, "xanchor": "left", "yanchor": "bottom",
            "pad": {"t": 0}}
    label = {"text": "scheduler", "x": 0.42, "y": 1.16, "xref": "paper", "yref": "paper", "xanchor": "right",
             "yanchor": "bottom", "showarrow": False, "xshift": -6}
    data = runs[0].data
    layout = {"annotations": [label], "margin": {"l": 60, "r": 20, "t": 100, "b": 50}, "height": 460,
              "title": {"text": f"<b>{charts.ptext(metric)}</b> · {charts.kind_label(data, metric)}", "y": 0.98,
                        "font": {"size": 14}},
              "yaxis": {"title": {"text": f"{charts.ptext(metric)} ({charts.direction(data, metric)})"}}}
    return charts.figure(traces, layout, modes, [menu])


def joint_points(runs: list[ComparedRun], metric: str) -> pd.DataFrame:
    return pd.concat([charts.pareto_points(r.data, metric).assign(run=r.label, run_index=i)
                      for i, r in enumerate(runs)], ignore_index=True)


def pareto_section(runs: list[ComparedRun], counter) -> str:
    metric = runs[0].data.main_metric
    if metric is None or metric not in metrics(runs):
        return "<p>No metric shared by every run.</p>"
    points, hib = joint_points(runs, metric), runs[0].data.higher_is_better(metric)
    front = charts.frontier(points, "nfe", hib).sort_values("nfe")
    rows = "".join(f"<tr><td>{esc(r.run)}</td><td>{esc(r.scheduler)}</td><td>{int(r.steps)}</td><td>{fmt(r.nfe)}</td>"
                   f"<td>{fmt(r.seconds, '.3g')}</td><td>{fmt(r.value)}</td></tr>" for r in front.itertuples())
    note = (f"Every (run, scheduler, steps) point of <b>{esc(metric)}</b> against its cost; the black line is the "
            "joint Pareto frontier (no point of any run is both cheaper and better). Open symbols: flagged "
            "not-convergent, left out of the frontier.")
    return (f'<p class="note">{note}</p>' + chart(pareto_figure(runs, metric, points, hib), counter, "pareto", metric)
            + f"<h3>Joint frontier by NFE: the cheapest setting at each quality of {esc(metric)}</h3>"
            '<table class="data frontier"><thead><tr><th>run</th><th>scheduler</th><th>steps</th><th>NFE</th>'
            f"<th>s / image</th><th>{esc(metric)}</th></tr></thead><tbody>{rows}</tbody></table>")


SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "pentagon", "hexagon", "star", "cross", "x"]


def pareto_figure(runs: list[ComparedRun], metric: str, points: pd.DataFrame, hib: bool) -> dict:
    modes, shared = ["seconds", "nfe"], runs[0].data.schedulers
    traces = []
    for i, run in enumerate(runs):
        rows = points[points["run"] == run.label]
        symbols = [SYMBOLS[shared.index(s) % len(SYMBOLS)] if s in shared else "circle" for s in rows["scheduler"]]
        symbols = [s if ok else s + "-open" for s, ok in zip(symbols, rows["convergent"])]
        trace = {"type": "scatter", "mode": "markers", "name": charts.ptext(run.label),
                 "marker": {"color": hue(i), "size": 9, "symbol": symbols},
                 "meta": [charts.ptext(run.label)], "customdata": [[s, int(k)] for s, k in zip(rows["scheduler"],
                                                                                           rows["steps"])],
                 "hovertemplate": "<b>%{meta[0]}</b> · %{customdata[0]} %{customdata[1]} steps<br>%{x:.3g} · "
                                  f"{charts.ptext(metric)} %{{y:.4g}}<extra></extra>"}
        traces.append((trace, charts.xy(rows, modes, charts.clean(rows["value"]))))
    traces += [({"type": "scatter", "mode": "markers", "name": scheduler, "hoverinfo": "skip",
                 "marker": {"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 8, "color": "#555"}},
                {m: ([None], [None]) for m in modes}) for i, scheduler in enumerate(shared)]  # symbol key
    front = {m: charts.frontier(points, m, hib) for m in modes}
    trace = {"type": "scatter", "mode": "lines+markers", "name": "joint Pareto frontier",
             "line": {"color": "#000", "width": 1.5, "shape": "hv"},
             "marker": {"symbol": "circle-open", "size": 15, "color": "#000", "line": {"width": 2}},
             "hovertemplate": "frontier: %{text}<br>%{x:.3g} · %{y:.4g}<extra></extra>"}
    traces.append((trace, {m: (charts.clean(f[m]), charts.clean(f["value"]),
                               [f"{charts.ptext(r)} · {charts.ptext(s)} {int(k)} steps"
                                for r, s, k in zip(f["run"], f["scheduler"], f["steps"])]) for m, f in front.items()}))
    data = runs[0].data
    layout = {"title": {"text": f"Speed vs quality across runs · <b>{charts.ptext(metric)}</b> (symbol: scheduler)",
                        "y": 0.98, "font": {"size": 14}},
              "yaxis": {"title": {"text": f"{charts.ptext(metric)} ({charts.direction(data, metric)})"}}}
    return charts.figure(traces, layout, modes)


def chosen_steps(runs: list[ComparedRun], text: str | None) -> list[int]:
    """The strip's step counts: the ones asked for (each swept in every run), or up to STRIP_STEPS spread out."""
    shared = sorted(set.intersection(*(set(int(s) for s in r.data.sweep["steps"]) for r in runs)))
    if text:
        try:
            asked = [int(s) for s in parse_list(text)]
        except ValueError:
            raise EvalkitError(f"--steps {text!r}: give comma-separated step counts, e.g. 4,8") from None
        missing = [s for s in asked if s not in shared]
        if missing:
            raise EvalkitError(f"--steps {missing[0]} was not swept in every run: pick from "
                               f"{','.join(map(str, shared))}")
        return asked
    if len(shared) <= STRIP_STEPS:
        return shared
    return [shared[i] for i in sorted(set(np.linspace(0, len(shared) - 1, STRIP_STEPS).round().astype(int)))]


def strip_section(runs: list[ComparedRun], out: Path, steps: list[int]) -> str:
    sweep = runs[0].data.sweep
    pairs = sorted(set(zip(sweep["prompt_id"], sweep["prompt"], sweep["seed"])))[:STRIP_PAIRS]
    if not pairs or not steps:
        return "<p>No images shared by the runs.</p>"
    bases = {r.label: quote(Path(os.path.relpath(r.dir.resolve(), out.resolve().parent)).as_posix()) + "/"
             for r in runs}
    options = "".join(f'<option value="{i}">{esc(prompt)} · seed {int(seed)}</option>'
                      for i, (_, prompt, seed) in enumerate(pairs))
    tables = "".join(strip_table(runs, i, prompt, int(seed), steps, bases) for i, (_, prompt, seed) in enumerate(pairs))
    total = len(set(zip(sweep["prompt_id"], sweep["seed"])))
    return (f'<p class="controls"><label for="grid-select">Prompt + seed</label> <select id="grid-select">{options}'
            f'</select></p><p class="note">The same prompt and seed in every run, per scheduler, at {len(steps)} step '
            f"count(s) (<code>--steps</code> picks others); {len(pairs)} of {total} prompt+seed pairs embedded. "
            "Click a thumbnail for the full PNG in its run folder.</p>"
            f'<div class="grid-scroll">{tables}</div>')


def strip_table(runs: list[ComparedRun], index: int, prompt: str, seed: int, steps: list[int],
                bases: dict[str, str]) -> str:
    head = "".join(f"<th>{s} steps</th>" for s in steps) + '<th class="ref">reference</th>'
    body = []
    for scheduler in schedulers(runs):
        for i, run in enumerate(runs):
            sweep, refs = run.data.sweep, run.data.references
            rows = sweep[(sweep["prompt"] == prompt) & (sweep["seed"] == seed) & (sweep["scheduler"] == scheduler)]
            lookup = {int(r.steps): r for _, r in rows.iterrows()}
            ref = refs[(refs["prompt"] == prompt) & (refs["seed"] == seed)]
            own = ref[ref["scheduler"] == scheduler]
            ref_row = (own if len(own) else ref).iloc[0] if len(ref) else None
            cells = "".join(grid.cell(run.data, lookup.get(s), f"{run.label}, {scheduler}, {s} steps", bases[run.label])
                            for s in steps)
            ref_cell = grid.cell(run.data, ref_row, f"{run.label}, reference", bases[run.label])
            cells += ref_cell.replace("<td", '<td class="ref"', 1) if ref_row is not None else ref_cell
            body.append(f'<tr><th><span class="swatch" style="background:{hue(i)}"></span> {esc(run.label)}<br>'
                        f"<small>{grid.breakable(scheduler)}</small></th>{cells}</tr>")
    hidden = "" if index == 0 else " hidden"
    return (f'<table class="grid strip" data-pair="{index}"{hidden}><thead><tr><th>run · scheduler</th>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table>')
