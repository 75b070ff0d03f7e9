"""`evalkit selftest`: the plateau logic checked against ground truth on the exact model.

On builtin:mixture the image every deterministic scheduler converges to is computable (a tight ODE
solve from the same noise). The same rule and tolerances that judge the harness's sweep against its
high-step reference are applied to the same sweep against that ground truth; the two answers must agree
to within one swept step count per scheduler.
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
from .models import mixture
from .plateau import DEFAULT_TOLERANCES, summarize_plateau
from .runner import run
from .schedulers import SCHEDULERS
from .score import load_images
from .stats import bootstrap_means
from .store import UNIT_COLUMN, RunDir, ScoredRun, atomic_write

METRIC = "ssim"  # weight-free, so the self-test runs on any machine


def selftest(config: SweepConfig) -> tuple[list[dict[str, Any]], bool]:
    """Rows (scheduler, harness, truth, match) and whether every deterministic scheduler matched."""
    config = dataclasses.replace(config, model="builtin:mixture", metrics=(METRIC,),
                                 schedulers=tuple(s for s in config.schedulers if not SCHEDULERS.get(s).stochastic))
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
    return rows, all(r["match"] for r in rows)


def ground_truth_images(run: RunDir, sweep: pd.DataFrame, config: SweepConfig) -> dict[tuple[str, int], Any]:
    """One quantised ground-truth PNG per prompt+seed, cached by everything that determines it."""
    pipe = mixture.mixture_pipeline()
    guidance = config.guidance if config.guidance is not None else 1.0
    size = config.size or mixture.DEFAULT_SIZE
    folder = run.path / "cache" / "groundtruth"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for unit in sweep[["prompt_id", "seed", "prompt"]].drop_duplicates(["prompt_id", "seed"]).itertuples():
        ident = json.dumps([mixture.VERSION, unit.prompt, unit.seed, guidance, size, config.negative_prompt])
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
