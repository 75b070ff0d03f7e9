"""Reference certification in the report (stages/certify.py): one header line, and a section naming every unit whose
reference is not plainly certified, with its reference, check and tie-break side by side (grid's thumbnails).

Every convergence number measures against a reference: a corrected one is not the image the sweep is compared with,
an uncertified one drops its unit from those numbers, so the page says which units, and shows why."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..config import SweepConfig
from ..store.read import ScoredRun
from ..store.tables import CERTIFIED, CORRECTED, UNCERTIFIED, UNCHECKED, is_broken
from ..sweep.plan import check_scheduler, tiebreak_steps
from ..sweep.schedulers import get_scheduler
from . import grid
from .text import esc, fmt

MAX_EMBEDDED = 24  # units whose images are embedded, worst first; the table names every one
ORDER = [UNCERTIFIED, CORRECTED, CERTIFIED, UNCHECKED]  # the table's order: what most needs a look first


def not_certified(data: ScoredRun) -> str | None:
    """Why none of the run's references was certified, or None when they were."""
    if not data.config.certify:
        return "certify = false"
    if data.certification is None:
        return f"scored before certification; rescore with <code>evalkit score {esc(data.dir)}</code>"
    return None


def header_line(data: ScoredRun) -> str:
    """The header's line: how many references a second solution confirms, and how closely."""
    why = not_certified(data)
    return f"not certified ({why})" if why else f'{counts_line(data)} · <a href="#references">per unit</a>'


def counts_line(data: ScoredRun) -> str:
    """Certified of all references, the check and the worst agreement; corrected and uncertified ones in bold, with
    what they mean (they change what the convergence metrics measure against, or drop units from them)."""
    table, cfg = data.certification, data.config
    counts = {status: int((table.status == status).sum()) for status in ORDER}
    named = [f'<b class="{status}">{counts[status]} {status}</b>' for status in (CORRECTED, UNCERTIFIED)
             if counts[status]]
    meaning = {CORRECTED: "corrected: the check stands in for the reference",
               UNCERTIFIED: "uncertified: left out of every convergence metric, and failing the gate by default"}
    told = "; ".join(meaning[status] for status in (CORRECTED, UNCERTIFIED) if counts[status])
    return (", ".join([f"<b>{counts[CERTIFIED]} of {len(table)} certified</b>", *named]
                      + ([f"{counts[UNCHECKED]} unchecked"] if counts[UNCHECKED] else []))
            + f" (check: {esc(cfg.check_scheduler)} at {cfg.reference_steps} steps; {agreement(table)})"
            + (f" — {told}" if told else ""))


def agreement(table: pd.DataFrame, median: bool = False) -> str:
    """How closely the references match their checks, over every compared unit: the worst (and median) SSIM and
    mean error. SSIM is left out where images are too small for its window (certify.distances)."""
    compared = table[table.mean_error.notna()]
    if compared.empty:
        return "no reference was compared with its check"
    parts = []
    for name, values, worst, spec in (("SSIM", compared.ssim, pd.Series.min, ".4f"),
                                      ("mean error", compared.mean_error, pd.Series.max, ".2g")):
        if values.notna().any():
            parts.append(f"worst {name} {fmt(worst(values), spec)}"
                         + (f" (median {fmt(values.median(), spec)})" if median else ""))
    return ", ".join(parts)


def certification_section(data: ScoredRun) -> str:
    """The units to look at (`listed`) in a table with their images; when there are none, one line saying so."""
    why = not_certified(data)
    if why:
        return (f'<p class="absent">References not certified ({why}): every convergence metric measures against '
                "references no second solution checked.</p>")
    table, cfg = data.certification, data.config
    listed = listed_units(table, cfg)
    lead = method_note(data) + by_design_note(table, cfg)
    if listed.empty:
        certified = int((table.status == CERTIFIED).sum())
        return (f"<p>All {certified} checked references certified: {agreement(table, median=True)}.</p>" if certified
                else "<p>No reference has a check.</p>") + lead
    warn = ' class="warning"' if (listed.status == UNCERTIFIED).any() else ""
    shown = min(len(listed), MAX_EMBEDDED)
    images = data.images.set_index("key", drop=False)
    rows = "".join(unit_row(data, images, row, i < MAX_EMBEDDED) for i, row in enumerate(listed.itertuples()))
    return (f"<p{warn}>{counts_line(data)}. Listed: every unit whose reference is not plainly certified "
            f"(its check disagreed, or it is unchecked); images for the first {shown} of {len(listed)}.</p>"
            '<div class="table-scroll"><table class="data certification"><thead><tr><th>prompt</th><th>seed</th>'
            "<th>reference</th><th>check</th><th>SSIM</th><th>max error</th><th>mean error</th><th>status</th>"
            "<th>reference image</th><th>check image</th><th>tie-break image</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>" + lead)


