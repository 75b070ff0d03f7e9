"""The image grid: for a few prompt+seed pairs, rows = step counts, columns = schedulers + reference.

Thumbnails are embedded as small WebP (JPEG if Pillow lacks WebP) data URIs; each links to its full PNG by
relative path, so the page works offline when opened inside the run folder.
"""
from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image, features

from ..store.folder import RunDir
from ..store.read import ScoredRun
from ..store.tables import CORRECTED, UNCERTIFIED

THUMB_PX = 96  # longest side; 8 columns of 96 px + the steps column fit a 1280 px window
MAX_PAIRS = 6
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


def reference_status(data: ScoredRun, key: str) -> str:
    """A corrected reference is not what its unit is measured against (the check stands in), an uncertified one is
    measured against by nothing: marked where the grid shows it (the certification section shows why)."""
    table = data.certification
    status = None if table is None else dict(zip(table.key, table.status)).get(key)
    return f'<br><b class="{status}">{status}</b>' if status in (CORRECTED, UNCERTIFIED) else ""


def pair_table(data: ScoredRun, index: int, prompt: str, seed: int) -> str:
    sweep = data.sweep[(data.sweep["prompt"] == prompt) & (data.sweep["seed"] == seed)]
    refs = data.references[(data.references["prompt"] == prompt) & (data.references["seed"] == seed)]
    lookup = {(r.scheduler, int(r.steps)): r for _, r in sweep.iterrows()}
    steps = sorted(int(s) for s in sweep["steps"].unique())
    schedulers = [s for s in data.schedulers if s in set(sweep["scheduler"])]
    head = "".join(f"<th>{breakable(s)}</th>" for s in schedulers)
    head += "".join(f'<th class="ref">reference<br><small>{breakable(r.scheduler)}<br>{int(r.steps)} steps</small>'
                    f"{reference_status(data, r['key'])}</th>" for _, r in refs.iterrows())
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


def grid_section(data: ScoredRun, pairs: list[tuple[str, int, str]]) -> str:
    """pairs: (prompt, seed, note) in the order the select lists them; at most MAX_PAIRS are embedded."""
    shown = pairs[:MAX_PAIRS]
    if not shown:
        return "<p>No images in this run.</p>"
    options = "".join(f'<option value="{i}">{escape(prompt)} · seed {seed}{escape(note)}</option>'
                      for i, (prompt, seed, note) in enumerate(shown))
    total = len(set(zip(data.sweep["prompt"], data.sweep["seed"])))
    tables = "".join(pair_table(data, i, prompt, seed) for i, (prompt, seed, _) in enumerate(shown))
    return (f'<p class="controls"><label for="grid-select">Prompt + seed</label> '
            f'<select id="grid-select">{options}</select></p>'
            f'<p class="note">{len(shown)} of {total} prompt+seed pairs embedded (the hardest prompts first); '
            f'click a thumbnail for the full PNG in <code>images/</code>. Orange border: image flagged (nan/blank).</p>'
            f'<div class="grid-scroll">{tables}</div>')
