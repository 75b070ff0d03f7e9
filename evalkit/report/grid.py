"""The image grid: for a few prompt+seed pairs, rows = step counts, columns = schedulers + reference.

A suite has thousands of prompts, so the grid embeds a fixed few (`choose`): the hardest, then a seeded sample of
the rest, drawn one category at a time; the page says how many of how many, and where every other image is.
Thumbnails are embedded as small WebP (JPEG if Pillow lacks WebP) data URIs; each links to its full PNG by
relative path, so the page works offline when opened inside the run folder.
"""
from __future__ import annotations

import base64
import collections
import io
import random
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image, features

from ..store.folder import RunDir
from ..store.read import ScoredRun
from ..store.tables import CORRECTED, UNCERTIFIED

THUMB_PX = 96  # longest side; 8 columns of 96 px + the steps column fit a 1280 px window
HARDEST = 3  # pairs shown from the top of the order given (the hardest prompts, when the run has a ranking) ...
SAMPLED = 5  # ... and drawn from the rest with SAMPLE_SEED, one category at a time
SAMPLE_SEED = 0
MAX_PAIRS = HARDEST + SAMPLED
FORMAT = ("WEBP", "image/webp") if features.check("webp") else ("JPEG", "image/jpeg")


def thumbnail(path: Path) -> str:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, FORMAT[0], quality=80)
    return f"data:{FORMAT[1]};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def breakable(name: str) -> str:
    """Escaped, with line-break opportunities after underscores (long scheduler names in narrow columns)."""
    return escape(name).replace("_", "_<wbr>")


def cell(data: ScoredRun, row: pd.Series | None, label: str, base: str = "") -> str:
    """One thumbnail linking to its PNG; `base` is the run folder as seen from the page ("" beside it)."""
    if row is None:
        return '<td class="missing" title="not rendered">—</td>'
    flags = str(row["flags"] or "")
    folder = RunDir(data.dir)  # the one owner of image paths: the PNG on disk, and as seen from the page
    href = escape(base + folder.image_row_path(row["key"]))
    badge = f'<span class="badge">{escape(flags)}</span>' if flags else ""
    title = escape(f"{label} · {int(row['nfe'])} NFE · {float(row['seconds']):.3g} s" + (f" · {flags}" if flags else ""))
    return (f'<td{" class=flagged" if flags else ""}><a href="{href}"><img class="thumb" '
            f'src="{thumbnail(folder.image_path(row["key"]))}" alt="{escape(label)}" '
            f'title="{title}"></a>{badge}</td>')


def reference_status(status: dict[str, str], key: str) -> str:
    """A corrected reference is not what its unit is measured against (the check stands in), an uncertified one is
    measured against by nothing: marked where the grid shows it (the certification section shows why).
    `status`: certification status by reference key (`statuses`)."""
    found = status.get(key)
    return f'<br><b class="{found}">{found}</b>' if found in (CORRECTED, UNCERTIFIED) else ""


def statuses(data: ScoredRun) -> dict[str, str]:
    table = data.certification
    return {} if table is None else dict(zip(table.key, table.status))


