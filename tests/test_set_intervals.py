"""Set-metric intervals from one decomposition per column: MMD values and replicates equal to the statistic over
distinct units recomputed on each explicit resample (unbiased against coupled references); FID's linearised replicates built on the exact gradient
of the weighted FID and spreading like the bootstrap and the true sampling spread; a warm rerun that
recomputes no interval."""
import functools
import json

import numpy as np
import pytest
from reference_metrics import scipy_fid, torchmetrics_fid

import evalkit
from evalkit.metrics.base import SetTarget, mmd_interval
from evalkit.metrics.cmmd import cmmd_replicates, scaled_kernel
from evalkit.metrics.fid import (fid_gradient, fid_replicates, frechet_distance_fast, frechet_distance_to_stats,
                                 kid_kernel, mmd2_unbiased, stats_sqrt)
from evalkit.minsteps.distribution import distribution_evidence
from evalkit.stages import score as score_stage
from evalkit.stats.bootstrap import counts_of
from evalkit.stats.mmd import mmd2_replicates
from evalkit.store.folder import RunDir

rng = np.random.default_rng(7)
X = rng.normal(size=(40, 96))
Y = rng.normal(size=(40, 96)) * 1.1 + 0.2
T = rng.normal(size=(70, 96)) + 0.1
PICKS = rng.integers(0, len(X), size=(25, len(X)))
COUNTS = counts_of(PICKS, len(X))
MU, SIGMA = T.mean(axis=0), np.cov(T, rowvar=False)
STATS = (MU, SIGMA, stats_sqrt(SIGMA))


def kid(x, target):
    return mmd_interval(kid_kernel)(x, target, COUNTS)


def over_distinct_units(kernel, picks, paired):
    """Independent: the MMD^2 of a resample by explicit masks, pairing only draws of different units."""
    xs = X[picks]
    other = picks[:, None] != picks[None, :]
    if paired:
        ys = Y[picks]
        return kernel(xs, xs)[other].mean() + kernel(ys, ys)[other].mean() - 2 * kernel(xs, ys)[other].mean()
    tt = kernel(T, T)
    return kernel(xs, xs)[other].mean() + tt[~np.eye(len(T), dtype=bool)].mean() - 2 * kernel(xs, T).mean()


@pytest.mark.parametrize("name, fast, kernel, target", [
    ("kid paired", kid, kid_kernel, SetTarget(paired=Y)),
    ("kid fixed", kid, kid_kernel, SetTarget(fixed=T)),
    ("cmmd paired", lambda x, t: cmmd_replicates(x, t, COUNTS), scaled_kernel, SetTarget(paired=Y)),
])
def test_mmd_replicates_equal_the_statistic_recomputed_on_each_explicit_resample(name, fast, kernel, target):
    value, replicates = fast(X, target)
    explicit = functools.partial(over_distinct_units, kernel, paired=target.paired is not None)
    assert value == pytest.approx(explicit(np.arange(len(X))), rel=1e-9)
    np.testing.assert_allclose(replicates, [explicit(p) for p in PICKS], rtol=1e-7)
    if target.paired is not None:  # the value is the distance the distribution rule judges on
        assert value == pytest.approx(distribution_evidence({1: X}, Y, 0.0, kernel)[0]["distance"], rel=1e-12)
    else:  # against independent images: torchmetrics' whole-set KID estimator
        assert value == pytest.approx(mmd2_unbiased(X, T), rel=1e-9)


def test_mmd_to_paired_references_is_unbiased_when_each_image_shares_noise_with_its_reference():
    """Same distribution, each image coupled to its own reference: the whole-set estimator reads below 0,
    the distinct-unit one does not (mean over 300 draws within 3 standard errors of 0)."""
    rng = np.random.default_rng(7)
    ours, whole = [], []
    for _ in range(300):
        z = rng.normal(size=(24, 8))
        x, y = z + 0.3 * rng.normal(size=z.shape), z + 0.3 * rng.normal(size=z.shape)
        ours.append(mmd2_replicates(kid_kernel, x, np.zeros((0, 24)), paired=y)[0])
        whole.append(mmd2_unbiased(x, y))
    ours, whole = np.array(ours), np.array(whole)
    assert abs(ours.mean()) < 3 * ours.std() / np.sqrt(len(ours))
    assert whole.mean() < -10 * whole.std() / np.sqrt(len(whole))


