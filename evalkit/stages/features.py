"""Per-image features of set metrics (and image embeddings metrics share), cached by image content hash in a
folder per feature extractor, and computed on the executor's workers for the images not cached yet."""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..metrics.base import MetricOptions, MetricSpec
from ..store.files import atomic_write, make_dirs
from ..store.folder import RunDir
from .executors import LocalExecutor
from .workers import MetricWorker


def progress_bar(total: int, what: str, enabled: bool) -> Any:
    """A bar over the images a metric computes now (the render stage's style; off for the library)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=f"score {what}", disable=not enabled or not total)


def feature_store(run: RunDir, spec: MetricSpec, options: MetricOptions) -> FeatureStore:
    """The folder of `spec`'s per-image features under `options`, named for their extractor (spec.feature_id):
    metrics with the same extractor (clip_score and CMMD on one backbone, FID and KID) share it."""
    return FeatureStore(run.features_dir(spec.feature_id(options)))


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
        shown = progress_bar(len(todo), f"{spec.name} features", progress)
        worker = functools.partial(MetricWorker, spec.plugin or spec.name, options)
        for shas, features in executor.map(worker, "features", chunks):
            shown.update(len(shas))
            for sha, row in zip(shas, features):
                buffer = io.BytesIO()
                np.save(buffer, row)
                atomic_write(self.path(sha), buffer.getvalue())
        shown.close()
        return len(todo)

    def load(self, shas) -> np.ndarray:
        return np.stack([self._read(sha) for sha in shas])

    def missing(self, shas) -> list[str]:
        return [s for s in shas if not self.path(s).is_file()]

    def _read(self, sha: str) -> np.ndarray | None:
        """The stored features, or None when missing or unreadable (a torn or foreign cache file)."""
        try:
            row = np.load(self.path(sha), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return row if row.ndim == 1 and row.size and np.issubdtype(row.dtype, np.floating) else None
