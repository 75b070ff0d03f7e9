"""What a metric worker holds (in this process or on a Ray worker): one backbone replica, fed encoded images.

Images travel as PNG bytes, so workers need no access to the run folder; the driver reads and writes it."""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..metrics import metric_spec
from ..metrics.base import MetricOptions
from ..models import resolve_device

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
    """One backbone replica: encoded images in, values or features out."""

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
