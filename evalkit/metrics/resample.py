"""A set metric's value and its bootstrap replicates for one column against a target, at real sizes.

A bootstrap resample of a column is a count vector c over its n images (c_k = times image k was drawn,
sum m = n). Every quantity FID and the MMDs need of a resample is a quadratic form of c with the
column's Gram or kernel matrices, so those matrices are computed ONCE per column and each replicate
costs O(n^2) (MMD) or O(n^2 + k^3) (FID, k = distinct images drawn, ~0.63 n) instead of recomputing
features products in O(n^2 d) per replicate. The replicates equal the old "recompute on features[picks]"
ones to float rounding (tests), so the intervals come from the same resampling scheme.

Targets: `paired` reference features (one per column image, resampled with the same counts: the
high-step references), a `fixed` feature set (a folder of real images: not resampled), or `stats`
(mu, sigma, sqrt(sigma)): FID against precomputed statistics or a folder's streamed moments.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
    """Unbiased MMD^2 of the column vs the target, and of each resample (the estimator of
    `mmd2_unbiased` applied to features[picks], with duplicates counted as the explicit resample does)."""
    x = np.asarray(features, dtype=np.float64)
    kxx = kernel(x, x)
    if target.paired is not None:
        y = np.asarray(target.paired, dtype=np.float64)
        kyy, kxy = kernel(y, y), kernel(x, y)
    else:
        y = np.asarray(target.fixed, dtype=np.float64)
        kyy_full = kernel(y, y)
        nt = len(y)
        yy_fixed = (kyy_full.sum() - np.trace(kyy_full)) / (nt * (nt - 1))
        cross_rows = kernel(x, y).sum(axis=1)  # sum over the target for each column image
    all_counts = np.vstack([np.ones((1, len(x))), counts])  # row 0: the sample itself
    m = all_counts.sum(axis=1)
    xx = (_quad(kxx, all_counts) - all_counts @ np.diag(kxx)) / (m * (m - 1))
    if target.paired is not None:
        yy = (_quad(kyy, all_counts) - all_counts @ np.diag(kyy)) / (m * (m - 1))
        xy = _quad(kxy, all_counts) / (m * m)
    else:
        yy = yy_fixed
        xy = (all_counts @ cross_rows) / (m * nt)
    values = xx + yy - 2.0 * xy
    return float(values[0]), values[1:]


def fid_replicates(features: np.ndarray, target: SetTarget, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """FID of the column vs paired references or (mu, sigma), and of each resample, from Gram matrices.

    With D = diag(c) and Xc the column centred on the resample's mean, the resample's cross term
    tr sqrt(Sigma_x Sigma_y) is the nuclear norm of D^1/2 Xc Yc^T D^1/2 / (m - 1) on the k drawn images
    (the explicit resample repeats rows; repeated rows scale singular values exactly as sqrt(c) does),
    and Xc Yc^T is the Gram X Y^T re-centred with O(n) vectors: no pass over the d feature columns.
    The value itself is computed as today (`frechet_distance_fast` / `frechet_distance_to_stats`)."""
    from .fid import frechet_distance_fast, frechet_distance_to_stats

    x = np.asarray(features, dtype=np.float64)
    if target.paired is not None:
        y = np.asarray(target.paired, dtype=np.float64)
        value = frechet_distance_fast(x, y)
        gxx, gyy, gxy = x @ x.T, y @ y.T, x @ y.T
        replicates = [_fid_paired(gxx, gyy, gxy, c) for c in counts]
    else:
        mu, sigma, root = target.stats
        value = frechet_distance_to_stats(x, mu, sigma, root)
        z = x @ root
        gxx, gzz, xmu = x @ x.T, z @ z.T, x @ mu
        constant = float(mu @ mu + np.trace(sigma))
        replicates = [_fid_stats(gxx, gzz, xmu, constant, c) for c in counts]
    return value, np.asarray(replicates)


def _centred(gram: np.ndarray, c: np.ndarray, m: float) -> tuple[np.ndarray, float]:
    """The Gram of rows centred on their c-weighted means, and c^T G c / m^2 (the means' product)."""
    left, right = gram @ c / m, c @ gram / m
    both = float(c @ right) / m
    return gram - left[:, None] - right[None, :] + both, both


def _trace_term(gram: np.ndarray, c: np.ndarray, m: float) -> tuple[float, float]:
    """(sum of squared centred rows / (m - 1), |mean|^2) of the resample, from its Gram."""
    square = float(c @ gram @ c) / (m * m)
    return (float(c @ np.diag(gram)) - m * square) / (m - 1), square


def _fid_paired(gxx: np.ndarray, gyy: np.ndarray, gxy: np.ndarray, c: np.ndarray) -> float:
    m, keep = c.sum(), c > 0
    tx, _ = _trace_term(gxx, c, m)
    ty, _ = _trace_term(gyy, c, m)
    mean = float(c @ (gxx - gxy - gxy.T + gyy) @ c) / (m * m)
    cross_gram, _ = _centred(gxy, c, m)
    w = np.sqrt(c[keep])
    cross = np.linalg.svd(w[:, None] * cross_gram[np.ix_(keep, keep)] * w[None, :], compute_uv=False).sum()
    return mean + tx + ty - 2.0 * cross / (m - 1)


def _fid_stats(gxx: np.ndarray, gzz: np.ndarray, xmu: np.ndarray, constant: float, c: np.ndarray) -> float:
    """constant = |mu|^2 + tr(sigma) of the target."""
    m, keep = c.sum(), c > 0
    tx, square = _trace_term(gxx, c, m)
    mean = square - 2.0 * float(c @ xmu) / m  # |mu_c - mu|^2 without the target's |mu|^2
    zz, _ = _centred(gzz, c, m)
    w = np.sqrt(c[keep])
    eig = np.linalg.eigvalsh(w[:, None] * zz[np.ix_(keep, keep)] * w[None, :])
    cross = np.sqrt(np.clip(eig, 0.0, None)).sum() / np.sqrt(m - 1)
    return mean + tx + constant - 2.0 * cross