def method_note(data: ScoredRun) -> str:
    """What certified means, with the bound the run was scored with (summary.json records it)."""
    cfg = data.config
    bound = (data.summary.get("references") or {}).get("bound")
    return (f'<p class="note">Each reference is compared with a second solution of the same ODE from the same noise '
            f"(the check: {esc(cfg.check_scheduler)} at {cfg.reference_steps} steps)"
            + (f"; they agree when {esc(bound)}" if bound else "")
            + f". Where they disagree, a tie-break ({esc(cfg.check_scheduler)} at {tiebreak_steps(cfg)} steps) "
            "decides: the reference is certified, corrected (the check stands in for it) or uncertified (its unit is "
            "left out of every convergence metric). Errors are absolute pixel differences in [0, 1].</p>")


def listed_units(table: pd.DataFrame, config: SweepConfig) -> pd.DataFrame:
    """Units that are not plainly certified: corrected, uncertified, certified only by a tie-break, or unchecked
    for a reason of their own (not by design: by_design_note), the worst first."""
    plain = (table.status == CERTIFIED) & table.tiebreak_key.isna()
    designed = (table.status == UNCHECKED) & table.scheduler.map(lambda s: unchecked_by_design(config, s) is not None)
    listed = table[~plain & ~designed]
    rank = listed.status.map({status: i for i, status in enumerate(ORDER)})
    return listed.assign(rank=rank).sort_values(["rank", "prompt_id", "seed", "scheduler"]).drop(columns="rank")


def unchecked_by_design(config: SweepConfig, scheduler: str) -> str | None:
    """Why no reference of `scheduler` has a check (plan.check_scheduler), or None when they are checked."""
    if check_scheduler(config, scheduler) is not None:
        return None
    if get_scheduler(scheduler).stochastic:
        return "a stochastic sampler's: it solves no ODE, so there is no one image to agree on"
    return "the check solver's own: it can't certify itself"


def by_design_note(table: pd.DataFrame, config: SweepConfig) -> str:
    """One line per reference scheduler whose references are never checked, instead of a row per unit."""
    unchecked = table[table.status == UNCHECKED]
    lines = [f"{esc(scheduler)} references ({len(rows)}): {esc(why)}; not checked"
             for scheduler, rows in unchecked.groupby("scheduler", sort=False)
             if (why := unchecked_by_design(config, scheduler))]
    return "".join(f'<p class="note">{line}.</p>' for line in lines)


def unit_row(data: ScoredRun, images: pd.DataFrame, row: Any, embed: bool) -> str:
    """One unit: where it is, how far its reference and check are apart, its status and why, and (`embed`) the
    images: grid.cell's thumbnails, each linking to its PNG. `images`: ScoredRun.images indexed by key."""
    reference = image(images, row.key)
    prompt = reference["prompt"] if reference is not None else row.prompt_id
    cells = (f'<td class="prompt">{esc(prompt)}</td><td>{int(row.seed)}</td><td>{esc(row.scheduler)}</td>'
             f"<td>{esc(row.check_scheduler) if isinstance(row.check_scheduler, str) else '—'}</td>"
             f"<td>{fmt(row.ssim, '.4f')}</td><td>{fmt(row.max_error, '.2g')}</td><td>{fmt(row.mean_error, '.2g')}</td>"
             f'<td><b class="{esc(row.status)}">{esc(row.status)}</b>: '
             f"{esc(status_why(data.config, row, images))}</td>")
    if embed:
        cells += "".join(image_cell(data, images, key, what) for key, what in (
            (row.key, "reference"), (row.check_key, "check"), (row.tiebreak_key, "tie-break")))
    else:
        cells += '<td colspan="3" class="missing">not embedded</td>'
    return f'<tr class="{esc(row.status)}">{cells}</tr>'


def image_cell(data: ScoredRun, images: pd.DataFrame, key: Any, what: str) -> str:
    """grid.cell's thumbnail of one image of the unit, labelled like the grid's."""
    found = image(images, key)
    label = what if found is None else f"{what}, {found['scheduler']}, {int(found['steps'])} steps"
    return grid.cell(data, found, label)


def image(images: pd.DataFrame, key: Any) -> pd.Series | None:
    """The image row of `key` (ScoredRun.images indexed by key), or None where there is none."""
    return images.loc[key] if isinstance(key, str) and key in images.index else None


def status_why(config: SweepConfig, row: Any, images: pd.DataFrame) -> str:
    """What made a unit's status (certify._status), in words."""
    tiebreak = f"the tie-break ({tiebreak_steps(config)} steps)"
    if row.status == CORRECTED:
        return f"{tiebreak} sides with the check, which stands in"
    if row.status == CERTIFIED:
        return f"{tiebreak} sides with the reference"
    if row.status == UNCERTIFIED:
        if broken(images, row.check_key):
            return "the check image is broken (non-finite or blank)"
        if not isinstance(row.tiebreak_key, str):
            return "no tie-break rendered yet (rendering the run again adds it)"
        if broken(images, row.tiebreak_key):
            return "the tie-break image is broken (non-finite or blank)"
        return f"{tiebreak} agrees with neither"
    if broken(images, row.key):
        return "the reference is broken (non-finite or blank): its unit is scored against nothing"
    return "no check image was rendered for it"


def broken(images: pd.DataFrame, key: Any) -> bool:
    found = image(images, key)
    return found is not None and is_broken(found["flags"])
