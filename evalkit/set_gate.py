"""Gate statistics for set metrics (FID, KID, any metric scored on a set of images against a target).

A set metric has no per-image values to pair, so the regression rule resamples the (prompt, seed) units
themselves: each of SET_BOOTSTRAP replicates draws the shared units with replacement, ONCE for both runs,
and evaluates the metric's replicate (spec.replicates, the route score.py's intervals take) of both runs'
columns on those units (each against its own target: the same units' references, or the fixed folder /
statistics both runs were scored against). delta = candidate -
baseline (sign flipped for lower-is-better, so negative = worse) gets a 95% percentile interval, and the
rule passes on its worse bound, like the per-image rules. Features come from each run's own cache
(score.FeatureStore), so the gate computes no backbone.

Two runs scored against different targets (fid_reference) measure different things: the gate refuses them.
"""
from __future__ import annotations

import functools
import hashlib
import operator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EvalkitError
from .gate import LEVEL, SEED, Outcome, Rule, RunData
from .metrics import METRICS
from .metrics.base import MetricOptions, MetricSpec
from .metrics.resample import SetTarget, counts_of
from .score import IMAGE_SUFFIXES, SET_BOOTSTRAP, feature_store, with_references
from .store import RunDir

UNIT = ["prompt_id", "seed"]


def check_targets(metric: str, base: RunData, cand: RunData) -> None:
    """Refuse (one line) to compare a set metric scored against different targets."""
    targets = [_target_name(run) for run in (base, cand)]
    if targets[0] != targets[1]:
        raise EvalkitError(f"not comparable: {metric} was scored against different targets (fid_reference "
                           f"{targets[0]!r} vs {targets[1]!r}): score both runs against the same fid_reference, "
                           "e.g. one folder of real images")


def judge_set_regression(rule: Rule, base: RunData, cand: RunData, columns: list[tuple[str, int]]) -> list[Outcome]:
    """Paired-unit bootstrap CI of a set metric's change per column; PASS iff the worse bound is within max_drop."""
    check_targets(rule.metric, base, cand)
    spec = METRICS.get(rule.metric)
    sign = 1.0 if spec.higher_is_better else -1.0
    sides = [_RunFeatures(run, spec) for run in (base, cand)]
    out = []
    for column in columns:
        units = sorted(set(sides[0].units(column)) & set(sides[1].units(column)))
        name = f"regression {rule.metric} {column[0]}@{column[1]}"
        if len(units) < 2:
            raise EvalkitError(f"{rule.where}: the runs share {len(units)} (prompt, seed) unit(s) with images at "
                               f"{column[0]}@{column[1]}: {rule.metric} needs 2; rescore both runs")
        draws = np.random.default_rng(SEED).integers(0, len(units), size=(SET_BOOTSTRAP, len(units)))
        values = [side.distances(column, units, draws) for side in sides]  # (point, replicates) per run
        delta = sign * (values[1][0] - values[0][0]) + 0.0  # + 0.0: no "-0" for identical runs
        lo, hi = np.nanquantile(sign * (values[1][1] - values[0][1]), [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) + 0.0
        ok = -lo <= rule.limit
        out.append(Outcome(name, bool(ok), values[0][0], values[1][0], float(delta), (float(lo), float(hi)),
                           f"set metric, {len(units)} units resampled jointly in both runs ({SET_BOOTSTRAP} "
                           f"replicates): CI worse bound {lo:+.4g} {'within' if ok else 'beyond'} max_drop "
                           f"{rule.limit:g}"))
    return out


def _target_name(run: RunData) -> str:
    target = run.config.fid_reference
    return target if target == "references" else str(Path(target).resolve())


class _RunFeatures:
    """One run's cached set-metric features, by unit and column, and its target."""

    def __init__(self, run: RunData, spec: MetricSpec):
        self.run, self.spec = run, spec
        self.store = feature_store(run.dir, spec, MetricOptions(backbone=run.config.backbones.get(spec.name)))
        images = RunDir(run.dir).current_images()
        self.pairs = with_references(images, run.config).set_index(["scheduler", "steps", *UNIT]).sort_index()
        self.target = run.config.fid_reference
        self.fixed, self.stats = self._fixed_target()

    def units(self, column: tuple[str, int]) -> list[tuple[str, int]]:
        rows = self.pairs.loc[column]
        if self.target == "references":
            rows = rows.dropna(subset=["reference_sha256"])
        return [tuple(u) for u in rows.index]

    def distances(self, column: tuple[str, int], units: list, draws: np.ndarray) -> tuple[float, np.ndarray]:
        rows = self.pairs.loc[column].loc[units]
        features = self._load(rows.sha256)
        if self.target == "references":
            goal = SetTarget(paired=self._load(rows.reference_sha256))
        else:
            goal = SetTarget(stats=self.stats) if self.stats is not None else SetTarget(fixed=self.fixed)
        return self.spec.replicates(features, goal, counts_of(draws, len(units)))

    def _load(self, shas) -> np.ndarray:
        missing = [s for s in shas if not self.store.path(s).is_file()]
        if missing:
            raise EvalkitError(f"{self.run.dir}: {len(missing)} cached {self.spec.name} feature file(s) are missing "
                               f"(e.g. {self.store.path(missing[0])}): rescore with `evalkit score {self.run.dir}`")
        return self.store.load(shas)

    def _fixed_target(self) -> tuple[np.ndarray | None, tuple[Any, ...] | None]:
        """A folder's features (or, for FID, their moments), or .npz statistics; None for the references."""
        if self.target == "references":
            return None, None
        from .metrics.fid import FeatureMoments, load_npz_stats, stats_sqrt

        if Path(self.target).suffix == ".npz":
            mu, sigma = load_npz_stats(self.target)
            return None, (mu, sigma, stats_sqrt(sigma))
        shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(self.target).iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES]
        if self.spec.compare_stats is not None:
            mu, sigma = functools.reduce(operator.add, (FeatureMoments.of(self._load(shas[i:i + 1024]))
                                                        for i in range(0, len(shas), 1024))).mean_cov()
            return None, (mu, sigma, stats_sqrt(sigma))
        return self._load(shas), None
