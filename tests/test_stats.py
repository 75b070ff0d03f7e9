"""Tests for evalkit.stats: exact means, reproducibility, pairing, coverage, NaN handling."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evalkit.stats.bootstrap import bootstrap_means, paired_difference


def _long(columns: dict, metric: str = "clip") -> pd.DataFrame:
    """Long table from {(scheduler, steps): per-unit values}; unit i is (prompt 'p{i}', seed i % 3)."""
    rows = [
        {"prompt_id": f"p{i}", "seed": i % 3, "scheduler": s, "steps": k, "metric": metric, "value": v}
        for (s, k), vals in columns.items() for i, v in enumerate(vals) if not np.isnan(v)
    ]
    return pd.DataFrame(rows)


def _paired_table(n: int = 40) -> pd.DataFrame:
    """Two columns with wide per-unit spread and b = a + 0.1 + tiny noise."""
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 2.0, n)
    b = a + 0.1 + rng.normal(0.0, 0.005, n)
    return _long({("ddim", 10): a, ("ddim", 50): b})


def test_exact_means_and_n():
    values = pd.concat([
        _long({("ddim", 10): [1.0, 2.0, 3.0], ("euler", 20): [4.0, 6.0, 8.0]}, "clip"),
        _long({("ddim", 10): [0.5, 0.5, 0.5], ("euler", 20): [0.0, 1.0, 2.0]}, "aesthetic"),
    ])
    out = bootstrap_means(values, n_boot=200)
    assert list(out.columns) == ["scheduler", "steps", "metric", "value", "ci_low", "ci_high", "n"]
    assert list(out["metric"]) == ["aesthetic", "aesthetic", "clip", "clip"]
    assert list(out["scheduler"]) == ["ddim", "euler", "ddim", "euler"]
    np.testing.assert_allclose(out["value"], [0.5, 1.0, 2.0, 6.0])
    assert list(out["n"]) == [3, 3, 3, 3]
    assert (out["ci_low"] <= out["value"]).all() and (out["value"] <= out["ci_high"]).all()
    # constant column: zero-width interval
    assert out.loc[0, "ci_low"] == pytest.approx(0.5) and out.loc[0, "ci_high"] == pytest.approx(0.5)


def test_sorted_by_metric_scheduler_steps_numerically():
    values = _long({("b", 100): [1.0, 2.0], ("b", 8): [1.0, 2.0], ("a", 50): [1.0, 2.0]})
    out = bootstrap_means(values.sample(frac=1, random_state=0), n_boot=50)
    assert list(zip(out["scheduler"], out["steps"])) == [("a", 50), ("b", 8), ("b", 100)]


def test_reproducible_and_seed_dependent():
    rng = np.random.default_rng(2)
    values = _long({("ddim", 10): rng.normal(size=25), ("ddim", 20): rng.normal(size=25)})
    first = bootstrap_means(values, n_boot=500, seed=3)
    pd.testing.assert_frame_equal(first, bootstrap_means(values, n_boot=500, seed=3))
    # row order of the input must not matter either
    pd.testing.assert_frame_equal(first, bootstrap_means(values.iloc[::-1], n_boot=500, seed=3))
    other = bootstrap_means(values, n_boot=500, seed=4)
    np.testing.assert_array_equal(first["value"], other["value"])
    assert not np.array_equal(first["ci_low"], other["ci_low"])
    np.testing.assert_allclose(first["ci_low"], other["ci_low"], atol=0.15)
    np.testing.assert_allclose(first["ci_high"], other["ci_high"], atol=0.15)


def test_pairing_makes_difference_ci_tight():
    values = _paired_table()
    diff = paired_difference(values, "clip", ("ddim", 10), ("ddim", 50), n_boot=2000)
    assert diff["n"] == 40
    assert diff["mean"] == pytest.approx(-0.1, abs=0.005)
    assert diff["ci_low"] <= diff["mean"] <= diff["ci_high"]
    assert diff["ci_high"] - diff["ci_low"] < 0.02
    assert diff["ci_low"] < -0.1 + 0.01 and diff["ci_high"] > -0.1 - 0.01

    out = bootstrap_means(values, n_boot=2000).set_index("steps")
    assert ((out["ci_high"] - out["ci_low"]) > 0.5).all()
    # same resamples for both columns: bounds shift by the constant offset
    assert out.loc[50, "ci_low"] - out.loc[10, "ci_low"] == pytest.approx(0.1, abs=0.01)
    assert out.loc[50, "ci_high"] - out.loc[10, "ci_high"] == pytest.approx(0.1, abs=0.01)


def test_paired_difference_uses_only_shared_units():
    a = [1.0, 2.0, 3.0, 100.0]
    b = [0.0, 1.0, 2.0, np.nan]
    diff = paired_difference(_long({("x", 1): a, ("x", 2): b}), "clip", ("x", 1), ("x", 2), n_boot=100)
    assert diff["n"] == 3
    assert diff["mean"] == pytest.approx(1.0)
    assert diff["ci_low"] == pytest.approx(1.0) and diff["ci_high"] == pytest.approx(1.0)


def test_paired_difference_unknown_column():
    values = _long({("x", 1): [1.0, 2.0]})
    with pytest.raises(KeyError):
        paired_difference(values, "clip", ("x", 1), ("x", 99))


def test_coverage_sanity():
    rng = np.random.default_rng(123)
    true_mean, hits, n_sims = 0.3, 0, 200
    for sim in range(n_sims):
        values = _long({("ddim", 10): rng.normal(true_mean, 1.0, 30)})
        row = bootstrap_means(values, n_boot=500, seed=sim).iloc[0]
        hits += row["ci_low"] <= true_mean <= row["ci_high"]
    assert 0.88 <= hits / n_sims <= 0.99


def test_missing_unit_reduces_n_and_keeps_ci_finite():
    rng = np.random.default_rng(5)
    full = rng.normal(size=12)
    holed = full.copy()
    holed[4] = np.nan
    out = bootstrap_means(_long({("ddim", 10): full, ("ddim", 20): holed}), n_boot=500)
    row = out.set_index("steps").loc[20]
    assert row["n"] == 11
    assert row["value"] == pytest.approx(np.nanmean(holed))
    assert np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])
    assert row["ci_low"] < row["value"] < row["ci_high"]
    assert out.set_index("steps").loc[10, "n"] == 12


def test_nan_value_rows_count_as_missing():
    values = _long({("ddim", 10): [1.0, 2.0, 3.0]})
    values.loc[1, "value"] = np.nan
    row = bootstrap_means(values, n_boot=100).iloc[0]
    assert row["n"] == 2 and row["value"] == pytest.approx(2.0)


def test_duplicate_rows_rejected():
    values = _long({("ddim", 10): [1.0, 2.0]})
    with pytest.raises(ValueError, match="duplicate"):
        bootstrap_means(pd.concat([values, values.iloc[:1]]))
