"""Stage 2: per-image scores (long table) and set scores for every metric whose weights are present.

Everything computed is cached by content: per-image values by (image sha256, reference sha256 or
prompt) under a file named for the metric's backbone + preprocessing, set-metric features by image
sha256 under a folder named for the feature extractor, set-metric intervals by their inputs (feature
hashes, target, resampled units; metrics/resample.py computes them). A per-image metric computed from image
embeddings (clip_score) keeps them in that same kind of folder, named for backbone + preprocessing, so CMMD on
the same backbone reads them instead of embedding each image again. A rerun computes nothing; new step counts
or seeds compute only their new images; a change of backbone starts a new cache.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .config import SweepConfig
from .errors import EvalkitError
from .executors import LocalExecutor
from .metrics import METRICS, metric_spec
from .metrics.base import IMAGE_PROMPT, IMAGE_REFERENCE, SET, MetricOptions, MetricSpec
from .metrics.plugins import PluginWeightsMissing
from .metrics.resample import INTERVAL_METHOD, SetTarget, counts_of
from .models import resolve_device
from .plan import reference_scheduler
from .store import REFERENCE, SCORE_COLUMNS, SWEEP, RunDir, atomic_write, atomic_write_table, is_broken, make_dirs

CHECKPOINT_EVERY = 50  # batches between cache writes: an interrupted stage resumes from there
SET_BOOTSTRAP = 200  # replicates for set-metric intervals (from one kernel matrix or decomposition per column)
TARGET_CHUNK = 1024  # target-folder features loaded at a time when summing FID moments
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class ScoreResult:
    scores: pd.DataFrame  # key, metric, value for the images of this sweep
    set_scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # set metric -> per-column rows
    computed: dict[str, int] = field(default_factory=dict)  # metric -> backbone inputs computed by this call
    # per (scheduler, steps, metric): images left unscored because they or their reference are broken
    broken: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["scheduler", "steps", "metric", "broken"]))
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why, and how to fetch its weights
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> facts for summary.json
    warnings: list[str] = field(default_factory=list)  # filled by the summary: small n, stochastic samplers


def score_images(run: RunDir, images: pd.DataFrame, config: SweepConfig, names: list[str],
                 executor: Any = None, progress: bool = False) -> ScoreResult:
    """Score on the executor's workers (default: this process); the driver reads images and writes caches.
    With `progress`, a bar per metric (and per feature extractor) for the images it computes now."""
    executor = executor or LocalExecutor()
    result = ScoreResult(scores=pd.DataFrame(columns=SCORE_COLUMNS))
    pairs = with_references(images, config)
    frames = []
    for name in names:
        try:
            spec = metric_spec(name)
        except PluginWeightsMissing as exc:
            result.skipped[name] = f"missing weights: {exc}"
            continue
        name = spec.name  # a plugin's declared name
        options = MetricOptions(device=config.device, batch_size=config.batch_size, backbone=config.backbones.get(name))
        result.metrics[name] = {"inputs": spec.inputs, "kind": spec.kind, "higher_is_better": spec.higher_is_better,
                                "backbone": options.backbone or spec.backbone, "preprocessing": spec.preprocessing,
                                "perfect": spec.perfect, **({"plugin": spec.plugin} if spec.plugin else {})}
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
    atomic_write_table(run.path / "scores.parquet", result.scores[SCORE_COLUMNS])
    return result


def with_references(images: pd.DataFrame, config: SweepConfig) -> pd.DataFrame:
    """Sweep rows with `reference_key/path/sha256/flags`: the same prompt+seed's high-step image, and
    `excluded`: the image or its reference is broken (non-finite or blank), so it is scored against nothing."""
    refs = images[images.role == REFERENCE][["prompt_id", "seed", "scheduler", "key", "path", "sha256", "flags"]]
    refs = refs.rename(columns={"scheduler": "reference_scheduler", "key": "reference_key", "path": "reference_path",
                                "sha256": "reference_sha256", "flags": "reference_flags"})
    sweep = images[images.role == SWEEP].copy()
    sweep["reference_scheduler"] = [reference_scheduler(config, s) for s in sweep.scheduler]
    pairs = sweep.merge(refs, on=["prompt_id", "seed", "reference_scheduler"], how="left")
    pairs["excluded"] = [is_broken(a) or is_broken(b) for a, b in zip(pairs["flags"], pairs["reference_flags"])]
    return pairs


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


def _image_metric(spec: MetricSpec, run: RunDir, images: pd.DataFrame, pairs: pd.DataFrame, options: MetricOptions,
                  facts: dict[str, Any], executor: Any, progress: bool = False) -> tuple[pd.DataFrame, int, list[str]]:
    """Per-image values, computed only for contents not in the cache; the backbone is built only if needed.
    Also returns this sweep's prompts the scorer had to truncate (kept beside the cache for reruns)."""
    if spec.inputs == IMAGE_REFERENCE:
        rows = pairs.dropna(subset=["reference_key"]).copy()
        rows["content"] = rows.sha256 + ":" + rows.reference_sha256
    elif spec.inputs == IMAGE_PROMPT:
        rows = images.assign(excluded=[is_broken(f) for f in images["flags"]])
        rows["content"] = [f"{sha}:{_digest(prompt)}" for sha, prompt in zip(rows.sha256, rows.prompt)]
    else:
        raise ValueError(f"metric {spec.name}: unsupported inputs {spec.inputs!r}")
    # with shared image embeddings (spec.embeddings) the key names them too: a new backbone or preprocessing rescores
    shared = spec.feature_id(options) if spec.embeddings else ""
    cache_file = (run.path / "cache" / "scores"
                  / f"{spec.name}-{_digest(json.dumps(facts, sort_keys=True) + shared)}.json")
    cache = _read_cache(cache_file)
    todo = rows[~rows.excluded & ~rows.content.isin(cache.keys())].drop_duplicates("content")
    if shared:  # embedded once per image content, in the folder other metrics on this backbone read (CMMD)
        store = feature_store(run.path, spec, options)
        store.compute(spec, options, [(sha, run.path / p) for sha, p in zip(todo.sha256, todo.path)], executor,
                      progress)
        chunks = ((list(chunk.content), (store.load(chunk.sha256), list(chunk.prompt)))
                  for chunk in _chunks(todo, options.batch_size))
    else:
        chunks = ((list(chunk.content), (_read(run, chunk.path), _read(run, chunk.reference_path)
                                         if spec.inputs == IMAGE_REFERENCE else list(chunk.prompt)))
                  for chunk in _chunks(todo, options.batch_size))
    truncated_now: set[str] = set()
    bar = _bar(len(todo), spec.name, progress)
    for i, (contents, (values, truncated_prompts)) in enumerate(
            executor.map(functools.partial(MetricWorker, spec.plugin or spec.name, options),
                         "score_embeddings" if shared else "score", chunks), start=1):
        bar.update(len(contents))
        cache.update(zip(contents, values))
        truncated_now.update(truncated_prompts)
        if i % CHECKPOINT_EVERY == 0:
            _write_json(cache_file, cache)
    bar.close()
    notes_file = cache_file.with_suffix(".truncated.json")
    notes = _read_cache(notes_file, list)
    truncated = {p for p in notes if isinstance(p, str)}
    if len(todo):
        _write_json(cache_file, cache)
        truncated |= truncated_now
        if truncated:
            atomic_write(notes_file, json.dumps(sorted(truncated)).encode())
    values = rows.content.map(cache).where(~rows.excluded)  # a broken image (or reference) has no value
    frame = pd.DataFrame({"key": rows.key.to_numpy(), "metric": spec.name, "value": values.to_numpy(dtype=float)})
    return frame, len(todo), sorted(truncated & set(rows.prompt))


