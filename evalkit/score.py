"""Stage 2: per-image scores (long table) for every metric whose weights are present; skips say why.

Per-image values are cached in scores.parquet by (key, metric): a rerun computes nothing, and new
step counts or seeds score only their new images. A metric's cached rows are dropped when its
backbone or preprocessing changes (both are recorded in summary.json).
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .config import SweepConfig
from .metrics import METRICS
from .metrics.base import IMAGE_PROMPT, IMAGE_REFERENCE, SET, MetricOptions, MetricSpec
from .plan import REFERENCE, SWEEP, reference_scheduler
from .store import RunDir, atomic_write, atomic_write_table

SCORE_COLUMNS = ["key", "metric", "value"]
CHECKPOINT_EVERY = 50  # batches between cache writes


@dataclass
class ScoreResult:
    scores: pd.DataFrame  # key, metric, value for the images of this sweep
    computed: dict[str, int] = field(default_factory=dict)  # metric -> images scored by this call
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why, and how to fetch its weights
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> spec facts for summary.json
    set_scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # set metric -> scheduler, steps, value, n


def with_references(images: pd.DataFrame, config: SweepConfig) -> pd.DataFrame:
    """Sweep rows with `reference_key`/`reference_path`: the same prompt+seed's high-step image."""
    refs = images[images.role == REFERENCE][["prompt_id", "seed", "scheduler", "key", "path"]]
    refs = refs.rename(columns={"scheduler": "reference_scheduler", "key": "reference_key", "path": "reference_path"})
    sweep = images[images.role == SWEEP].copy()
    sweep["reference_scheduler"] = [reference_scheduler(config, s) for s in sweep.scheduler]
    return sweep.merge(refs, on=["prompt_id", "seed", "reference_scheduler"], how="left")


def score_images(run: RunDir, images: pd.DataFrame, config: SweepConfig, metric_names: list[str],
                 options: MetricOptions) -> ScoreResult:
    cache = _read_cache(run)
    result = ScoreResult(scores=pd.DataFrame(columns=SCORE_COLUMNS))
    pairs = with_references(images, config)
    for name in metric_names:
        spec = METRICS.get(name)
        facts = {"inputs": spec.inputs, "kind": spec.kind, "higher_is_better": spec.higher_is_better,
                 "backbone": spec.backbone, "preprocessing": spec.preprocessing}
        result.metrics[name] = facts
        missing = spec.missing_weights(options)
        if missing:
            result.skipped[name] = "missing weights: " + "; ".join(
                f"{w.description} at {w.path()} (fetch: {w.fetch})" for w in missing)
            continue
        if spec.inputs == SET:
            result.set_scores[name], result.computed[name] = _set_metric(spec, run, images, options)
            continue
        cached = cache.get(name)
        if cached is None or cached["facts"] != facts:
            cached = {"facts": facts, "values": {}}
            cache[name] = cached
        todo = _inputs_for(spec, images, pairs)
        todo = todo[~todo.key.isin(cached["values"].keys())]
        if len(todo):
            scorer = spec.build(options)
            for i, chunk in enumerate(_chunks(todo, options.batch_size), start=1):
                values = _score_chunk(spec, scorer, run, chunk)
                cached["values"].update(zip(chunk.key, values))
                if i % CHECKPOINT_EVERY == 0:  # an interrupted score stage resumes from here
                    _write_cache(run, cache)
            _write_cache(run, cache)
        result.computed[name] = len(todo)
    rows = [(key, name, value) for name, entry in cache.items() if name in result.computed
            for key, value in entry["values"].items() if key in set(images.key)]
    result.scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    atomic_write_table(run.path / "scores.parquet", result.scores)
    return result


def _set_metric(spec: MetricSpec, run: RunDir, images: pd.DataFrame,
                options: MetricOptions) -> tuple[pd.DataFrame, int]:
    """Each (scheduler, steps) column's image set vs the set of references, from cached features."""
    scorer = None
    folder = run.path / "cache" / "features" / _digest(spec.features or spec.backbone + "\n" + spec.preprocessing)
    folder.mkdir(parents=True, exist_ok=True)
    todo = images[[not (folder / f"{sha}.npy").is_file() for sha in images.sha256]].drop_duplicates("sha256")
    for chunk in _chunks(todo, options.batch_size):
        scorer = scorer or spec.build(options)
        with torch.no_grad():
            features = scorer.features(load_images(run, chunk.path)).double().cpu().numpy()
        for sha, row in zip(chunk.sha256, features):
            buffer = io.BytesIO()
            np.save(buffer, row)
            atomic_write(folder / f"{sha}.npy", buffer.getvalue())
    scorer = scorer or spec.build(options)

    def features_of(rows: pd.DataFrame) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.load(folder / f"{sha}.npy") for sha in rows.sha256]))

    reference = features_of(images[images.role == REFERENCE])
    table = [(scheduler, steps, scorer.compare(features_of(group), reference), len(group))
             for (scheduler, steps), group in images[images.role == SWEEP].groupby(["scheduler", "steps"])]
    return pd.DataFrame(table, columns=["scheduler", "steps", "value", "n"]), len(todo)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _inputs_for(spec: MetricSpec, images: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    if spec.inputs == IMAGE_REFERENCE:
        return pairs.dropna(subset=["reference_key"])
    if spec.inputs == IMAGE_PROMPT:
        return images
    raise ValueError(f"metric {spec.name}: unsupported inputs {spec.inputs!r}")


def _score_chunk(spec: MetricSpec, scorer: Any, run: RunDir, chunk: pd.DataFrame) -> list[float]:
    batch = load_images(run, chunk.path)
    with torch.no_grad():
        if spec.inputs == IMAGE_REFERENCE:
            values = scorer.score(batch, load_images(run, chunk.reference_path))
        else:
            values = scorer.score(batch, list(chunk.prompt))
    return [float(v) for v in values]


def load_images(run: RunDir, paths) -> torch.Tensor:
    """PNGs -> uint8 (B, 3, H, W), as stored; metrics own their preprocessing."""
    arrays = [np.asarray(Image.open(run.path / p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _chunks(table: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(table), size):
        yield table.iloc[start:start + size]


def _cache_file(run: RunDir):
    return run.path / "cache" / "scores.json"


def _read_cache(run: RunDir) -> dict[str, Any]:
    path = _cache_file(run)
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_cache(run: RunDir, cache: dict[str, Any]) -> None:
    path = _cache_file(run)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, json.dumps(cache).encode())
