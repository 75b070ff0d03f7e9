"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID"): MMD^2 between CLIP image embeddings.

Kernel and scale as in the authors' google-research/cmmd ``distance.py``: Gaussian RBF
k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, on L2-normalised CLIP image embeddings, and
the MMD^2 multiplied by 1000. Estimator: the UNBIASED MMD^2 (diagonal terms left out of the within-set
means), so its expectation is the population MMD^2 at every n: it does not drift with the sample size as
FID does (bench/cmmd_drift.py shows it on builtin:mixture). The reference code averages the full kernel
matrices (the biased V-statistic, which adds (1 - mean k_xx off-diagonal)/n-type terms, ~ +1000 *
(E||x - x'||^2 / 200) / n); the two agree as n grows and the difference is exactly the diagonal terms
(tests check both).

Backbone: the paper's CLIP ViT-L/14 at 336 px (open_clip ``ViT-L-14-336`` with the ``openai`` tag) by
default; any open_clip backbone via ``backbones = { cmmd = "MODEL/TAG" }`` or ``"MODEL@/path/ckpt"``, loaded
and preprocessed exactly as ``clip_score`` does (evalkit/metrics/clip.py). Embeddings are cached by image
content in a feature folder named for the backbone and preprocessing (clip.embedding_id), the same folder
clip_score reads when it uses the same backbone: each image is embedded once for both.
"""
from __future__ import annotations

import numpy as np

from ..stats.mmd import mmd2
from . import clip
from .base import REALISM, SET, MetricOptions, MetricSpec, mmd_interval, register

DEFAULT_BACKBONE = "ViT-L-14-336/openai"
SIGMA = 10.0  # google-research/cmmd distance.py _SIGMA
SCALE = 1000.0  # google-research/cmmd distance.py _SCALE


def rbf_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """exp(-||x - y||^2 / (2 sigma^2)), the squared distances from inner products as the reference does."""
    sq = np.sum(x * x, axis=1)[:, None] + np.sum(y * y, axis=1)[None, :] - 2.0 * (x @ y.T)
    return np.exp(-sq / (2.0 * SIGMA ** 2))


def scaled_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SCALE * k: MMD^2 is linear in the kernel, so every CMMD value and replicate carries the scale."""
    return SCALE * rbf_kernel(x, y)


def cmmd(features: np.ndarray, reference_features: np.ndarray) -> float:
    """CMMD of two embedding sets (unbiased MMD^2 x 1000)."""
    return mmd2(scaled_kernel, features, reference_features)


cmmd_replicates = mmd_interval(scaled_kernel)


def _with_default(options: MetricOptions) -> MetricOptions:
    return MetricOptions(device=options.device, batch_size=options.batch_size,
                         backbone=options.backbone or DEFAULT_BACKBONE)


def weights(options: MetricOptions):
    return clip.weights(_with_default(options))


def build(options: MetricOptions) -> clip.ClipScorer:
    """clip_score's scorer: its `features` are the L2-normalised image embeddings CMMD compares."""
    return clip.build(_with_default(options))


CMMD_SPEC = register(MetricSpec(
    name="cmmd",
    inputs=SET,
    kind=REALISM,
    higher_is_better=False,
    backbone=DEFAULT_BACKBONE,
    preprocessing=clip.PREPROCESSING.split(" Text:")[0].replace("ViT-B-32: image_size 224",
                                                                  "ViT-L-14-336: image_size 336").rstrip(". ")
    + f"; L2-normalised embeddings, Gaussian RBF sigma {SIGMA:g}, x{SCALE:g}, unbiased MMD^2",
    embeddings=lambda options: clip.embedding_id(options.backbone or DEFAULT_BACKBONE),
    compare=cmmd,
    replicates=cmmd_replicates,
    kernel=scaled_kernel,
    kernel_text=f"CMMD's Gaussian RBF kernel (sigma {SIGMA:g}, x{SCALE:g}) on L2-normalised CLIP image embeddings",
    build=build,
    weights=weights,
))