def weighted_fid(x, y, c, stats=None):
    """FID with image k (and its paired reference) weighted by c_k: weighted means, covariances
    sum c_k x~_k x~_k^T / (m - 1), the cross term as the nuclear norm of the weighted centred cross Gram."""
    m = c.sum()

    def scaled(f):
        centred = f - c @ f / m
        return np.sqrt(c)[:, None] * centred / np.sqrt(m - 1), c @ f / m

    a, mean_x = scaled(x)
    if stats is None:
        b, mean_y = scaled(y)
        return float(np.sum((mean_x - mean_y) ** 2) + np.sum(a * a) + np.sum(b * b)
                     - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum())
    mu, sigma, root = stats
    return float(np.sum((mean_x - mu) ** 2) + np.sum(a * a) + np.trace(sigma)
                 - 2 * np.linalg.svd(a @ root, compute_uv=False).sum())


def test_the_weighted_fid_oracle_is_fid_at_unit_weights_and_scipys_on_weighted_moments():
    x, y = rng.normal(size=(90, 24)), rng.normal(size=(90, 24)) * 1.2 + 0.1
    assert weighted_fid(x, y, np.ones(90)) == pytest.approx(scipy_fid(x, y), rel=1e-9)
    c = rng.integers(1, 4, size=90).astype(float)
    m = c.sum()
    mx, my = c @ x / m, c @ y / m
    sx, sy = [(c[:, None] * (f - mf)).T @ (f - mf) / (m - 1) for f, mf in ((x, mx), (y, my))]
    import scipy.linalg
    direct = np.sum((mx - my) ** 2) + np.trace(sx + sy - 2 * scipy.linalg.sqrtm(sx @ sy).real)
    assert weighted_fid(x, y, c) == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("n, d", [(40, 64), (64, 64), (90, 20)])  # n < d (Gram), n = d, n > d (QR, d x d)
@pytest.mark.parametrize("target", ["paired", "stats"])
def test_fid_gradient_equals_finite_differences_of_the_weighted_fid(n, d, target):
    local = np.random.default_rng(n + d)
    x, y = local.normal(size=(n, d)), local.normal(size=(n, d)) * 1.1 + 0.2
    t = local.normal(size=(80, d)) + 0.1
    stats = (t.mean(axis=0), np.cov(t, rowvar=False), stats_sqrt(np.cov(t, rowvar=False)))
    goal, oracle = ((SetTarget(paired=y), lambda c: weighted_fid(x, y, c)) if target == "paired" else
                    (SetTarget(stats=stats), lambda c: weighted_fid(x, None, c, stats)))
    value, gradient = fid_gradient(x, goal)
    assert value == pytest.approx(oracle(np.ones(n)), rel=1e-10)
    eps, unit = 1e-5, np.eye(n)
    central = np.array([(oracle(1 + eps * unit[k]) - oracle(1 - eps * unit[k])) / (2 * eps) for k in range(n)])
    np.testing.assert_allclose(gradient, central, rtol=1e-6, atol=1e-7 * np.abs(central).max())


@pytest.mark.parametrize("n_x, n_y", [(150, 120), (150, 30), (30, 150)])  # d = 48: one or both sets above d
def test_fid_from_the_d_by_d_factors_equals_the_gram_route_scipy_and_torchmetrics(n_x, n_y):
    x, y = rng.normal(size=(n_x, 48)), rng.normal(size=(n_y, 48)) * 1.2 + 0.3
    a, b = [(f - f.mean(axis=0)) / np.sqrt(len(f) - 1) for f in (x, y)]
    gram = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.sum(a * a) + np.sum(b * b) \
        - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum()  # the n_x x n_y route, for any sizes
    fast = frechet_distance_fast(x, y)
    assert fast == pytest.approx(gram, rel=1e-10)
    assert fast == pytest.approx(scipy_fid(x, y), rel=1e-6)
    assert fast == pytest.approx(torchmetrics_fid(x, y), rel=1e-4)
    mu, sigma = y.mean(axis=0), np.cov(y, rowvar=False)
    # 1e-7: with n_y < d, sqrt(sigma) takes square roots of sigma's rounding-noise eigenvalues
    assert frechet_distance_to_stats(x, mu, sigma) == pytest.approx(gram, rel=1e-10 if n_y > 48 else 1e-7)


