"""Independent references for the FID/KID evalkit computes: torchmetrics' own metric classes fed the same
features (through an identity "feature extractor"), and scipy's matrix square root."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


class Identity(torch.nn.Module):
    """A torchmetrics feature extractor that hands precomputed features through unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchmetrics_fid(a, b) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    metric = FrechetInceptionDistance(feature=Identity(a.shape[1]))
    metric.update(b, real=True)
    metric.update(a, real=False)
    return float(metric.compute())


def torchmetrics_kid(a, b, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> float:
    """torchmetrics' KID mean; subset_size defaults to the smaller set (each subset then is a whole set
    when the sets have equal size)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = KernelInceptionDistance(feature=Identity(a.shape[1]), subsets=subsets,
                                         subset_size=subset_size or min(len(a), len(b)))
    metric.update(b, real=True)
    metric.update(a, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(metric.compute()[0])


def scipy_fid(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * root))
