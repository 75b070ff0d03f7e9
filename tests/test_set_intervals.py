"""Set-metric intervals from one Gram/kernel per column: the same values as before, replicates equal to
recomputing the metric on each explicit resample, and a warm rerun that recomputes no interval."""
import json

import numpy as np
import pytest

import evalkit
import importlib
from evalkit.metrics.cmmd import cmmd, cmmd_replicates
from evalkit.metrics.fid import (frechet_distance_fast, frechet_distance_to_stats, kid_kernel, mmd2_unbiased,
                                 stats_sqrt)
from evalkit.metrics.resample import SetTarget, counts_of, fid_replicates, mmd_replicates

rng = np.random.default_rng(7)
X = rng.normal(size=(40, 96))
Y = rng.normal(size=(40, 96)) * 1.1 + 0.2
T = rng.normal(size=(70, 96)) + 0.1
PICKS = rng.integers(0, len(X), size=(25, len(X)))
COUNTS = counts_of(PICKS, len(X))
MU, SIGMA = T.mean(axis=0), np.cov(T, rowvar=False)
STATS = (MU, SIGMA, stats_sqrt(SIGMA))


def kid(x, target):
    return mmd_replicates(kid_kernel, x, target, COUNTS)


@pytest.mark.parametrize("name, fast, explicit, target", [
    ("kid paired", kid, lambda p: mmd2_unbiased(X[p], Y[p]), SetTarget(paired=Y)),
    ("kid fixed", kid, lambda p: mmd2_unbiased(X[p], T), SetTarget(fixed=T)),
    ("cmmd paired", lambda x, t: cmmd_replicates(x, t, COUNTS), lambda p: cmmd(X[p], Y[p]), SetTarget(paired=Y)),
    ("fid paired", lambda x, t: fid_replicates(x, t, COUNTS), lambda p: frechet_distance_fast(X[p], Y[p]),
     SetTarget(paired=Y)),
    ("fid stats", lambda x, t: fid_replicates(x, t, COUNTS), lambda p: frechet_distance_to_stats(X[p], *STATS),
     SetTarget(stats=STATS)),
])
def test_replicates_equal_the_metric_recomputed_on_each_explicit_resample(name, fast, explicit, target):
    value, replicates = fast(X, target)
    before = explicit(np.arange(len(X)))  # what score.py computed for the value before
    assert value == pytest.approx(before, rel=1e-9)
    np.testing.assert_allclose(replicates, [explicit(p) for p in PICKS], rtol=1e-7)


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
    cached = {p.name: json.loads(p.read_text()) for p in (first.dir / "cache" / "intervals").iterdir()}
    assert sorted(len(v) for v in cached.values()) == [2, 2]  # one interval per column per metric

    def refuse(*args, **kwargs):
        raise AssertionError("an interval was recomputed on a warm rerun")

    monkeypatch.setattr(importlib.import_module("evalkit.score"), "counts_of", refuse)
    again = evalkit.run(config)
    assert again.set_scores.equals(first.set_scores)
