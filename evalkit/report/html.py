"""Stage 3: one self-contained, offline report.html per run folder (or, with plotly_js="shared", one that loads
the plotly.min.js written beside it).

Layout: the run folder is read once (store.read.ScoredRun), `charts`/`prompts` build plotly figures as JSON,
`grid` embeds thumbnails, `references` writes the reference certification; this module writes the other sections and
fills `template.html`. User text (prompts, paths, warnings, reasons) is always HTML-escaped (`text.esc`); figure JSON
inside <script> has `<`, `>` and `&` escaped as \\u003c etc.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from ..config import check_plotly_js
from ..errors import EvalkitError
from ..metrics import METRICS
from ..store.files import atomic_write
from ..store.folder import RunDir
from ..store.read import ScoredRun
from ..sweep.plan import CHECK, REFERENCE, SWEEP
from . import categories, charts, grid, prompts, references
from .recommend import recommend
from .text import Notes, esc, fmt

TEMPLATE = Path(__file__).with_name("template.html")
SECTIONS = [("run", "Run"), ("references", "Reference certification"), ("min-steps", "Minimum useful steps"),
            ("categories", "Per category"), ("plateau", "Plateau curves"), ("pareto", "Speed vs quality"), ("grid", "Image grid"),
            ("prompts", "Per prompt")]


PLOTLY_FILE = "plotly.min.js"


def write_report(run_dir: Path, plotly_js: str = "inline") -> Path:
    """Read the run folder's files, write run_dir/report.html atomically, return its path."""
    path = RunDir(run_dir).report_file
    atomic_write(path, render_report(ScoredRun.read(run_dir), plotly_script(plotly_js, path)).encode("utf-8"))
    return path


def plotly_script(mode: str, page_path: Path) -> str:
    """The <script> that loads plotly.js: embedded in the page ("inline", one self-contained file), or
    ("shared") one plotly.min.js written beside the page and loaded by relative path, so a folder of pages
    carries it once."""
    if check_plotly_js(mode) == "inline":
        return "<script>" + get_plotlyjs().replace("</script", "<\\/script") + "</script>"
    source, target = get_plotlyjs().encode("utf-8"), page_path.parent / PLOTLY_FILE
    if not (target.is_file() and target.read_bytes() == source):
        atomic_write(target, source)
    return f'<script src="{PLOTLY_FILE}"></script>'


def fill_page(title: str, body: str, plotly_tag: str) -> str:
    """template.html with its fields filled in one pass, so text inside a field is never taken as a placeholder."""
    fields = {"title": esc(title), "plotly": plotly_tag, "body": body}
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], TEMPLATE.read_text())


def render_report(data: ScoredRun, plotly_tag: str | None = None) -> str:
    counter = iter(range(10_000))
    ranked = prompts.ranking(data, data.main_metric) if data.main_metric else None
    shown = [s for s in SECTIONS if s[0] != "categories" or categories.answers(data)]  # only a suite has categories
    notes = Notes("min-steps-note", skipped_links(data.summary))  # long reasons once per page, below their tables
    body = "".join([
        f'<h1>evalkit report <span class="model">{esc(data.config.model)}</span></h1>',
        nav(shown),
        section("run", header(data)),
        section("references", references.certification_section(data)),
        section("min-steps", min_steps_section(data, notes)),
        section("categories", category_section(data, counter, notes)) if categories.answers(data) else "",
        section("plateau", plateau_section(data, counter)),
        section("pareto", pareto_section(data, counter)),
        section("grid", grid.grid_section(data, grid_pairs(data, ranked))),
        section("prompts", prompt_section(data, ranked, counter)),
    ])
    return fill_page(f"evalkit · {data.config.model} · {data.dir.name}", body,
                     plotly_tag or plotly_script("inline", RunDir(data.dir).report_file))


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, no `<!--`, no entity surprises."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def chart(fig: dict, counter, kind: str, metric: str = "") -> str:
    chart_id = f"chart-{next(counter)}"
    return (f'<div class="chart" id="{chart_id}" data-kind="{kind}" data-metric="{esc(metric)}"></div>'
            f'<script type="application/json" class="chart-data" data-target="{chart_id}">{script_json(fig)}</script>')


