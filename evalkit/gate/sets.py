"""Gate statistics for set metrics (FID, KID, CMMD: any metric scored on a set of images against a target).

A set metric has no per-image values to pair, so the regression rule resamples the (prompt, seed) units
themselves: each of SET_BOOTSTRAP replicates draws the shared units with replacement, ONCE for both runs,
and evaluates the metric's replicate (spec.replicates, the route the score stage's intervals take) of both runs'
columns on those units (each against its own target: the same units' references, or the fixed folder /
statistics both runs were scored against). delta = candidate - baseline (sign flipped for lower-is-better, so
negative = worse) gets a 95% percentile interval, and the rule passes on its worse bound, like the per-image
rules. Features come from each run's own cache (stages/features.py), so the gate computes no backbone.

Two runs scored against different targets (fid_reference) measure different things: the gate refuses them.
"""
from __future__ import annotations

import functools

import numpy as np

from ..config import OWN_REFERENCES
from ..errors import EvalkitError
from ..metrics import METRICS
from ..metrics.base import MetricSpec, SetTarget
from ..store.folder import RESCORE, RunDir
from ..store.read import Column, ScoredRun
from ..store.tables import with_references
from ..stages.features import feature_store
from ..stages.score import metric_options
from ..stages.targets import fixed_target, folder_images, is_stats, target_name
from ..stats.bootstrap import SET_BOOTSTRAP, UNIT, counts_of, orientation, percentile_ci, resample_draws
from .outcome import Outcome
from .rules import Rule


def check_targets(metric: str, base: ScoredRun, cand: ScoredRun) -> None:
    """Refuse (one line) to compare a set metric scored against different targets."""
    targets = [target_name(run.config.fid_reference) for run in (base, cand)]
    if targets[0] != targets[1]:
        raise EvalkitError(f"not comparable: {metric} was scored against different targets (fid_reference "
                           f"{targets[0]!r} vs {targets[1]!r}): score both runs against the same fid_reference, "
                           "e.g. one folder of real images")


def judge_set_regression(rule: Rule, base: ScoredRun, cand: ScoredRun, columns: list[Column]) -> list[Outcome]:
    """Paired-unit bootstrap CI of a set metric's change per column; PASS iff the worse bound is within max_drop."""
    check_targets(rule.metric, base, cand)
    spec = METRICS.get(rule.metric)
    sign = orientation(cand.higher_is_better(rule.metric))
    sides = [_RunFeatures(run, spec) for run in (base, cand)]
    out = []
    for column in columns:
        units = sorted(set(sides[0].units(column)) & set(sides[1].units(column)))
        if len(units) < 2:
            raise EvalkitError(f"{rule.where}: the runs share {len(units)} (prompt, seed) unit(s) with images at "
                               f"{column[0]}@{column[1]}: {rule.metric} needs 2; rescore both runs")
        draws = resample_draws(len(units), SET_BOOTSTRAP)
        values = [side.distances(column, units, draws) for side in sides]  # (point, replicates) per run
        delta = sign * (values[1][0] - values[0][0]) + 0.0  # + 0.0: no "-0" for identical runs
        lo, hi = (bound + 0.0 for bound in percentile_ci(sign * (values[1][1] - values[0][1])))
        ok = -lo <= rule.limit
        out.append(Outcome(kind="regression", metric=rule.metric, scheduler=column[0], steps=column[1],
                           passed=bool(ok), baseline=values[0][0], candidate=values[1][0], delta=float(delta),
                           ci=(float(lo), float(hi)),
                           message=f"set metric, {len(units)} units resampled jointly in both runs ({SET_BOOTSTRAP} "
                                   f"replicates): CI worse bound {lo:+.4g} {'within' if ok else 'beyond'} max_drop "
                                   f"{rule.limit:g}"))
    return out


class _RunFeatures:
    """One run's cached set-metric features, by unit and column, and its target."""

    def __init__(self, run: ScoredRun, spec: MetricSpec):
        self.run, self.spec = run, spec
        self.store = feature_store(RunDir(run.dir), spec, metric_options(run.config, spec.name))
        self.pairs = with_references(run.images, run.config).set_index(["scheduler", "steps", *UNIT]).sort_index()
        self.target = run.config.fid_reference
        self.fixed = functools.cache(self._fixed)

    def units(self, column: Column) -> list[tuple[str, int]]:
        rows = self.pairs.loc[column]
        if self.target == OWN_REFERENCES:
            rows = rows.dropna(subset=["reference_sha256"])
        return [tuple(u) for u in rows.index]

    def distances(self, column: Column, units: list, draws: np.ndarray) -> tuple[float, np.ndarray]:
        rows = self.pairs.loc[column].loc[units]
        goal = SetTarget(paired=self._load(rows.reference_sha256)) if self.target == OWN_REFERENCES else self.fixed()
        return self.spec.replicates(self._load(rows.sha256), goal, counts_of(draws, len(units)))

    def _load(self, shas) -> np.ndarray:
        missing = self.store.missing(shas)
        if missing:
            raise EvalkitError(f"{self.run.dir}: {len(missing)} cached {self.spec.name} feature file(s) are missing "
                               f"(e.g. {self.store.path(missing[0])}): rescore with "
                               f"{RESCORE.format(dir=self.run.dir)}")
        return self.store.load(shas)

    def _fixed(self) -> SetTarget:
        """A folder's features (or, for FID, their moments), or .npz statistics, as the score stage built them."""
        shas = [] if is_stats(self.target) else [sha for sha, _ in folder_images(self.target)]
        return fixed_target(self.target, self.spec, self._load, shas)
