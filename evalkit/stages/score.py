"""Stage 2: per-image scores (long table) and set scores for every metric whose weights are present.

Everything computed is cached by content: per-image values by (image sha256, reference sha256 or
prompt) under a file named for the metric's backbone + preprocessing, set-metric features by image
sha256 under a folder named for the feature extractor (features.py), set-metric intervals by their inputs
(feature hashes, target, resampled units). A per-image metric computed from image embeddings (clip_score)
keeps them in that same kind of folder, named for backbone + preprocessing, so CMMD on the same backbone
reads them instead of embedding each image again. A rerun computes nothing; new step counts or seeds
compute only their new images; a change of backbone starts a new cache.
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..config import OWN_REFERENCES, SweepConfig
from ..metrics import METRICS, metric_spec
from ..metrics.base import IMAGE_PROMPT, IMAGE_REFERENCE, INTERVAL_METHOD, SET, MetricOptions, MetricSpec, SetTarget
from ..metrics.plugins import PluginWeightsMissing
from ..store.files import atomic_write, atomic_write_json, digest, read_cache
from ..store.folder import RunDir
from ..store.tables import SCORE_COLUMNS, is_broken, with_references
from ..stats.bootstrap import SEED, SET_BOOTSTRAP, UNIT, counts_of, percentile_ci, resample_draws
from ..sweep.plan import CHECK, REFERENCE, SWEEP
from .certify import certify
from .executors import LocalExecutor
from .features import FeatureStore, feature_store, progress_bar
from .targets import fixed_target, folder_images, is_stats, target_id
from .workers import MetricWorker

CHECKPOINT_EVERY = 50  # batches between cache writes: an interrupted stage resumes from there


@dataclass
class ScoreResult:
    scores: pd.DataFrame  # key, metric, value for the images of this sweep
    set_scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # set metric -> per-column rows
    computed: dict[str, int] = field(default_factory=dict)  # metric -> backbone inputs computed by this call
    # per (scheduler, steps, metric): images left unscored because they or their reference are broken
    broken: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["scheduler", "steps", "metric", "broken"]))
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why, and how to fetch its weights
    references: pd.DataFrame | None = None  # each reference's certification (stages/certify.py)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> facts for summary.json
    warnings: list[str] = field(default_factory=list)  # filled by the summary: small n, stochastic samplers


def metric_options(config: SweepConfig, name: str) -> MetricOptions:
    """How the sweep runs metric `name`: its device, batch size and configured backbone."""
    return MetricOptions(device=config.device, batch_size=config.batch_size, backbone=config.backbones.get(name))


def metric_facts(spec: MetricSpec, options: MetricOptions) -> dict[str, Any]:
    """What summary.json records of a scored metric (and what its per-image cache is keyed by)."""
    return {"inputs": spec.inputs, "kind": spec.kind, "higher_is_better": spec.higher_is_better,
            "backbone": options.backbone or spec.backbone, "preprocessing": spec.preprocessing,
            "perfect": spec.perfect, **({"plugin": spec.plugin} if spec.plugin else {})}


def score_images(run: RunDir, images: pd.DataFrame, config: SweepConfig, names: list[str],
                 executor: Any = None, progress: bool = False) -> ScoreResult:
    """Score on the executor's workers (default: this process); the driver reads images and writes caches.
    With `progress`, a bar per metric (and per feature extractor) for the images it computes now.

    References are certified first (certify.py): a sweep image is measured against its reference, or the check image
    standing in for a corrected one; against an uncertified reference it gets no value on a convergence metric.
    Check images only certify: no metric scores them."""
    executor = executor or LocalExecutor()
    result = ScoreResult(scores=pd.DataFrame(columns=SCORE_COLUMNS), references=certify(run, images, config))
    pairs = with_references(images, config, result.references)  # check images stand in for corrected references
    images = images[images.role != CHECK]
    frames = []
    for name in names:
        try:
            spec = metric_spec(name)
        except PluginWeightsMissing as exc:
            result.skipped[name] = f"missing weights: {exc}"
            continue
        name = spec.name  # a plugin's declared name
        options = metric_options(config, name)
        result.metrics[name] = metric_facts(spec, options)
        missing = spec.missing_weights(options)
        if missing:
            result.skipped[name] = "missing weights: " + "; ".join(
                f"{w.description} at {w.path()} (fetch: {w.fetch})" for w in missing)
        elif spec.inputs == SET:
            outcome = _set_metric(spec, run, images, config, options, executor, progress)
            if isinstance(outcome, str):
                result.skipped[name] = outcome
            else:
                result.set_scores[name], result.computed[name] = outcome
        else:
            frame, result.computed[name], truncated = _image_metric(spec, run, images, pairs, options,
                                                                    result.metrics[name], executor, progress)
            frames.append(frame)
            if truncated:
                result.warnings.append(f"{name}: {len(truncated)} prompt(s) longer than the text encoder's context "
                                       f"were truncated, e.g. {truncated[0][:60]!r}")
    result.scores = pd.concat(frames, ignore_index=True) if frames else result.scores
    scored = [name for name in result.metrics if name not in result.skipped]  # declared names, plugins included
    result.broken = broken_counts(images, pairs, scored, result.set_scores)
    run.write_scores(result.scores[SCORE_COLUMNS])
    return result


def broken_counts(images: pd.DataFrame, pairs: pd.DataFrame, names: list[str],
                  set_scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per (scheduler, steps, metric): images excluded as broken (the image, or for reference metrics its
    reference). Set metrics report their own count (an image or the reference it is paired with)."""
    images = images.assign(excluded=[is_broken(f) for f in images["flags"]])
    rows = []
    for name in names:
        spec = METRICS.get(name)
        if spec.inputs == SET:
            if name in set_scores:
                rows.append(set_scores[name][["scheduler", "steps", "broken"]].assign(metric=name))
            continue
        table = pairs if spec.inputs == IMAGE_REFERENCE else images
        counts = table.groupby(["scheduler", "steps"], as_index=False)["excluded"].sum()
        rows.append(counts.rename(columns={"excluded": "broken"}).assign(metric=name))
    if not rows:
        return pd.DataFrame(columns=["scheduler", "steps", "metric", "broken"])
    return pd.concat(rows, ignore_index=True).astype({"broken": int})


