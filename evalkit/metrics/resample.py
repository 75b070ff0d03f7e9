"""A set metric's value and its bootstrap replicates for one column against a target, at real sizes.

A bootstrap resample of a column is a count vector c over its n images (c_k = times image k was drawn,
sum m = n). Every quantity the MMDs (KID, CMMD) need of a resample is a quadratic form of c with the
column's kernel matrices, so those are computed ONCE per column and each replicate costs O(n^2) instead
of O(n^2 d); the replicates equal recomputing the MMD on each explicit resample (tests). FID's cross
term is a nuclear norm, not a quadratic form: its replicates are linearised in c (`fid_replicates`),
one decomposition per column instead of one per replicate. Every metric uses the same counts, so
intervals stay paired across columns (score.py) and across two runs (set_gate.py).

Targets: `paired` reference features (one per column image, resampled with the same counts: the
high-step references), a `fixed` feature set (a folder of real images: not resampled), or `stats`
(mu, sigma, sqrt(sigma)): FID against precomputed statistics or a folder's streamed moments.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Part of every cached interval's key (score.py): intervals cached by an earlier method are recomputed, not reused
# (FID's were the explicit bootstrap's before the linearisation).
INTERVAL_METHOD = "MMD over distinct units (quadratic forms of counts); FID linearised in counts"


@dataclass(frozen=True)
class SetTarget:
    paired: np.ndarray | None = None  # (n, d): row k is column image k's reference
    fixed: np.ndarray | None = None  # (n_t, d): a fixed set of real images' features
    stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (mu, sigma, sqrt(sigma))


def counts_of(picks: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float count vectors of (B, m) resampled indices."""
    counts = np.zeros((len(picks), n))
    for row, p in zip(counts, picks):
        row += np.bincount(p, minlength=n)
    return counts