def _set_metric(spec: MetricSpec, run: RunDir, images: pd.DataFrame, config: SweepConfig,
                options: MetricOptions, executor: Any, progress: bool = False) -> tuple[pd.DataFrame, int] | str:
    """Each (scheduler, steps) image set vs the target set, with a paired bootstrap over (prompt, seed) units."""
    target = config.fid_reference
    store = feature_store(run.path, spec, options)
    intact = images[[not is_broken(f) for f in images["flags"]]]  # broken images join no set
    every = images[images.role == SWEEP]
    sweep = intact[intact.role == SWEEP].sort_values(["prompt_id", "seed"])
    references = intact[intact.role == REFERENCE].sort_values(["prompt_id", "seed"])
    units = every[["prompt_id", "seed"]].drop_duplicates().sort_values(["prompt_id", "seed"]).apply(tuple, axis=1).tolist()
    if len(units) < 2:  # a covariance (FID) or an unbiased MMD (KID) needs two images per set
        return (f"{spec.name} needs at least 2 images per (scheduler, steps) column, this sweep has {len(units)} "
                "(prompts x seeds): add seeds or prompts")
    files = [(sha, run.path / p) for sha, p in zip(sweep.sha256, sweep.path)]
    if target == "references":
        files += [(sha, run.path / p) for sha, p in zip(references.sha256, references.path)]
    elif Path(target).suffix == ".npz":
        if spec.compare_stats is None:
            return f"{spec.name} needs images, not statistics: fid_reference is {target}"
    else:
        folder = [(p.read_bytes(), p) for p in sorted(Path(target).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES] \
            if Path(target).is_dir() else []
        if len(folder) < 2:
            raise EvalkitError(f"fid_reference {target} is not 'references', an .npz with mu/sigma, or a folder "
                               "with at least 2 images: point it at one of those")
        files += [(hashlib.sha256(data).hexdigest(), path) for data, path in folder]
    computed = store.compute(spec, options, files, executor, progress)
    target_shas = [sha for sha, _ in files[len(sweep):]]

    @functools.cache
    def fixed_target() -> SetTarget:
        """A folder's or an .npz's target, built only when some column's interval is not cached."""
        from .metrics.fid import FeatureMoments, load_npz_stats, stats_sqrt

        if Path(target).suffix == ".npz":
            mu, sigma = load_npz_stats(target)
        elif spec.compare_stats is not None:  # FID: the target's sums, streamed; never all its features at once
            moments = functools.reduce(operator.add, (FeatureMoments.of(store.load(target_shas[i:i + TARGET_CHUNK]))
                                                      for i in range(0, len(target_shas), TARGET_CHUNK)))
            mu, sigma = moments.mean_cov()
        else:  # an unbiased MMD needs the target's features themselves
            return SetTarget(fixed=store.load(target_shas))
        return SetTarget(stats=(mu, sigma, stats_sqrt(sigma)))

    reference = references.groupby(["prompt_id", "seed"]).sha256.first()
    target_id = _target_id(target, target_shas)
    cache_file = (run.path / "cache" / "intervals"
                  / f"{spec.name}-{_digest(spec.backbone + spec.feature_id(options))}.json")
    cache = _read_cache(cache_file, valid=_is_interval)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(units), size=(SET_BOOTSTRAP, len(units)))  # shared by every column: paired
    rows = []
    for (scheduler, steps), whole in every.groupby(["scheduler", "steps"], sort=True):
        column = sweep[(sweep.scheduler == scheduler) & (sweep.steps == steps)]
        column = column.set_index(["prompt_id", "seed"]).reindex(units).dropna(subset=["sha256"])
        if target == "references":  # paired with its unit's reference: a broken reference drops the unit
            column = column[column.index.isin(reference.index)]
        broken = len(whole) - len(column)
        if len(column) < 2:  # nothing left to compare (every image or its reference broken)
            rows.append((scheduler, steps, np.nan, np.nan, np.nan, len(column), broken))
            continue
        ref_shas = list(reference.loc[column.index]) if target == "references" else []
        complete = len(column) == len(units)
        picks = draws if complete else rng.integers(0, len(column), size=(SET_BOOTSTRAP, len(column)))
        # an interval is a function of these alone: a warm rerun recomputes none
        key = _digest(json.dumps([list(column.sha256), ref_shas, target_id, hashlib.sha256(picks.tobytes()).hexdigest(),
                                  INTERVAL_METHOD]))
        if key not in cache:
            features = store.load(column.sha256)
            goal = SetTarget(paired=store.load(ref_shas)) if target == "references" else fixed_target()
            value, replicates = spec.replicates(features, goal, counts_of(picks, len(column)))
            cache[key] = [value, *np.nanquantile(replicates, [0.025, 0.975]).tolist()]
        rows.append((scheduler, steps, *cache[key], len(column), broken))
    _write_json(cache_file, cache)
    return pd.DataFrame(rows, columns=["scheduler", "steps", "value", "ci_low", "ci_high", "n", "broken"]), computed