# ----------------------------------------------------------------------------------------------------------
# Per-image metrics
# ----------------------------------------------------------------------------------------------------------

def _image_metric(spec: MetricSpec, run: RunDir, images: pd.DataFrame, pairs: pd.DataFrame, options: MetricOptions,
                  facts: dict[str, Any], executor: Any, progress: bool = False) -> tuple[pd.DataFrame, int, list[str]]:
    """Per-image values, computed only for contents not in the cache; the backbone is built only if needed.
    Also returns this sweep's prompts the scorer had to truncate (kept beside the cache for reruns)."""
    rows = _content_rows(spec, images, pairs)
    # with shared image embeddings (spec.embeddings) the key names them too: a new backbone or preprocessing rescores
    identity = json.dumps(facts, sort_keys=True) + (spec.feature_id(options) if spec.embeddings else "")
    cache_file = run.score_cache(spec.name, identity)
    cache = read_cache(cache_file, valid=_is_number)
    todo = rows[~rows.excluded & ~rows.uncertified & ~rows.content.isin(cache.keys())].drop_duplicates("content")
    truncated_now = _compute_values(spec, run, todo, options, executor, progress, cache, cache_file)
    notes_file = run.score_notes(spec.name, identity)
    truncated = {p for p in read_cache(notes_file, list) if isinstance(p, str)}
    if len(todo):
        atomic_write_json(cache_file, cache)
        truncated |= truncated_now
        if truncated:
            atomic_write(notes_file, json.dumps(sorted(truncated)).encode())
    # a broken image (or reference) has no value, nor has an image on a convergence metric to an uncertified reference
    values = rows.content.map(cache).where(~rows.excluded & ~rows.uncertified)
    frame = pd.DataFrame({"key": rows.key.to_numpy(), "metric": spec.name, "value": values.to_numpy(dtype=float)})
    return frame, len(todo), sorted(truncated & set(rows.prompt))