def _quad(matrix: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """c^T M c for each row c of counts."""
    return np.einsum("bi,bi->b", counts @ matrix, counts)


def mmd_replicates(kernel: Kernel, features: np.ndarray, target: SetTarget,
                   counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Unbiased MMD^2 of the column vs the target, and of each resample, over pairs of DISTINCT units.

    Paired target: the U-statistic 1/(n(n-1)) sum_{i != j} h(z_i, z_j), h = k(x_i, x_j) + k(y_i, y_j)
    - k(x_i, y_j) - k(x_j, y_i) (Gretton et al. 2012; distribution.py's D). A column image and its own
    reference share their starting noise, so the whole-set estimator (torchmetrics' KID, `mmd2_unbiased`),
    whose cross term includes those coupled pairs k(x_i, y_i), reads low (CMMD -0.095 at n = 48 on the
    default sweep); leaving same-unit pairs out makes it unbiased for the two distributions. Fixed target (a
    folder of independent images): the whole-set estimator, which is unbiased there. In a resample, draws of
    the same unit are never paired with each other either (counts c: sum_{i != j} c_i c_j / (m^2 - sum c^2)),
    so a replicate is the same statistic on the resample's units, without the upward shift that pairing an
    image with its own copy (k = 1) gave."""
    x = np.asarray(features, dtype=np.float64)
    kxx = kernel(x, x)
    all_counts = np.vstack([np.ones((1, len(x))), counts])  # row 0: the sample itself
    m = all_counts.sum(axis=1)
    squares = (all_counts ** 2).sum(axis=1)
    pairs = m * m - squares  # ordered pairs of draws of distinct units

    def distinct(matrix: np.ndarray) -> np.ndarray:
        return (_quad(matrix, all_counts) - (all_counts ** 2) @ np.diag(matrix)) / pairs

    if target.paired is not None:
        y = np.asarray(target.paired, dtype=np.float64)
        values = distinct(kxx) + distinct(kernel(y, y)) - 2.0 * distinct(kernel(x, y))
    else:
        y = np.asarray(target.fixed, dtype=np.float64)
        kyy = kernel(y, y)
        nt = len(y)
        yy = (kyy.sum() - np.trace(kyy)) / (nt * (nt - 1))
        xy = (all_counts @ kernel(x, y).sum(axis=1)) / (m * nt)  # each column image against the whole target
        values = distinct(kxx) + yy - 2.0 * xy
    return float(values[0]), values[1:]


def fid_replicates(features: np.ndarray, target: SetTarget, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """FID of the column vs paired references or (mu, sigma), and its linearised bootstrap replicates.

    The exact bootstrap recomputes FID per resample: 200 decompositions of a k x k (k ~ 0.63 n distinct images
    drawn) or d x d matrix, ~100x one evaluation. The linearised bootstrap (infinitesimal jackknife / delta
    method: Jaeckel 1972, Efron 1982 ch. 6) needs one decomposition with vectors (1.2-2.3x one evaluation at
    n = 500-5,000): replicate(c) = FID + g.(c - 1), g = `fid_gradient`. Same counts as every other set metric,
    so pairing across columns and runs is unchanged. Its percentile CI is centred on the estimate; the exact
    bootstrap's is not: a resample holds ~0.63 n distinct images and FID's small-n bias grows as that falls,
    so on Gaussian d = 2048 features at n = 500 / 2,000 / 5,000 its replicates sit 25 / 46 / 55 of their SDs
    above the estimate and spread 5 / 12 / 16x wider than FID varies over fresh samples, where the linearised
    SD is 1.05 / 1.29 / 1.48x that true SD (bench/set_intervals.py, bench/README.md)."""
    value, gradient = fid_gradient(features, target)
    return value, value + (counts - 1.0) @ gradient


def fid_gradient(features: np.ndarray, target: SetTarget) -> tuple[float, np.ndarray]:
    """FID and g_k = dFID(c)/dc_k at c = 1, where FID(c) weights image k (and its paired reference) by c_k:
    mean sum c_k x_k / m, covariance sum c_k x~_k x~_k^T / (m - 1), m = sum c.

    With A the centred column / sqrt(n - 1) (rows a_k), B likewise for paired references, and the cross
    matrix M = A B^T (paired) or A sqrt(sigma) (stats) = U S V^T, T = tr sqrt(Sigma_x Sigma_y) = sum S and
      paired: dT/dc_k = (U S U^T)_kk / 2 + (V S V^T)_kk / 2 - T / (n - 1)
      stats:  dT/dc_k = (U S U^T)_kk / 2 - T / (2 (n - 1))
    (the re-centring terms vanish: 1^T U = 0 = 1^T V; zero singular values add nothing, as their singular
    vectors annihilate every weight perturbation of M), d|mu_x - mu_y|^2/dc_k = 2 (mu_x - mu_y).(x~_k - y~_k) / n
    and d tr Sigma_x/dc_k = (|x~_k|^2 - tr Sigma_x) / (n - 1). M is decomposed through `_factored`: for n > d
    as Q_a (R_a R_b^T) Q_b^T, so the SVD is d x d. Checked against finite differences of the weighted FID."""
    from .fid import _centred

    x = np.asarray(features, dtype=np.float64)
    n, a = len(x), _centred(x)
    basis_a, core_a = _factored(a)
    if target.paired is not None:
        y = np.asarray(target.paired, dtype=np.float64)
        b = _centred(y)
        basis_b, core_b = _factored(b)
        p, s, qt = np.linalg.svd(core_a @ core_b.T, full_matrices=False)
        u, v = _lift(basis_a, p), _lift(basis_b, qt.T)
        diff, spread = x.mean(axis=0) - y.mean(axis=0), a - b
        cross_gradient = 0.5 * ((u * u) @ s + (v * v) @ s) - s.sum() / (n - 1)
        traces = _trace_and_gradient(a, n), _trace_and_gradient(b, n)
    else:
        mu, sigma, root = target.stats
        p, s, _ = np.linalg.svd(core_a @ root, full_matrices=False)
        u = _lift(basis_a, p)
        diff, spread = x.mean(axis=0) - mu, a
        cross_gradient = 0.5 * (u * u) @ s - s.sum() / (2.0 * (n - 1))
        traces = _trace_and_gradient(a, n), (float(np.trace(sigma)), 0.0)
    value = float(diff @ diff) + sum(t for t, _ in traces) - 2.0 * s.sum()
    gradient = 2.0 * np.sqrt(n - 1) / n * (spread @ diff) + sum(g for _, g in traces) - 2.0 * cross_gradient
    return value, gradient


def _factored(a: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(Q, R) with A = Q R, Q orthonormal columns, R min(n, d) x d: A's reduced QR when n > d, else
    (None, A) for Q = I."""
    if a.shape[0] > a.shape[1]:
        return np.linalg.qr(a)
    return None, a


def _lift(basis: np.ndarray | None, vectors: np.ndarray) -> np.ndarray:
    """Singular vectors of R's products back in image space: Q @ vectors (Q = I when None)."""
    return vectors if basis is None else basis @ vectors


def _trace_and_gradient(a: np.ndarray, n: int) -> tuple[float, np.ndarray]:
    """tr Sigma and its gradient (|x~_k|^2 - tr Sigma) / (n - 1) = |a_k|^2 - tr Sigma / (n - 1)."""
    rows = np.einsum("ij,ij->i", a, a)
    trace = float(rows.sum())
    return trace, rows - trace / (n - 1)
