"""The metric contract: a spec that tells the truth about its inputs and weights, a scorer, and the registry of specs.

Scorers receive images as uint8 tensors (B, 3, H, W) exactly as stored in the PNGs; each scorer
owns its preprocessing (range, resize, normalisation) and names it in its spec, because a score
is only comparable with scores computed the same way.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import EvalkitError
from ..registry import Registry
from ..stats.mmd import Kernel, mmd2_replicates

IMAGE_PROMPT, IMAGE_REFERENCE, SET = "image+prompt", "image+reference", "set"
CONVERGENCE, ALIGNMENT, REALISM = "convergence", "alignment", "realism"
PREFERENCE = "preference"  # learned human-preference, reward and aesthetic scores: absolute, per image


# Part of every cached set-metric interval's key (stages/score.py): intervals cached by an earlier method are
# recomputed, not reused (FID's were the explicit bootstrap's before the linearisation).
INTERVAL_METHOD = "MMD over distinct units (quadratic forms of counts); FID linearised in counts"


@dataclass(frozen=True)
class SetTarget:
    """What a set metric compares a column with: `paired` reference features (one per column image, resampled with
    the same counts: the high-step references), a `fixed` feature set (a folder of real images: not resampled),
    or `stats` (mu, sigma, sqrt(sigma)): FID against precomputed statistics or a folder's streamed moments."""

    paired: np.ndarray | None = None  # (n, d): row k is column image k's reference
    fixed: np.ndarray | None = None  # (n_t, d): a fixed set of real images' features
    stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (mu, sigma, sqrt(sigma))


def mmd_interval(kernel: Kernel) -> Callable[[np.ndarray, SetTarget, np.ndarray], tuple[float, np.ndarray]]:
    """A kernel MMD metric's `replicates` (stats/mmd.py's estimator against a paired or fixed target)."""
    def replicates(features: np.ndarray, target: SetTarget, counts: np.ndarray) -> tuple[float, np.ndarray]:
        return mmd2_replicates(kernel, features, counts, paired=target.paired, fixed=target.fixed)

    return replicates


@dataclass(frozen=True)
class WeightFile:
    """A file a backbone needs, where its library's own loader looks for it, and how to fetch it."""

    description: str
    path: Callable[[], Path]  # resolved at call time: honours TORCH_HOME / HF_HOME set later
    fetch: str  # the exact command or URL to get it on a connected machine

    def found(self) -> bool:
        return self.path().is_file()


@dataclass(frozen=True)
class MetricOptions:
    device: str = "cpu"
    batch_size: int = 16
    backbone: str | None = None  # None: the metric's documented default


@dataclass(frozen=True)
class MetricSpec:
    name: str
    inputs: str  # IMAGE_PROMPT | IMAGE_REFERENCE | SET
    kind: str  # CONVERGENCE (to the high-step reference) | ALIGNMENT | REALISM
    higher_is_better: bool
    backbone: str
    preprocessing: str
    build: Callable[[MetricOptions], Any] = field(repr=False)
    weights: Callable[[MetricOptions], Sequence[WeightFile]] = field(default=lambda options: (), repr=False)
    # set metrics: what identifies their per-image features (metrics that share it share the feature
    # cache), the distance between two feature sets, and optionally to precomputed (mu, sigma)
    features: str = ""
    # metrics computed from image embeddings of a selectable backbone: the embeddings' identity (backbone and the
    # preprocessing it implies) for given options. Metrics with equal identities share one feature folder, and a
    # per-image metric with it scores from the cached embeddings (scorer.score_embeddings), so a backbone shared
    # by clip_score and CMMD runs its image tower once per image.
    embeddings: Callable[[MetricOptions], str] | None = field(default=None, repr=False)
    compare: Callable[..., float] | None = field(default=None, repr=False)
    compare_stats: Callable[..., float] | None = field(default=None, repr=False)
    # set metrics: (features, SetTarget, (B, n) counts) -> (value, B bootstrap replicates)
    replicates: Callable[..., tuple[float, Any]] | None = field(default=None, repr=False)
    # kernel MMD metrics (KID, CMMD): their kernel and how to name it; the distribution rule judges with them
    kernel: Kernel | None = field(default=None, repr=False)
    kernel_text: str = ""
    min_n: int = 0  # below this many images a set value is biased: flagged "small-n" with a warning
    perfect: float | None = None  # convergence metrics: the value of an image against itself (the plateau)
    # the default min-steps tolerance (minsteps.perseed.default_tolerances) and, in one line, what a difference of
    # that size means (the README's table and the report say it)
    tolerance: float | None = None
    meaning: str = ""
    # the smallest image side the scorer can take (a convolution's receptive field, a padded window); images are
    # checked against it before anything renders
    min_size: Callable[[MetricOptions], int] = field(default=lambda options: 1, repr=False)
    plugin: str = ""  # python:MODULE:FACTORY the spec was loaded from: how a worker process rebuilds it

    def missing_weights(self, options: MetricOptions) -> list[WeightFile]:
        return [w for w in self.weights(options) if not w.found()]

    def feature_id(self, options: MetricOptions) -> str:
        """What identifies this metric's cached per-image features under `options` (a feature folder's name)."""
        if self.embeddings is not None:
            return self.embeddings(options)
        chosen = f"\n{options.backbone}" if options.backbone else ""
        return (self.features or self.backbone + self.preprocessing) + chosen


METRICS: Registry[MetricSpec] = Registry("metric")  # filled by each family's module (metrics/__init__.py)


def register(spec: MetricSpec) -> MetricSpec:
    return METRICS.add(spec.name, spec)


class PairScorer(Protocol):
    """image+reference: one value per (image, reference) pair."""

    def score(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor: ...


class PromptScorer(Protocol):
    """image+prompt: one value per (image, prompt) pair."""

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


class EmbeddingScorer(PromptScorer, Protocol):
    """image+prompt from cacheable image embeddings (specs with `embeddings`): `features` fills the shared
    feature folder, `score_embeddings` scores those embeddings against prompts."""

    def features(self, images: torch.Tensor) -> torch.Tensor: ...

    def score_embeddings(self, embeddings: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


class SetScorer(Protocol):
    """set: per-image features (cacheable); the spec's `compare` gives one value per pair of feature sets."""

    def features(self, images: torch.Tensor) -> torch.Tensor: ...


def require_weights(weights: Sequence[WeightFile], metric: str) -> None:
    """Refuse to build when a file is missing: the library's loader would otherwise download it."""
    missing = [w for w in weights if not w.found()]
    if missing:
        where = "; ".join(f"{w.description} at {w.path()} (fetch: {w.fetch})" for w in missing)
        raise EvalkitError(f"{metric}: missing weights, evalkit never downloads: {where}")


def torch_home() -> Path:
    """Where torch.hub (torchvision, lpips backbones, torch-fidelity Inception) keeps checkpoints."""
    return Path(os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch").expanduser()


def hf_home() -> Path:
    """Hugging Face's home ($HF_HOME, else $XDG_CACHE_HOME/huggingface): the hub cache and the datasets cache live
    under it. Resolved now: huggingface_hub and datasets freeze it at import time."""
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(os.path.expandvars(str(home))).expanduser()


def hub_checkpoint(filename: str) -> Path:
    return torch_home() / "hub" / "checkpoints" / filename