def nav(sections: list[tuple[str, str]] = SECTIONS) -> str:
    links = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in sections)
    return f'<nav class="toc">{links}</nav>'


def section(sid: str, content: str, sections: list[tuple[str, str]] = SECTIONS) -> str:
    title = dict(sections)[sid]
    return f'<section id="{sid}"><h2>{title}</h2>{content}</section>'


def facts(rows: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def joined(values: Any) -> str:
    return esc(", ".join(str(v) for v in values)) if isinstance(values, (list, tuple)) else esc(values)


def header(data: ScoredRun) -> str:
    cfg, summary, sweep = data.config, data.summary, data.sweep
    render = summary.get("render") or {}
    versions = summary.get("versions") or {}
    version_text = " · ".join(f"{k} {v}" for k, v in versions.items() if v and k != "git_commit")
    commit = versions.get("git_commit")
    default = "model default"
    rows = [
        ("model", f"<b>{esc(cfg.model)}</b>" + exact_model_note(cfg.model)),
        ("date", esc(data.created())),
        ("run folder", f"<code>{esc(data.dir.resolve())}</code>"),
        ("schedulers", joined(list(cfg.schedulers))),
        ("steps", joined(list(cfg.steps))),
        ("prompts", f"{sweep['prompt'].nunique()} (<code>{esc(cfg.prompts)}</code>)"),
        ("seeds", joined(list(cfg.seeds))),
        ("reference", f"{esc(cfg.reference_scheduler)} at {esc(cfg.reference_steps)} steps, one per prompt+seed"
                      if cfg.reference_scheduler != "same" else
                      f"each scheduler's own, at {esc(cfg.reference_steps)} steps"),
        ("references", references.header_line(data)),
        ("guidance · size · dtype", esc(f"{default if cfg.guidance is None else cfg.guidance} · "
                                        f"{default if cfg.size is None else cfg.size} · {cfg.dtype}")),
        ("device", esc(summary.get("device", "?"))),
        ("versions", esc(version_text) + (f" · git <code>{esc(str(commit)[:12])}</code>" if commit else "")),
        ("images", image_counts(data)),
        ("broken images", broken_cell(data)),
        ("total NFE", f"{int(data.images['nfe'].sum()):,}"),
        ("render time", render_time(data, render)),
        ("metrics scored", metric_list(data)),
        ("recommendation", recommendation_cell(data)),
    ]
    return facts(rows) + skipped_block(summary) + warnings_block(summary)


ROLE_NAMES = {SWEEP: "sweep", REFERENCE: "references", CHECK: "checks"}


def image_counts(data: ScoredRun) -> str:
    """All images by role: the checks that certify the references (tie-breaks among them) are rendered, and cost
    NFE and time, like any other."""
    counts = data.images["role"].value_counts()
    roles = [*ROLE_NAMES, *sorted(set(counts.index) - set(ROLE_NAMES))]
    parts = " + ".join(f"{counts[r]} {esc(ROLE_NAMES.get(r, r))}" for r in roles if counts.get(r))
    table = data.certification
    tiebreaks = 0 if table is None else table.tiebreak_key.dropna().nunique()
    return f"{len(data.images)} ({parts}{f', {tiebreaks} of them tie-breaks' if tiebreaks else ''})"


def broken_cell(data: ScoredRun) -> str:
    """Non-finite or blank images per column: never scored, and they fail the gate by default."""
    broken = data.broken_images()
    if not broken:
        return "none"
    columns = ", ".join(f"{esc(column)}: {count}" for column, count in broken.items())
    return (f'<b class="broken">{sum(broken.values())}</b> non-finite or blank, left unscored (and failing the gate '
            f"by default): {columns}")


EXACT_MODELS = {
    "builtin:mixture": (
        "The exact DDPM-family model: a Gaussian mixture around 20 prototype images with a closed-form denoiser, so "
        "every error is the scheduler's. Few-step images look clean because they are near the mixture mean; "
        "converged ones carry the per-pixel grain (std 7.5% of the range) its samples have: cleaner is not better. "
        "<code>evalkit selftest</code> checks the minimum steps against its exact ODE solution."),
    "builtin:mixture-flow": (
        "The exact flow-matching model: the same mixture noised as x<sub>t</sub> = (1−t)·x<sub>0</sub> + t·ε with the "
        "closed-form velocity, sampled through FluxPipeline's scheduling code on FLUX.1-dev's dynamically shifted "
        "schedule (2×2-pixel tokens: mu = 0.63 at 64×64, as for a 512×512 FLUX image), so every error is the "
        "solver's. Converged images carry the mixture's grain, as for <code>builtin:mixture</code>. "
        "<code>evalkit selftest</code> checks the flow solvers' minimum steps against its exact ODE solution."),
}


def exact_model_note(spec: str) -> str:
    note = EXACT_MODELS.get(spec)
    return f'<br><span class="note exact-model">{note}</span>' if note else ""


def recommendation_cell(data: ScoredRun) -> str:
    """`evalkit recommend`'s answer in one sentence, or why there is none."""
    try:
        result = recommend(data)
    except EvalkitError as exc:
        return f"none: {esc(exc)}"
    return f"<b>{esc(result['sentence'])}</b>"


def render_time(data: ScoredRun, render: dict) -> str:
    per_image = float(data.images["seconds"].sum())
    if "seconds" not in render:
        return f"sum of per-image times {per_image:.1f} s"
    return (f"{fmt(render['seconds'], '.1f')} s wall for the {esc(render.get('rendered', '?'))} image(s) rendered by "
            f"the last run (of {esc(render.get('planned', '?'))} planned); sum of per-image times {per_image:.1f} s")


def metric_list(data: ScoredRun) -> str:
    if not data.metrics:
        return "none"
    items = [f"<b>{esc(m)}</b> ({esc(charts.kind_label(data, m))}; {charts.direction(data, m)})" for m in data.metrics]
    return "<br>".join(items)


def skipped_block(summary: dict) -> str:
    """Each skip reason stated once (metrics that share one, like fid and kid's Inception weights, together); table
    cells link here (`skipped_links`) instead of repeating it."""
    skipped = summary.get("skipped_metrics") or {}
    if not skipped:
        return ""
    names: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        names.setdefault(reason, []).append(name)
    anchors = skipped_links(summary)
    items = "".join(f'<li id="{anchors[reason][0]}">{", ".join(f"<b>{esc(n)}</b>" for n in group)}: {esc(reason)}</li>'
                    for reason, group in names.items())
    return f'<h3>Metrics skipped ({len(skipped)})</h3><ul class="skipped">{items}</ul>'


def skipped_links(summary: dict) -> dict[str, tuple[str, str]]:
    """Skip reason -> (its anchor in the run header, link text): text.Notes links cells to it."""
    reasons = dict.fromkeys((summary.get("skipped_metrics") or {}).values())
    return {reason: (f"skipped-{i}", "skipped (see Metrics skipped)") for i, reason in enumerate(reasons, 1)}


def warnings_block(summary: dict) -> str:
    warnings = summary.get("warnings") or []
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f'<h3>Warnings ({len(warnings)})</h3><ul class="warnings">{items}</ul>'


def min_steps_section(data: ScoredRun, notes: Notes | None = None) -> str:
    block = data.summary.get("min_steps")
    if not block:
        return ('<p class="absent">Minimum useful steps not computed for this run '
                f'(run <code>evalkit min-steps {esc(data.dir)}</code> to add them).</p>')
    notes = notes or Notes("min-steps-note", skipped_links(data.summary))
    rows = "".join(min_steps_row(name, info or {}, notes) for name, info in (block.get("schedulers") or {}).items())
    tolerances = tolerance_items(block.get("tolerances") or {})
    return ('<table class="data min-steps"><thead><tr><th>scheduler</th><th>min useful steps</th><th>NFE</th>'
            '<th>s / image</th><th>quality there vs plateau</th><th>knee</th><th>judged by</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>{notes.items()}'
            f'<p class="rule"><b>Rule:</b> {esc(block.get("rule", "(not stated)"))}</p>'
            + (f'<p class="rule"><b>Tolerances</b> (what a difference that size means):</p>'
               f'<ul class="tolerances">{tolerances}</ul>' if tolerances else ""))


def tolerance_items(tolerances: dict) -> str:
    """Each gating metric's tolerance and, in one line, what a difference of its default size means (spec.meaning)."""
    specs = {spec.name: spec for spec in METRICS}
    items = []
    for name, value in tolerances.items():
        spec = specs.get(name)
        meaning = spec.meaning if spec is not None else ""
        if meaning and spec.tolerance is not None and abs(spec.tolerance - float(value)) > 1e-12:
            meaning = f"(default {fmt(spec.tolerance)}: {meaning})"
        elif meaning:
            meaning = f": {meaning}"
        items.append(f"<li><b>{esc(name)}</b> {fmt(value)}{esc(' ' + meaning if meaning.startswith('(') else meaning)}"
                     "</li>")
    return "".join(items)


def category_section(data: ScoredRun, counter, notes: Notes) -> str:
    """Min steps per category x scheduler, hardest first, and the main metric's curve per category."""
    rule = data.min_steps().get("category_rule", "")
    metric = data.main_metric
    fig = categories.figure(data, metric) if metric else None
    return (categories.table(data, notes) + (f'<p class="rule"><b>Rule:</b> {esc(rule)}</p>' if rule else "")
            + (chart(fig, counter, "categories", metric) if fig else ""))


def min_steps_row(name: str, info: dict, notes: Notes | None = None) -> str:
    knee = ", ".join(f"{esc(k)} {esc(v)}" for k, v in (info.get("knee") or {}).items()) or "—"
    if not info.get("reached") or info.get("min_steps") is None:
        why = (notes or Notes("min-steps-note")).cell(info.get("why", "no swept step count met the rule"))
        return (f'<tr class="unreached"><td>{esc(name)}</td><td colspan="4">not reached: {why}</td>'
                f"<td>{knee}</td><td>{judged_by(info)}</td></tr>")
    quality = "<br>".join(f"{esc(m)} {fmt(q.get('value'))} (plateau {fmt(q.get('plateau'))})"
                          for m, q in (info.get("quality") or {}).items()) or "—"
    return (f"<tr><td>{esc(name)}</td><td><b>{esc(info['min_steps'])}</b></td><td>{fmt(info.get('nfe'), '.4g')}</td>"
            f"<td>{fmt(info.get('seconds_per_image'), '.3g')}</td><td>{quality}</td><td>{knee}</td>"
            f"<td>{judged_by(info)}</td></tr>")


def judged_by(info: dict) -> str:
    """Which rules judged a scheduler: each with its own answer; the deciding one in bold."""
    rules = info.get("rules")
    if not rules:
        return "no rule could judge" if rules == {} else "—"
    deciding = set(info.get("judged_by") or ())
    metric = (info.get("distribution") or {}).get("metric")  # which distance the distribution rule judged on
    parts = [f"{'<b>' if k in deciding else ''}{esc(k)}{f' ({esc(metric)})' if k == 'distribution' and metric else ''}"
             f": {esc(r.get('min_steps') if r.get('reached') else '>max')}"
             f"{'</b>' if k in deciding else ''}" for k, r in rules.items()]
    return "<br>".join(parts)


PLATEAU_NOTE = ("One chart per scored metric, one line per scheduler: the mean over prompt+seed units, the shaded band "
                "its 95% paired-bootstrap interval. Buttons switch the x axis between steps, NFE (denoiser calls) "
                "and seconds per image (mean per scheduler and step count), linear or log. Dashed lines and open "
                "circles: flagged <code>not-convergent</code> (a stochastic sampler on a convergence metric: it never "
                "reaches the same-seed reference, judge it on distribution metrics). × markers: <code>small-n</code>. "
                "★ min useful steps, ◇ knee (when computed).")


def plateau_section(data: ScoredRun, counter) -> str:
    if not data.metrics:
        return "<p>No metric was scored in this run.</p>"
    figures = "".join(chart(charts.plateau_figure(data, m), counter, "plateau", m) for m in data.metrics)
    return f'<p class="note">{PLATEAU_NOTE}</p>{figures}'


def pareto_section(data: ScoredRun, counter) -> str:
    metric = data.main_metric
    if metric is None:
        return "<p>No metric was scored in this run.</p>"
    note = (f"Every (scheduler, steps) point of <b>{esc(metric)}</b> (lpips preferred, else ssim) against its cost; "
            "the black step line is the Pareto frontier (no other point is both cheaper and better). Open circles: "
            "flagged not-convergent, left out of the frontier.")
    return f'<p class="note">{note}</p>' + chart(charts.pareto_figure(data, metric), counter, "pareto", metric)


def grid_pairs(data: ScoredRun, ranked) -> list[tuple[str, int, str]]:
    """Hardest prompts first (per-prompt ranking), each with its first seed."""
    medians = dict(zip(ranked["prompt"], ranked["median"])) if ranked is not None else {}
    sweep = data.sweep
    first_seed = sweep.groupby("prompt", sort=False)["seed"].min()  # one pass: a filter per prompt was O(prompts²)
    largest = int(sweep["steps"].max()) if len(sweep) else 0
    pairs = []
    for prompt in dict.fromkeys(list(medians) + list(first_seed.index)):
        median = medians.get(prompt)
        note = f" (plateaus at {steps_cell(median, largest)} steps)".replace("&gt;", ">") \
            if median is not None and median == median else ""
        if prompt in first_seed.index:
            pairs.append((prompt, int(first_seed[prompt]), note))
    return pairs


def prompt_section(data: ScoredRun, ranked, counter) -> str:
    metric = data.main_metric
    if metric is None or ranked is None or ranked.empty:
        return "<p>No per-image scores in this run.</p>"
    tolerance, source = prompts.stated_tolerance(data, metric)
    tol_text = (f"{fmt(tolerance)} ({esc(source)})" if tolerance is not None else
                f"{fmt(prompts.effective_tolerance(data, metric))} (2% of the largest value: no tolerance is set)")
    target = data.perfect(metric)
    plateau = (f"the same-seed reference ({esc(metric)} {fmt(target)})" if target is not None
               else "its value at the largest swept step count")
    judged = prompts.judged_schedulers(data, metric)
    note = (f"Steps from which each prompt's mean <b>{esc(metric)}</b> (over seeds; the mean, not the CI bound the "
            f"min-steps rule uses) gets and stays within {tol_text} of {plateau}; &gt;N: not there by the largest "
            f"swept count. The median is over convergent schedulers ({joined(judged)}). Hardest (latest) first. "
            + prompts.shown_note(ranked, int(data.sweep["steps"].max())))
    return (f'<p class="note">{note}</p>' + chart(prompts.prompt_figure(data, metric, ranked), counter, "prompts",
                                                   metric) + ranking_table(data, ranked.head(prompts.TABLE_PROMPTS)))


steps_cell = prompts.steps_cell


def ranking_table(data: ScoredRun, ranked) -> str:
    schedulers = [s for s in data.schedulers if s in ranked.columns]
    judged = set(prompts.judged_schedulers(data, data.main_metric))
    head = "".join(f"<th>{esc(s)}</th>" if s in judged else f'<th class="unjudged">{esc(s)}<br><small>not convergent'
                   "</small></th>" for s in schedulers)
    largest = int(data.sweep["steps"].max())
    rows = []
    for rank, row in ranked.iterrows():
        cells = "".join(f"<td{'' if s in judged else ' class=unjudged'}>{steps_cell(row[s], largest)}</td>"
                        for s in schedulers)
        rows.append(f'<tr><td>{rank + 1}</td><td class="prompt">{esc(row["prompt"])}</td>'
                    f"<td><b>{steps_cell(row['median'], largest)}</b></td>{cells}</tr>")
    return ('<div class="table-scroll"><table class="data ranking"><thead><tr><th>#</th><th>prompt</th>'
            f'<th>median steps</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
