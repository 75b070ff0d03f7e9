"""Certified references: each deterministic reference checked against a second solution of the same ODE, from the
same noise, before anything is measured against it.

Every convergence number (SSIM/LPIPS/PSNR to the reference, the per-seed rule, the gate's per-seed regressions)
assumes the reference is the image the model's ODE converges to. A solver can step over the moment the model decides
what to draw (Karras spacing takes its largest steps at the highest noise, which is where a model whose pictures are
far apart picks one: models/exact/variants.py) and land on another picture for some seeds, at any step count.
Two solvers that lay out their steps differently rarely go wrong on the same unit in the same way: where they agree,
the reference is right to within their disagreement; where they don't, nothing short of the truth tells which one
is right, so the unit is **uncertified**: left out of every convergence metric (never judged against a picture that
may be wrong), counted and named in summary.json and the report, and a failure of the gate unless its rules allow it.

The bound. A unit is certified when SSIM(reference, check) >= MIN_SSIM and the mean absolute pixel difference is
<= MAX_MEAN_ERROR. The per-seed rule's SSIM tolerance is 0.05 (minsteps/perseed.py); a reference within 0.01 SSIM
of a second solution moves a column's SSIM to it by about that much at most, a fifth of the tolerance, so no
min-steps decision turns on it by more than a fifth of its margin. The mean error catches what SSIM barely sees
(a uniform shift of brightness or colour): 0.01 is 2.5 grey levels on average. Two right solutions of the exact
models, whatever their solver, agree far inside both (worst unit: SSIM > 0.9999, mean error < 1e-3; bench/README.md);
a wrong picture is far outside (SSIM ~0.7, mean error > 0.1).

Cost: one more image per unit at reference_steps (the check), rendered by the same stage as everything else, and
one weight-free comparison per reference, cached by both images' content.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import SweepConfig
from ..metrics.reference import SSIM, SSIM_MIN_SIZE
from ..store.files import atomic_write_json, read_cache
from ..store.folder import RunDir
from ..store.tables import CERTIFICATION_COLUMNS, CERTIFIED, CORRECTED, UNCERTIFIED, UNCHECKED, is_broken
from ..models import Model
from ..sweep.plan import REFERENCE, RenderJob, check_scheduler, plan_tiebreaks, tiebreak_steps
from ..sweep.prompts import Prompt
from .workers import load_images

MIN_SSIM = 0.99
MAX_MEAN_ERROR = 0.01  # of the [0, 1] pixel range
BOUND = f"SSIM(reference, check) >= {MIN_SSIM:g} and mean |difference| <= {MAX_MEAN_ERROR:g}"
CHUNK = 32  # image pairs compared at once


def certify(run: RunDir, images: pd.DataFrame, config: SweepConfig) -> pd.DataFrame:
    """One row per reference image of the sweep (tables.CERTIFICATION_SCHEMA), written to references.parquet.

    `status`: CERTIFIED (its check agrees, or the tie-break sides with it), CORRECTED (the tie-break sides with the
    check, which stands in for it), UNCERTIFIED (no two agree, the check is broken, or the tie-break is not rendered
    yet), or UNCHECKED: certification is off, the reference is stochastic or is the check solver itself
    (plan.check_scheduler), or it is broken (then it is excluded from everything anyway)."""
    table = _pairs(images, config)
    usable = table.check_key.notna() & ~table.broken & ~table.check_broken
    tied = usable & table.tiebreak_key.notna() & ~table.tiebreak_broken
    agreement = _distances(run, pd.concat([table[usable][["key", "sha256", "check_key", "check_sha256"]],
                                           _as_pair(table[tied], "key", "sha256"),
                                           _as_pair(table[tied], "check_key", "check_sha256")]))
    measured = [agreement.get(f"{a}:{b}") for a, b in zip(table.sha256, table.check_sha256)]
    table["ssim"], table["max_error"], table["mean_error"] = (
        [m[i] if m else np.nan for m in measured] for i in range(3))
    status = []
    for row in table.itertuples():
        sides = {side: agreement.get(f"{sha}:{row.tiebreak_sha256}") for side, sha in
                 (("reference", row.sha256), ("check", row.check_sha256))}
        status.append(_status(row, {side: bool(m) and agree(m[0], m[2]) for side, m in sides.items()}))
    table["status"] = status
    table = table[CERTIFICATION_COLUMNS]
    run.write_references(table)
    return table


def needs_tiebreak(table: pd.DataFrame) -> pd.DataFrame:
    """References whose check disagrees and that have no tie-break image yet: (prompt_id, seed) rows to render."""
    return table[(table.status == UNCERTIFIED) & table.ssim.notna() & table.tiebreak_key.isna()]


def _pairs(images: pd.DataFrame, config: SweepConfig) -> pd.DataFrame:
    """Each reference beside its check and tie-break images (key, sha256, broken), where they were rendered."""
    unit = ["prompt_id", "seed"]
    refs = images[images.role == REFERENCE][["key", *unit, "scheduler", "steps", "sha256", "flags"]]
    refs = refs.assign(check_scheduler=[check_scheduler(config, s) for s in refs.scheduler], check_steps=refs.steps,
                       tiebreak_steps=tiebreak_steps(config))
    table = refs.merge(_role(images, "check"), on=[*unit, "check_scheduler", "check_steps"], how="left")
    tiebreaks = _role(images, "tiebreak").rename(columns={"tiebreak_scheduler": "check_scheduler"})
    table = table.merge(tiebreaks, on=[*unit, "check_scheduler", "tiebreak_steps"], how="left")
    table["check_scheduler"] = table.check_scheduler.where(table.check_key.notna(), None)
    for column, flags in (("broken", "flags"), ("check_broken", "check_flags"), ("tiebreak_broken", "tiebreak_flags")):
        table[column] = [is_broken(f) for f in table[flags]]
    return table


def _role(images: pd.DataFrame, name: str) -> pd.DataFrame:
    """Every image as a candidate check (or tie-break): its columns prefixed with `name`."""
    columns = {c: f"{name}_{c}" for c in ("scheduler", "steps", "key", "sha256", "flags")}
    return images[["prompt_id", "seed", *columns]].rename(columns=columns)


def _as_pair(table: pd.DataFrame, key: str, sha: str) -> pd.DataFrame:
    return pd.DataFrame({"key": table[key], "sha256": table[sha], "check_key": table.tiebreak_key,
                         "check_sha256": table.tiebreak_sha256})


def _status(row: Any, sides: dict[str, bool]) -> str:
    """What a reference's comparisons make it; `sides`: whether the tie-break agrees with the reference / the check."""
    if pd.isna(row.check_key) or row.broken:
        return UNCHECKED
    if row.check_broken:
        return UNCERTIFIED
    if agree(row.ssim, row.mean_error) or sides["reference"]:
        return CERTIFIED
    return CORRECTED if sides["check"] else UNCERTIFIED