def pair_table(data: ScoredRun, index: int, prompt: str, seed: int, sweep: pd.DataFrame | None = None,
               references: pd.DataFrame | None = None, status: dict[str, str] | None = None) -> str:
    """One pair's table. `sweep`/`references`: rows holding at least this pair's (default: the whole run's);
    `status`: `statuses(data)`, computed once per grid."""
    sweep = data.sweep if sweep is None else sweep
    references = data.references if references is None else references
    status = statuses(data) if status is None else status
    sweep = sweep[(sweep["prompt"] == prompt) & (sweep["seed"] == seed)]
    refs = references[(references["prompt"] == prompt) & (references["seed"] == seed)]
    lookup = {(r.scheduler, int(r.steps)): r for _, r in sweep.iterrows()}
    steps = sorted(int(s) for s in sweep["steps"].unique())
    schedulers = [s for s in data.schedulers if s in set(sweep["scheduler"])]
    head = "".join(f"<th>{breakable(s)}</th>" for s in schedulers)
    head += "".join(f'<th class="ref">reference<br><small>{breakable(r.scheduler)}<br>{int(r.steps)} steps</small>'
                    f"{reference_status(status, r['key'])}</th>" for _, r in refs.iterrows())
    body = []
    for i, step in enumerate(steps):
        cells = "".join(cell(data, lookup.get((s, step)), f"{s}, {step} steps") for s in schedulers)
        if i == 0:
            cells += "".join(cell(data, r, f"reference, {r.scheduler}, {int(r.steps)} steps").replace(
                "<td", f'<td class="ref" rowspan="{len(steps)}"', 1) for _, r in refs.iterrows())
        body.append(f"<tr><th>{step}</th>{cells}</tr>")
    hidden = "" if index == 0 else " hidden"
    return (f'<table class="grid" data-pair="{index}"{hidden}><thead><tr><th>steps</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def choose(pairs: list[tuple[str, int, str]], categories: dict[str, str]) -> list[int]:
    """Indexes of the pairs to embed: the first HARDEST, then SAMPLED of the rest drawn at random with SAMPLE_SEED,
    taking one from each category (`categories`: prompt -> category) before a second from any. The same run
    always shows the same pairs."""
    if len(pairs) <= MAX_PAIRS:
        return list(range(len(pairs)))
    rest = list(range(HARDEST, len(pairs)))
    drawn = random.Random(SAMPLE_SEED).sample(rest, len(rest))
    taken: collections.Counter = collections.Counter()
    turn = {}
    for i in drawn:  # the i-th draw of its category comes in turn i
        category = categories.get(pairs[i][0], "")
        turn[i] = taken[category]
        taken[category] += 1
    sampled = sorted(drawn, key=lambda i: turn[i])[:SAMPLED]  # stable: draw order within a turn
    return list(range(HARDEST)) + sampled


def grid_section(data: ScoredRun, pairs: list[tuple[str, int, str]]) -> str:
    """pairs: (prompt, seed, note), one per prompt, hardest first when the run has a per-prompt ranking (html.py);
    `choose` picks at most MAX_PAIRS of them to embed, listed in that order by the select."""
    if not pairs:
        return "<p>No images in this run.</p>"
    sweep, references = data.sweep, data.references
    labels = sweep.drop_duplicates("prompt")  # one row per prompt before any row-by-row work
    categories = dict(zip(labels["prompt"], labels["category"])) if "category" in labels else {}
    shown = [pairs[i] for i in choose(pairs, categories)]
    sampled, lead = len(shown) < len(pairs), "hardest" if data.main_metric is not None else "first"
    prompts = {prompt for prompt, _, _ in shown}
    sweep, references = sweep[sweep["prompt"].isin(prompts)], references[references["prompt"].isin(prompts)]
    status = statuses(data)
    options = "".join(f'<option value="{i}">{(lead if i < HARDEST else "sampled") + " · " if sampled else ""}'
                      f"{escape(prompt)} · seed {seed}{escape(note)}</option>"
                      for i, (prompt, seed, note) in enumerate(shown))
    tables = "".join(pair_table(data, i, prompt, seed, sweep, references, status)
                     for i, (prompt, seed, _) in enumerate(shown))
    return (f'<p class="controls"><label for="grid-select">Prompt + seed</label> '
            f'<select id="grid-select">{options}</select></p>'
            f'<p class="note">{shown_note(data, len(shown), len(pairs), lead, categories)} Click a thumbnail for the '
            f'full PNG in <code>images/</code>. Orange border: image flagged (nan/blank).</p>'
            f'<div class="grid-scroll">{tables}</div>')


def shown_note(data: ScoredRun, shown: int, prompts: int, lead: str, categories: dict[str, str]) -> str:
    """How many prompts of how many the grid shows, which, and where the others are."""
    units = len(data.sweep[["prompt", "seed"]].drop_duplicates())
    seeds = "each at its first seed" + (f"; {units:,} prompt+seed pairs in all" if units > prompts else "")
    if shown == prompts:
        return f"All {prompts:,} prompts shown ({seeds}){', the hardest first' if lead == 'hardest' else ''}."
    spread = ", one category at a time" if len(set(categories.values()) - {""}) > 1 else ""
    return (f"{shown} of {prompts:,} prompts shown ({seeds}): the {HARDEST} {lead}"
            f"{' (latest to plateau)' if lead == 'hardest' else ''}, then {shown - HARDEST} drawn at random from the "
            f"rest (seed {SAMPLE_SEED}{spread}), so the same run always shows the same ones. Every other image is a "
            "PNG in <code>images/</code> named by its key; <code>images.parquet</code> lists each key's prompt, "
            "seed, scheduler and steps.")
