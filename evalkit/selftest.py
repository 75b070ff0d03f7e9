"""`evalkit selftest`: the plateau logic checked against ground truth on the exact models, for both families.

On builtin:mixture (DDPM family) and builtin:mixture-flow (flow matching) the image every deterministic
scheduler converges to is computable (a tight ODE solve from the same noise). For each family the same rule
and tolerances that judge the harness's sweep against its high-step reference are applied to the same sweep
against that ground truth; the two answers must agree to within one swept step count per scheduler.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .config import SweepConfig
from .metrics import METRICS
from .metrics.base import MetricOptions
from .models import load_model
from .plateau import DEFAULT_TOLERANCES, summarize_plateau
from .runner import run
from .schedulers import DEFAULTS, REFERENCE, SCHEDULERS
from .score import load_images
from .stats import bootstrap_means
from .store import UNIT_COLUMN, RunDir, ScoredRun, atomic_write

METRIC = "ssim"  # weight-free, so the self-test runs on any machine
MODELS = {"ddpm": "builtin:mixture", "flow": "builtin:mixture-flow"}  # family -> its exact model


def selftest(config: SweepConfig) -> tuple[list[dict[str, Any]], bool]:
    """Rows (family, scheduler, harness, truth, match) and whether every deterministic scheduler matched.

    Each family runs the config's deterministic schedulers of that family; a family the config names none of
    runs its defaults (DDPM: the default sweep's; flow: every deterministic flow solver in the registry).
    Each family's sweep is its own run folder, `<out>/<family>`.
    """
    rows = []
    for family, model in MODELS.items():
        family_config = dataclasses.replace(
            config, model=model, metrics=(METRIC,), schedulers=family_schedulers(config.schedulers, family),
            reference_scheduler=family_reference(config.reference_scheduler, family),
            out=str(config.run_dir() / family))
        rows += [{"family": family, **row} for row in _selftest_one(family_config)]
    return rows, all(r["match"] for r in rows)


def family_schedulers(names: tuple[str, ...] | None, family: str) -> tuple[str, ...]:
    deterministic = [s.name for s in SCHEDULERS if s.family == family and not s.stochastic]
    chosen = [n for n in (SCHEDULERS.canonical(n) for n in names or ()) if n in deterministic]
    if chosen:
        return tuple(chosen)
    return tuple(n for n in DEFAULTS[family] if n in deterministic) if family == "ddpm" else tuple(deterministic)


def family_reference(name: str | None, family: str) -> str:
    """The config's reference scheduler if it fits the family ("same" always does), else the family's default."""
    if name == "same" or (name is not None and SCHEDULERS.get(name).family == family):
        return name
    return REFERENCE[family]


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The selftest table as printed by the CLI: a header, then one line per (family, scheduler)."""
    lines = [f"{'family':<8}{'scheduler':<22}{'harness':>9}{'truth':>9}  match (within one swept step count)"]
    lines += [f"{r['family']:<8}{r['scheduler']:<22}{str(r['harness']):>9}{str(r['truth']):>9}  "
              f"{'yes' if r['match'] else 'NO'}" for r in rows]
    return lines


def _selftest_one(config: SweepConfig) -> list[dict[str, Any]]:
    """Rows (scheduler, harness, truth, match) for one exact model."""
    tolerance = {METRIC: (config.tolerances or DEFAULT_TOLERANCES)[METRIC]}
    scored = ScoredRun.read(run(dataclasses.replace(config, tolerances=tolerance)).dir)
    harness = scored.min_steps()["schedulers"]
    images, sweep = scored.images, scored.sweep
    truth_paths = ground_truth_images(RunDir(scored.dir), sweep, config)
    scorer = METRICS.get(METRIC).build(MetricOptions())
    values = []
    for start in range(0, len(sweep), 64):
        chunk = sweep.iloc[start:start + 64]
        with torch.no_grad():
            scores = scorer.score(load_images(scored.dir / p for p in chunk.path),
                                  load_images(truth_paths[(r.prompt_id, r.seed)] for r in chunk.itertuples()))
        values += [(r.prompt_id, r.seed, r.scheduler, r.steps, METRIC, float(v)) for r, v in zip(chunk.itertuples(), scores)]
    values = pd.DataFrame(values, columns=[*UNIT_COLUMN, "metric", "value"])
    truth = summarize_plateau(bootstrap_means(values), values, images, tolerance)["schedulers"]
    steps = sorted(config.steps)
    rows = []
    for scheduler in sorted(truth):
        ours, true = harness[scheduler]["min_steps"], truth[scheduler]["min_steps"]
        match = ours == true or (ours is not None and true is not None
                                 and abs(steps.index(ours) - steps.index(true)) <= 1)
        rows.append({"scheduler": scheduler, "harness": ours, "truth": true, "match": match})
    return rows


def ground_truth_images(run: RunDir, sweep: pd.DataFrame, config: SweepConfig) -> dict[tuple[str, int], Any]:
    """One quantised ground-truth PNG per prompt+seed, cached by everything that determines it."""
    model = load_model(config.model)
    pipe = model.pipe
    guidance = config.guidance if config.guidance is not None else model.default_guidance
    size = config.size or model.default_size
    folder = run.path / "cache" / "groundtruth"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for unit in sweep[["prompt_id", "seed", "prompt"]].drop_duplicates(["prompt_id", "seed"]).itertuples():
        ident = json.dumps([model.identity, unit.prompt, unit.seed, guidance, size, config.negative_prompt])
        path = folder / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.png"
        if not _readable(path):  # missing, or a corrupt cache entry: computed again
            pixels = pipe.ground_truth(unit.prompt, unit.seed, guidance_scale=guidance, height=size, width=size,
                                       negative_prompt=config.negative_prompt)
            buffer = io.BytesIO()
            Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB").save(buffer, format="PNG")
            atomic_write(path, buffer.getvalue())
        paths[(unit.prompt_id, unit.seed)] = path
    return paths


def _readable(path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True