def _content_rows(spec: MetricSpec, images: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The rows a per-image metric scores, each with `content`: what its value depends on (the image, and its
    reference or prompt), by hash."""
    if spec.inputs == IMAGE_REFERENCE:
        rows = pairs.dropna(subset=["reference_key"]).copy()
        rows["content"] = rows.sha256 + ":" + rows.reference_sha256
    elif spec.inputs == IMAGE_PROMPT:
        rows = images.assign(excluded=[is_broken(f) for f in images["flags"]], uncertified=False)
        rows["content"] = [f"{sha}:{digest(prompt)}" for sha, prompt in zip(rows.sha256, rows.prompt)]
    else:
        raise ValueError(f"metric {spec.name}: unsupported inputs {spec.inputs!r}")
    return rows


def _compute_values(spec: MetricSpec, run: RunDir, todo: pd.DataFrame, options: MetricOptions, executor: Any,
                    progress: bool, cache: dict[str, float], cache_file: Any) -> set[str]:
    """Values of `todo`'s contents into `cache` (checkpointed every CHECKPOINT_EVERY batches, and when scoring
    stops early: a scorer that raises, or Ctrl-C, loses no finished batch); returns the prompts the scorer
    truncated."""
    if spec.embeddings:  # embedded once per image content, in the folder other metrics on this backbone read (CMMD)
        store = feature_store(run, spec, options)
        files = [(sha, run.image_path(k)) for sha, k in zip(todo.sha256, todo.key)]
        store.compute(spec, options, files, executor, progress)
        chunks = ((list(chunk.content), (store.load(chunk.sha256), list(chunk.prompt)))
                  for chunk in _chunks(todo, options.batch_size))
    else:
        chunks = ((list(chunk.content), (_read(run, chunk.key), _read(run, chunk.reference_key)
                                         if spec.inputs == IMAGE_REFERENCE else list(chunk.prompt)))
                  for chunk in _chunks(todo, options.batch_size))
    truncated: set[str] = set()
    shown = progress_bar(len(todo), spec.name, progress)
    worker = functools.partial(MetricWorker, spec.plugin or spec.name, options)
    method = "score_embeddings" if spec.embeddings else "score"
    unsaved = 0
    try:
        for contents, (values, truncated_prompts) in executor.map(worker, method, chunks):
            shown.update(len(contents))
            cache.update(zip(contents, values, strict=True))  # one value per image, or a loud error
            truncated.update(truncated_prompts)
            unsaved += 1
            if unsaved == CHECKPOINT_EVERY:
                atomic_write_json(cache_file, cache)
                unsaved = 0
    finally:
        shown.close()
        if unsaved:
            atomic_write_json(cache_file, cache)
    return truncated


# ----------------------------------------------------------------------------------------------------------
# Set metrics
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sets:
    """A sweep's image sets for a set metric: the columns' images and the references (intact ones only: broken
    images join no set), sorted by unit, and every unit of the sweep."""

    every: pd.DataFrame  # every sweep row, broken ones included (each column's `broken` count)
    sweep: pd.DataFrame
    references: pd.DataFrame
    units: list[tuple[str, int]]

    @classmethod
    def of(cls, images: pd.DataFrame) -> _Sets:
        intact = images[[not is_broken(f) for f in images["flags"]]]
        every = images[images.role == SWEEP]
        units = every[UNIT].drop_duplicates().sort_values(UNIT).apply(tuple, axis=1).tolist()
        return cls(every, intact[intact.role == SWEEP].sort_values(UNIT),
                   intact[intact.role == REFERENCE].sort_values(UNIT), units)


def _set_metric(spec: MetricSpec, run: RunDir, images: pd.DataFrame, config: SweepConfig,
                options: MetricOptions, executor: Any, progress: bool = False) -> tuple[pd.DataFrame, int] | str:
    """Each (scheduler, steps) image set vs the target set, with a paired bootstrap over (prompt, seed) units."""
    target, sets = config.fid_reference, _Sets.of(images)
    if len(sets.units) < 2:  # a covariance (FID) or an unbiased MMD (KID) needs two images per set
        return (f"{spec.name} needs at least 2 images per (scheduler, steps) column, this sweep has {len(sets.units)} "
                "(prompts x seeds): add seeds or prompts")
    if is_stats(target) and spec.compare_stats is None:
        return f"{spec.name} needs images, not statistics: fid_reference is {target}"
    files = [(sha, run.image_path(k)) for sha, k in zip(sets.sweep.sha256, sets.sweep.key)]
    if target == OWN_REFERENCES:
        files += [(sha, run.image_path(k)) for sha, k in zip(sets.references.sha256, sets.references.key)]
    elif not is_stats(target):
        files += folder_images(target)
    store = feature_store(run, spec, options)
    computed = store.compute(spec, options, files, executor, progress)
    target_shas = [sha for sha, _ in files[len(sets.sweep):]]
    rows = _column_values(spec, run, store, sets, target, target_shas, options)
    return pd.DataFrame(rows, columns=["scheduler", "steps", "value", "ci_low", "ci_high", "n", "broken"]), computed


def _column_values(spec: MetricSpec, run: RunDir, store: FeatureStore, sets: _Sets, target: str,
                   target_shas: list[str], options: MetricOptions) -> list[tuple]:
    """(scheduler, steps, value, ci_low, ci_high, n, broken) per column, each interval cached by its inputs."""
    fixed = functools.cache(lambda: fixed_target(target, spec, store.load, target_shas))  # only if some is missing
    reference = sets.references.groupby(UNIT).sha256.first()
    about = target_id(target, target_shas)
    cache_file = run.intervals_cache(spec.name, spec.backbone + spec.feature_id(options))
    cache = read_cache(cache_file, valid=_is_interval)
    rng = np.random.default_rng(SEED)
    draws = resample_draws(len(sets.units), SET_BOOTSTRAP, rng=rng)  # shared by every complete column: paired
    rows = []
    for (scheduler, steps), whole in sets.every.groupby(["scheduler", "steps"], sort=True):
        column = sets.sweep[(sets.sweep.scheduler == scheduler) & (sets.sweep.steps == steps)]
        column = column.set_index(UNIT).reindex(sets.units).dropna(subset=["sha256"])
        if target == OWN_REFERENCES:  # paired with its unit's reference: a broken reference drops the unit
            column = column[column.index.isin(reference.index)]
        broken = len(whole) - len(column)
        if len(column) < 2:  # nothing left to compare (every image or its reference broken)
            rows.append((scheduler, steps, np.nan, np.nan, np.nan, len(column), broken))
            continue
        ref_shas = list(reference.loc[column.index]) if target == OWN_REFERENCES else []
        picks = draws if len(column) == len(sets.units) else resample_draws(len(column), SET_BOOTSTRAP, rng=rng)
        # an interval is a function of these alone: a warm rerun recomputes none
        key = digest(json.dumps([list(column.sha256), ref_shas, about, hashlib.sha256(picks.tobytes()).hexdigest(),
                                 INTERVAL_METHOD]))
        if key not in cache:
            goal = SetTarget(paired=store.load(ref_shas)) if target == OWN_REFERENCES else fixed()
            value, replicates = spec.replicates(store.load(column.sha256), goal, counts_of(picks, len(column)))
            cache[key] = [value, *(float(bound) for bound in percentile_ci(replicates))]
        rows.append((scheduler, steps, *cache[key], len(column), broken))
    atomic_write_json(cache_file, cache)
    return rows


def _read(run: RunDir, keys: Any) -> list[bytes]:
    """The PNG bytes of images, by key: the file is RunDir's to name (`image_path`), never a table's `path`."""
    return [run.image_path(k).read_bytes() for k in keys]


def _chunks(table: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(table), size):
        yield table.iloc[start:start + size]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)