def agree(ssim: float, mean_error: float) -> bool:
    """The bound (module docstring); SSIM is NaN for images too small for its window: judged on the mean alone."""
    return bool(mean_error <= MAX_MEAN_ERROR and (np.isnan(ssim) or ssim >= MIN_SSIM))


def distances(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair of uint8 (B, 3, H, W) images: SSIM (torchmetrics, as the ssim metric computes it; NaN for images
    smaller than its window), max and mean absolute difference in [0, 1] units."""
    diff = (a.to(torch.float64) - b.to(torch.float64)).abs().flatten(1) / 255.0
    small = min(a.shape[-2:]) < SSIM_MIN_SIZE
    with torch.no_grad():
        ssim = torch.full((len(a),), float("nan")) if small else SSIM().score(a, b)
    return ssim, diff.amax(1), diff.mean(1)


def _distances(run: RunDir, pairs: pd.DataFrame) -> dict[str, list[float]]:
    """content ("sha:sha" of `key`'s and `check_key`'s images) -> [ssim, max error, mean error], computed for pairs
    not yet cached."""
    cache = read_cache(run.certify_cache, valid=lambda v: isinstance(v, list) and len(v) == 3)
    pairs = pairs.assign(content=pairs.sha256 + ":" + pairs.check_sha256).drop_duplicates("content")
    todo = pairs[~pairs.content.isin(cache.keys())]
    for start in range(0, len(todo), CHUNK):
        chunk = todo.iloc[start:start + CHUNK]
        measured = distances(load_images(run.image_path(k) for k in chunk.key),
                             load_images(run.image_path(k) for k in chunk.check_key))
        cache.update(zip(chunk.content, zip(*(m.tolist() for m in measured))))
    if len(todo):
        atomic_write_json(run.certify_cache, cache)
    return {c: cache[c] for c in pairs.content}


def summarize(table: pd.DataFrame, config: SweepConfig) -> dict[str, Any]:
    """summary.json's `references` block: the bound, counts, the worst agreement, and every unit whose reference
    was corrected or is uncertified."""
    checked = table[table.status != UNCHECKED]

    def units(status: str) -> list[dict[str, Any]]:
        return [{"prompt_id": r.prompt_id, "seed": int(r.seed), "scheduler": r.scheduler, "ssim": _num(r.ssim),
                 "max_error": _num(r.max_error), "mean_error": _num(r.mean_error)}
                for r in table[table.status == status].itertuples()]

    return {
        "certify": config.certify, "check_scheduler": config.check_scheduler, "check_steps": config.reference_steps,
        "tiebreak_steps": tiebreak_steps(config), "bound": BOUND, "references": len(table), "checked": len(checked),
        **{status: int((table.status == status).sum()) for status in (CERTIFIED, CORRECTED, UNCERTIFIED, UNCHECKED)},
        "worst": {"ssim": _min(checked.ssim), "max_error": _max(checked.max_error),
                  "mean_error": _max(checked.mean_error)},
        "corrected_units": units(CORRECTED), "uncertified_units": units(UNCERTIFIED),
    }


def _num(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _min(values: pd.Series) -> float | None:
    return _num(values.min()) if values.notna().any() else None


def _max(values: pd.Series) -> float | None:
    return _num(values.max()) if values.notna().any() else None


def settle(run: RunDir, jobs: list[RenderJob], config: SweepConfig, model: Model, prompts: list[Prompt],
           render: Callable[[list[RenderJob]], Any]) -> list[RenderJob]:
    """After `jobs` are rendered: certify their references and render (with `render`) a tie-break for every unit
    whose reference and check disagree and has none yet. Returns the tie-break jobs of the sweep (rendered now or
    before), which belong to its jobs from then on."""
    if not config.certify:
        return []
    images = run.current_images()
    table = certify(run, images, config)
    by_id = {p.id: p for p in prompts}
    tied = table[table.tiebreak_key.notna()][["prompt_id", "seed"]]
    todo = needs_tiebreak(table)[["prompt_id", "seed"]]
    units = pd.concat([tied, todo]).drop_duplicates()
    extra = plan_tiebreaks(config, model, [(by_id[p], int(s)) for p, s in zip(units.prompt_id, units.seed)])
    if len(todo):
        render(extra)
    return extra
