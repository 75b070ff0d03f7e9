"""FID and KID: set-level realism from Inception-v3 pool features (torchmetrics + torch-fidelity).

Backbone: torchmetrics' ``NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])``, a
subclass of torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF "2015-12-05" FID Inception ported
to PyTorch). It is what ``torchmetrics.image.fid.FrechetInceptionDistance(feature=2048)`` builds. Its
constructor loads ``torch.hub.load_state_dict_from_url(URL_INCEPTION_V3)``, i.e. the file
``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (downloaded if missing, so
``build`` refuses to run without it). torch-fidelity must be installed (``pip install torch-fidelity``,
or ``torchmetrics[image]``): torchmetrics' Inception is a subclass of its class.

Preprocessing (checked in torchmetrics/image/fid.py ``NoTrainInceptionV3._torch_fidelity_forward``):
the input must be uint8 (B, 3, H, W) in [0, 255] (it asserts the dtype); it is cast to float32,
resized to 299x299 with ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
antialias=True)`` (torchmetrics' default ``antialias=True``; torch-fidelity's own forward uses a
TF1-compatible bilinear without antialiasing instead, and clean-fid uses PIL bicubic: the three give
different FIDs), then mapped to [-1, 1) with ``(x - 128) / 128``. Features: the 2048-d average-pool
output, returned here as float64.

Comparison (what the specs' ``replicates`` compute; ``compare`` / ``compare_stats`` give the same values): the
exact Fréchet distance from the features' Gram matrices or d x d QR factors (``frechet_distance_fast``, or
``frechet_distance_to_stats`` against precomputed mu/sigma) and KID as torchmetrics' unbiased polynomial-kernel MMD^2 on whole sets
(``mmd2_unbiased``) against a folder of independent images; against the run's own references, whose images
share their starting noise with the column's, the same kernel over distinct (prompt, seed) units only
(``stats.mmd.paired_mmd2``). The tests check these against torchmetrics' ``FrechetInceptionDistance`` /
``KernelInceptionDistance`` and scipy's ``sqrtm`` as independent references.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import EvalkitError
from ..stats.mmd import mmd2
from .base import (REALISM, SET, MetricOptions, MetricSpec, SetTarget, WeightFile, hub_checkpoint, mmd_interval,
                   register, require_weights)

FEATURE_DIM = 2048
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
ANTIALIAS = True  # torchmetrics' default for FrechetInceptionDistance / NoTrainInceptionV3

# FID is biased at small n (the bias depends on the model: Chong & Forsyth); the original authors ask
# for at least 2048 samples (also the feature dimension: below it the covariance is rank-deficient)
# and recommend 10k+. Below this, report FID with a warning and prefer KID.
FID_MIN_N = 2048


def fid_small_n_warning(n: int) -> str | None:
    """The caveat to print next to an FID computed from ``n`` images, or None when n >= FID_MIN_N."""
    if n >= FID_MIN_N:
        return None
    return (f"FID from {n} images (< {FID_MIN_N}): biased upwards at small n, and the bias depends on the model; "
            "compare only at equal n, prefer KID")

# KID as in torchmetrics: polynomial kernel k(x, y) = (gamma <x, y> + coef) ** degree, gamma = 1 / d.
KID_DEGREE, KID_COEF = 3, 1.0

BACKBONE = "inception-v3-compat (torch-fidelity FID weights, via torchmetrics NoTrainInceptionV3), 2048-d pool features"
PREPROCESSING = (
    "uint8 [0, 255] given as is to torchmetrics NoTrainInceptionV3: cast to float32, resized to 299x299 by "
    "torch bilinear (align_corners=False, antialias=True), then (x - 128) / 128"
)


def inception_weights(options: MetricOptions | None = None) -> list[WeightFile]:
    return [
        WeightFile(
            description="FID Inception-v3 (TF 2015-12-05 port, torch-fidelity)",
            path=lambda: hub_checkpoint(INCEPTION_FILE),
            fetch=(
                f"curl -L --create-dirs -o \"${{TORCH_HOME:-$HOME/.cache/torch}}/hub/checkpoints/{INCEPTION_FILE}\" "
                f"{INCEPTION_URL}"
            ),
        )
    ]


class InceptionFeatures:
    """Shared feature extractor: uint8 images -> (B, 2048) float64 Inception pool features."""

    metric_name = "inception"

    def __init__(self, options: MetricOptions):
        from torchmetrics.image.fid import NoTrainInceptionV3

        if options.backbone not in (None, "inception", "inception-v3-compat"):
            raise EvalkitError(f"{self.metric_name}: only the inception-v3-compat backbone is supported, got {options.backbone!r}")
        require_weights(inception_weights(options), self.metric_name)
        self.device = torch.device(options.device)
        self.batch_size = max(1, int(options.batch_size))
        # Loaded once, through torch-fidelity's own path (torch.hub cache under TORCH_HOME).
        self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(FEATURE_DIM)], antialias=ANTIALIAS)
        self.model.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"{self.metric_name}: expects uint8 images as stored in PNGs, got {images.dtype}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.metric_name}: expected (B, 3, H, W) images, got {tuple(images.shape)}")
        out = [
            self.model(images[start : start + self.batch_size].to(self.device)).to("cpu", torch.float64)
            for start in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


class FIDScorer(InceptionFeatures):
    """set: Inception features; the distance is FID_SPEC.compare (exact Fréchet distance)."""

    metric_name = "fid"


class KIDScorer(InceptionFeatures):
    """set: Inception features; the distance is KID_SPEC.compare (unbiased polynomial-kernel MMD^2)."""

    metric_name = "kid"


def load_npz_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed statistics in the pytorch-fid / clean-fid ``.npz`` format (keys ``mu``, ``sigma``).

    Only comparable with our features if they were computed with the same Inception weights *and* the
    same resize: clean-fid's stats use PIL bicubic resizing, pytorch-fid's torch bilinear without
    antialiasing; ours use torchmetrics' antialiased bilinear (see PREPROCESSING).
    """
    fix = f"point fid_reference at an .npz with {FEATURE_DIM}-d Inception mu/sigma (pytorch-fid / clean-fid format)"
    if not Path(path).is_file():
        raise EvalkitError(f"fid_reference {path} not found: {fix}")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise EvalkitError(f"fid_reference {path} is not an .npz archive: {fix}")
    try:
        with np.load(path) as data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise EvalkitError(f"{path}: not FID statistics, missing key(s) {sorted(missing)} (has {data.files}): {fix}")
            mu, sigma = np.asarray(data["mu"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EvalkitError(f"fid_reference {path} is not a readable .npz ({str(exc).splitlines()[0]}): {fix}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise EvalkitError(f"{path}: mu {mu.shape} / sigma {sigma.shape} are not a mean and its covariance: {fix}")
    if mu.shape[0] != FEATURE_DIM:
        raise EvalkitError(f"{path}: statistics of {mu.shape[0]}-d features, but FID here uses {FEATURE_DIM}-d "
                           f"Inception pool features: {fix}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise EvalkitError(f"{path}: mu/sigma hold NaN or infinite values: {fix}")
    return mu, sigma


def frechet_distance_fast(features: np.ndarray, reference_features: np.ndarray) -> float:
    """The exact Fréchet distance without a d x d matrix square root: what evalkit reports.

    With A_i the centred features / sqrt(n_i - 1) (n_i x d), Sigma_i = A_i^T A_i, and the nonzero
    eigenvalues of Sigma_1 Sigma_2 are the squared singular values of A_1 A_2^T. So tr sqrt(Sigma_1 Sigma_2)
    is the nuclear norm of A_1 A_2^T, or of R_1 R_2^T for any R_i with R_i^T R_i = Sigma_i (`_reduced`: A_i
    itself when n_i <= d, its d x d QR factor when n_i > d), so the matrix decomposed is at most
    min(n, d) square: O(n^2 d) below d images, O(n d^2) above. No sqrt of the rounding noise in zero
    eigenvalues (where torchmetrics' eigvals-based `_compute_fid` spends seconds per call at d = 2048 and
    loses digits). Checked against torchmetrics' FrechetInceptionDistance and scipy's sqrtm in the tests.
    """
    a, b = _centred(features), _centred(reference_features)
    mean_term = float(np.sum((features.mean(axis=0) - reference_features.mean(axis=0)) ** 2))
    cross = np.linalg.svd(_reduced(a) @ _reduced(b).T, compute_uv=False).sum()
    return mean_term + float(np.sum(a * a) + np.sum(b * b) - 2.0 * cross)


class FeatureMoments:
    """Sums over a feature set (count, sum, sum of outer products): all FID needs of a set.

    Sums merge exactly by addition, in any order and split (chunks of a large target folder, the shares of
    several workers), which averaging FIDs computed on the parts never would; and they need O(d^2)
    memory however many images went in."""

    def __init__(self, dim: int):
        self.n, self.total, self.outer = 0, np.zeros(dim), np.zeros((dim, dim))

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureMoments:
        f = np.asarray(features, dtype=np.float64)
        moments = cls(f.shape[1])
        moments.n, moments.total, moments.outer = len(f), f.sum(axis=0), f.T @ f
        return moments

    def __add__(self, other: FeatureMoments) -> FeatureMoments:
        merged = FeatureMoments(len(self.total))
        merged.n, merged.total, merged.outer = self.n + other.n, self.total + other.total, self.outer + other.outer
        return merged

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) with the unbiased covariance (np.cov of the features, as torchmetrics and pytorch-fid)."""
        mu = self.total / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def stats_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root of a covariance (eigh; tiny negative eigenvalues from rounding clipped)."""
    values, vectors = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_to_stats(features: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                              sigma_sqrt: np.ndarray | None = None) -> float:
    """Exact FID of a feature set against (mu, sigma): tr sqrt(Sigma_1 Sigma) = nuclear norm of A_1 sqrt(Sigma)
    (= of R_1 sqrt(Sigma), `_reduced`)."""
    root = stats_sqrt(sigma) if sigma_sqrt is None else sigma_sqrt
    a = _centred(features)
    mean_term = float(np.sum((features.mean(axis=0) - mu) ** 2))
    cross = np.linalg.svd(_reduced(a) @ root, compute_uv=False).sum()
    return mean_term + float(np.sum(a * a) + np.trace(sigma) - 2.0 * cross)


def mmd2_unbiased(features: np.ndarray, reference_features: np.ndarray) -> float:
    """KID on whole sets: the unbiased polynomial-kernel MMD^2 torchmetrics computes per subset.

    torchmetrics draws random subsets (size capped at the smaller set); on whole sets the estimator
    is the same with no subset randomness, so intervals can resample it directly (stats/mmd.py).
    """
    return mmd2(kid_kernel, features, reference_features)


def kid_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's polynomial kernel (gamma <x, y> + coef) ** degree, gamma = 1 / d."""
    return ((1.0 / x.shape[1]) * (x @ y.T) + KID_COEF) ** KID_DEGREE


def _centred(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return (f - f.mean(axis=0)) / np.sqrt(len(f) - 1)


def _reduced(a: np.ndarray) -> np.ndarray:
    """A matrix R with R^T R = A^T A and min(n, d) rows: A itself, or its QR factor when n > d (stable on
    rank-deficient features, unlike a square root of A^T A: no sqrt of rounding noise)."""
    return np.linalg.qr(a, mode="r") if a.shape[0] > a.shape[1] else a


def fid_replicates(features: np.ndarray, target: SetTarget, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """FID of the column vs paired references or (mu, sigma), and its linearised bootstrap replicates.

    The exact bootstrap recomputes FID per resample: 200 decompositions of a k x k (k ~ 0.63 n distinct images
    drawn) or d x d matrix, ~100x one evaluation. The linearised bootstrap (infinitesimal jackknife / delta
    method: Jaeckel 1972, Efron 1982 ch. 6) needs one decomposition with vectors (1.2-2.3x one evaluation at
    n = 500-5,000): replicate(c) = FID + g.(c - 1), g = `fid_gradient`. Same counts as every other set metric
    (stats/bootstrap.py), so pairing across columns and runs is unchanged. Its percentile CI is centred on the
    estimate; the exact bootstrap's is not: a resample holds ~0.63 n distinct images and FID's small-n bias grows as that falls,
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


FID_SPEC = register(
    MetricSpec(
        name="fid",
        inputs=SET,
        kind=REALISM,
        higher_is_better=False,
        backbone=BACKBONE,
        preprocessing=PREPROCESSING,
        features=BACKBONE + "\n" + PREPROCESSING,
        compare=frechet_distance_fast,
        compare_stats=frechet_distance_to_stats,
        replicates=fid_replicates,
        min_n=FID_MIN_N,
        build=FIDScorer,
        weights=inception_weights,
    )
)
KID_SPEC = register(
    MetricSpec(
        name="kid",
        inputs=SET,
        kind=REALISM,
        higher_is_better=False,
        backbone=BACKBONE + f"; poly kernel degree {KID_DEGREE}, gamma 1/d, coef {KID_COEF:g}",
        features=BACKBONE + "\n" + PREPROCESSING,
        compare=mmd2_unbiased,
        replicates=mmd_interval(kid_kernel),
        kernel=kid_kernel,
        kernel_text="KID's cubic polynomial kernel on Inception pool features",
        preprocessing=PREPROCESSING + "; unbiased MMD^2 on whole sets (torchmetrics' estimator without subsets), "
                                  "over distinct prompt+seed units against paired references",
        build=KIDScorer,
        weights=inception_weights,
    )
)