def _target_id(target: str, target_shas: list[str]) -> str:
    """What a set metric's target is, by content: the references (their hashes go in each column's key),
    an .npz's bytes, or a folder's image hashes."""
    if target == "references":
        return target
    if Path(target).suffix == ".npz":
        return hashlib.sha256(Path(target).read_bytes()).hexdigest()
    return _digest(json.dumps(sorted(target_shas)))


def feature_store(run_path: Path, spec: MetricSpec, options: MetricOptions) -> FeatureStore:
    """The folder of `spec`'s per-image features under `options`, named for their extractor (spec.feature_id):
    metrics with the same extractor (clip_score and CMMD on one backbone, FID and KID) share it."""
    return FeatureStore(run_path / "cache" / "features" / _digest(spec.feature_id(options)))


class FeatureStore:
    """Per-image features (set metrics, shared image embeddings), one .npy per image content hash, for one
    feature extractor."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, sha: str) -> Path:
        return self.folder / f"{sha}.npy"

    def compute(self, spec: MetricSpec, options: MetricOptions, files: list[tuple[str, Path]],
                executor: Any = None, progress: bool = False) -> int:
        """Features for the files not yet stored, on the executor's workers (one backbone replica each);
        images of different sizes go in separate batches."""
        executor = executor or LocalExecutor()
        make_dirs(self.folder)
        todo = {sha: path for sha, path in files if self._read(sha) is None}  # a corrupt entry is recomputed
        if not todo:
            return 0
        by_size: dict[tuple[int, int], list[tuple[str, Path]]] = {}
        for sha, path in todo.items():
            with Image.open(path) as image:
                by_size.setdefault(image.size, []).append((sha, path))
        chunks = (([sha for sha, _ in group[start:start + options.batch_size]],
                   ([p.read_bytes() for _, p in group[start:start + options.batch_size]],))
                  for group in by_size.values() for start in range(0, len(group), options.batch_size))
        bar = _bar(len(todo), f"{spec.name} features", progress)
        for shas, features in executor.map(functools.partial(MetricWorker, spec.plugin or spec.name, options), "features", chunks):
            bar.update(len(shas))
            for sha, row in zip(shas, features):
                buffer = io.BytesIO()
                np.save(buffer, row)
                atomic_write(self.path(sha), buffer.getvalue())
        bar.close()
        return len(todo)

    def load(self, shas) -> np.ndarray:
        return np.stack([self._read(sha) for sha in shas])

    def _read(self, sha: str) -> np.ndarray | None:
        """The stored features, or None when missing or unreadable (a torn or foreign cache file)."""
        try:
            row = np.load(self.path(sha), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return row if row.ndim == 1 and row.size and np.issubdtype(row.dtype, np.floating) else None


_LAST_SCORER: dict[str, Any] = {}  # this process's most recently built backbone: {"key": ..., "scorer": ...}


def _scorer(name: str, options: MetricOptions) -> Any:
    """The metric's scorer, reused when the previous build in this process was of the same backbone (the metric
    and its backbone option, or the shared image embeddings' identity), device and weight files (path, size,
    mtime): clip_score embeds images into the shared folder, then scores from it, and CMMD on that backbone
    embeds with it too, all from one load. One backbone is kept; the previous one is dropped first."""
    spec = metric_spec(name)
    stamps = []
    for weight in spec.weights(options):
        path = weight.path()
        stat = path.stat() if path.is_file() else None
        stamps.append((str(path), stat and (stat.st_size, stat.st_mtime_ns)))
    backbone = spec.embeddings(options) if spec.embeddings else (name, options.backbone)
    key = (backbone, options.device, options.batch_size, stamps)
    if _LAST_SCORER.get("key") != key:
        _LAST_SCORER.clear()
        _LAST_SCORER.update(key=key, scorer=spec.build(options))
    return _LAST_SCORER["scorer"]


class MetricWorker:
    """One backbone replica (in this process or on a Ray worker): encoded images in, values or features out.

    Images travel as PNG bytes, so workers need no access to the run folder."""

    def __init__(self, name: str, options: MetricOptions):
        """`name`: a registered metric or a python:MODULE:FACTORY plugin (rebuilt here from its source)."""
        # device "auto" is resolved where the backbone runs: each Ray worker's own GPU
        self.scorer = _scorer(name, dataclasses.replace(options, device=resolve_device(options.device)))

    def score(self, images: list[bytes], others: list[bytes] | list[str]) -> tuple[list[float], list[str]]:
        """Per-image values against references (bytes) or prompts (str), and the prompts truncated so far."""
        with torch.no_grad():
            batch = decode_images(images)
            values = self.scorer.score(batch, others if isinstance(others[0], str) else decode_images(others))
        return [float(v) for v in values], sorted(getattr(self.scorer, "truncated_prompts", ()))

    def score_embeddings(self, embeddings: np.ndarray, prompts: list[str]) -> tuple[list[float], list[str]]:
        """Per-image values from cached image embeddings (specs with `embeddings`) and prompts."""
        with torch.no_grad():
            values = self.scorer.score_embeddings(torch.from_numpy(embeddings), prompts)
        return [float(v) for v in values], sorted(getattr(self.scorer, "truncated_prompts", ()))

    def features(self, images: list[bytes]) -> np.ndarray:
        with torch.no_grad():
            return self.scorer.features(decode_images(images)).double().cpu().numpy()


def decode_images(images: Iterable[bytes]) -> torch.Tensor:
    """Encoded image files -> uint8 (B, 3, H, W), as stored; metrics own their preprocessing."""
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_images(paths: Iterable[Path]) -> torch.Tensor:
    """Image files -> uint8 (B, 3, H, W), as stored."""
    return decode_images(Path(p).read_bytes() for p in paths)


def _read(run: RunDir, paths: Iterable[str]) -> list[bytes]:
    return [(run.path / p).read_bytes() for p in paths]


def _chunks(table: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(table), size):
        yield table.iloc[start:start + size]


def _bar(total: int, what: str, enabled: bool) -> Any:
    """A progress bar over the images a metric computes now (the render stage's style; off for the library)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=f"score {what}", disable=not enabled or not total)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    make_dirs(path.parent)
    atomic_write(path, json.dumps(data).encode())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)


def _read_cache(path: Path, kind: type = dict, valid: Any = _is_number) -> Any:
    """A cache file, or an empty one when missing or corrupt (caches are rebuildable: entries are recomputed);
    in a dict cache, only entries that `valid` accepts are kept (a number per image; [value, low, high] per
    interval)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return kind()
    if not isinstance(data, kind):
        return kind()
    if kind is dict:
        return {k: v for k, v in data.items() if valid(v)}
    return data