@pytest.mark.parametrize("target", ["paired", "stats"])
def test_fid_replicates_are_the_value_moved_along_the_gradient(target):
    goal = SetTarget(paired=Y) if target == "paired" else SetTarget(stats=STATS)
    value, replicates = fid_replicates(X, goal, COUNTS)
    exact = frechet_distance_fast(X, Y) if target == "paired" else frechet_distance_to_stats(X, *STATS)
    assert value == pytest.approx(exact, rel=1e-9)
    np.testing.assert_allclose(replicates, value + (COUNTS - 1) @ fid_gradient(X, goal)[1], rtol=1e-12)


@pytest.mark.parametrize("target", ["paired", "stats"])
def test_linearised_fid_replicates_spread_like_the_exact_bootstrap_and_the_true_sampling_spread(target):
    """Gaussian features, n = 300 > d = 16, 200 resamples. Measured over 10 seeds: linearised SD / exact
    bootstrap SD 0.85-0.97, / SD of FID over 400 fresh samples 0.82-1.28; the exact bootstrap's mean sits
    2.2-3.5 of its SDs above the estimate (duplicated images: a resample holds ~0.63 n distinct images, and
    FID's small-n bias grows), the linearised one's within 0.1."""
    n, d = 300, 16
    local = np.random.default_rng(0)

    def draw():
        return local.normal(size=(n, d)), local.normal(size=(n, d)) * 1.1 + 0.2

    t = local.normal(size=(2000, d)) * 1.1 + 0.2
    stats = (t.mean(axis=0), np.cov(t, rowvar=False), stats_sqrt(np.cov(t, rowvar=False)))
    fid = frechet_distance_fast if target == "paired" else lambda x, _: frechet_distance_to_stats(x, *stats)
    x, y = draw()
    picks = local.integers(0, n, size=(200, n))
    value, linear = fid_replicates(x, SetTarget(paired=y) if target == "paired" else SetTarget(stats=stats),
                                   counts_of(picks, n))
    exact = np.array([fid(x[p], y[p]) for p in picks])
    fresh = np.array([fid(*draw()) for _ in range(400)])
    assert 0.8 < linear.std() / exact.std() < 1.0
    assert 0.75 < linear.std() / fresh.std() < 1.4
    assert (exact.mean() - value) / exact.std() > 1.5
    assert abs(linear.mean() - value) / linear.std() < 0.2


def test_counts_count_each_draw():
    counts = counts_of(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 1, 2]])


def test_a_warm_rerun_recomputes_no_interval_and_gives_the_same_table(tmp_path, monkeypatch):
    from fake_weights import write_inception_fid

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    write_inception_fid(tmp_path / "torch")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat sitting on a mat\nthree apples on a table\n")
    config = dict(schedulers=["euler"], steps=[2, 8], seeds=3, reference_steps=30, prompts=str(prompts),
                  out=str(tmp_path / "run"), metrics=["fid", "kid"])
    first = evalkit.run(config)
    cached = {p.name: json.loads(p.read_text()) for p in RunDir(first.dir).intervals_dir.iterdir()}
    assert sorted(len(v) for v in cached.values()) == [2, 2]  # one interval per column per metric

    def refuse(*args, **kwargs):
        raise AssertionError("an interval was recomputed on a warm rerun")

    monkeypatch.setattr(score_stage, "counts_of", refuse)
    again = evalkit.run(config)
    assert again.set_scores.equals(first.set_scores)
    # intervals cached by another interval method (FID's were the explicit bootstrap's) are recomputed, not reused
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(score_stage, "INTERVAL_METHOD", "an earlier method")
    calls = []
    real = counts_of
    monkeypatch.setattr(score_stage, "counts_of",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    evalkit.run(config)
    assert len(calls) == 4  # every column of both metrics
