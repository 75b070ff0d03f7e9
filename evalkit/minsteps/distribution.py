"""Minimum useful steps on a distribution distance: the rule that can judge stochastic samplers.

Ancestral/SDE samplers never converge to one image per seed, so a per-seed rule cannot judge them; what
converges is the distribution of their images. The rule, as stated in summary.json (RULE below):

- distance D(s): the MMD^2 between scheduler S's images at s steps and the target set (the same prompts and
  seeds' high-step references), estimated over (prompt, seed) units as the paired U-statistic
  1/(n(n-1)) sum_{i != j} h(z_i, z_j), h(z_i, z_j) = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)
  (Gretton et al. 2012, MMD^2_u; stats/mmd.py). Cross terms of the same unit are left out, so D is unbiased even
  though a column image and its reference share their starting noise; its expectation is 0 when the distributions
  agree. Kernel: in a run, the judging metric's own (its spec's `kernel`): CMMD's when cmmd is scored (Gaussian
  RBF, sigma 10, x1000, on the L2-normalised CLIP image embeddings score cached), else KID's (cubic polynomial on
  Inception pool features); the self-test may use a weight-free Gaussian RBF on pixels (`PIXEL`).
- interval: 95% percentile bootstrap over units, paired across step counts (stats/bootstrap.py), each
  replicate the same U-statistic over distinct resampled indices (no unit is compared with its own copy).
- tolerance = the noise floor of the target itself: split the target's units into two halves with the same
  prompts (seeds split within each prompt), and take the upper 95% bound the rule's own bootstrap gives D
  between the halves; the floor is its median over FLOOR_SPLITS random splits. So a column passes when even
  the worse end of its interval is no farther from the target than two samples of the target's own
  distribution typically are, as measured by the same procedure. Measured at half the column's size, where
  MMD^2 is noisier, the floor errs on the lenient side (stated, not rescaled by an asymptotic factor). The
  median, not a high percentile: with few seeds per prompt the split-halves' spread is dominated by which
  mixture components each half happens to draw, which a column coupled to its references by the starting
  noise mostly shares; a 95th percentile let every sampler pass at 2 steps on builtin:mixture. Checked on
  synthetic coupled features: columns from the target's own law passed 120/120, a shift failed 40/40.
- answer: the smallest swept s from which the CI's upper bound of D stays <= the tolerance at s and every
  larger swept count (rule.decide, the decision every rule shares).
Which metric judges (JUDGES, first scored wins): CMMD, else KID; one metric, never both, so a run's answer is
one stated test. CMMD first, for the reasons of Jayasumana et al. (CVPR 2024): CLIP embeddings represent the
content of text-to-image outputs better than Inception's ImageNet features, and the Gaussian RBF is a
characteristic kernel (MMD^2 = 0 only when the distributions are equal), whereas KID's cubic polynomial kernel
compares only moments up to the third; both estimators here are unbiased and assume no normality (FID does).
Requiring both to pass was considered and not done: two 95% bounds, each against its own noise floor, make a
stricter test than either states, and the answer would hinge on the non-characteristic kernel's noise too; KID
stays in the report and the gate as a set metric.
With no distribution metric scored (CMMD needs CLIP weights, KID Inception's) the rule does not judge: it says so.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import SweepConfig
from ..metrics import METRICS
from ..store.folder import RunDir
from ..store.tables import with_references
from ..stats.bootstrap import DISTRIBUTION_BOOT, FLOOR_BOOT, SEED, UNIT, percentile_ci, resample_counts
from ..stats.mmd import Kernel, mmd2_replicates, paired_mmd2
from ..stages.features import feature_store
from ..stages.score import ScoreResult, metric_options
from .rule import Evidence, decide

FLOOR_SPLITS = 50  # random seed-halves of the target whose upper bounds' median is the noise floor
PIXEL_BANDWIDTH = 0.1  # RBF on the per-pixel mean squared difference in [0, 1] units: h = 10% of the range
JUDGES = ("cmmd", "kid")  # run metrics the rule can judge on, the first scored one judges (module docstring)

RULE = ("Distribution rule: D = unbiased paired MMD^2 of the scheduler's images at a step count to the same prompts' "
        "and seeds' high-step references ({kernel}); the upper bound of its 95% bootstrap interval over "
        "prompt+seed units must stay at or below the target's noise floor (the upper bound the same procedure "
        "gives D between two seed-halves of the references themselves, same prompts, median over random splits) "
        "at that count and every larger swept count. Stochastic samplers are always "
        "judged by it; deterministic ones by it alongside the per-seed rule (both must pass).")


@dataclass(frozen=True)
class Distance:
    """The MMD^2 the rule judges on: a name (the judging metric's, or "pixel-mmd"), its kernel, and what it is."""

    name: str
    kernel: Kernel
    text: str

    @classmethod
    def of(cls, metric: str) -> Distance:
        spec = METRICS.get(metric)
        return cls(metric, spec.kernel, spec.kernel_text)


def pixel_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weight-free Gaussian RBF on flattened [0, 1] pixels: exp(-mean((x - y)^2) / (2 h^2)), h = PIXEL_BANDWIDTH.

    A fixed bandwidth (not a median heuristic) so every column and target is measured with one kernel."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.exp(-np.clip(sq, 0.0, None) / x.shape[1] / (2.0 * PIXEL_BANDWIDTH ** 2))


PIXEL = Distance("pixel-mmd", pixel_kernel, f"weight-free Gaussian RBF on [0, 1] pixels, h = {PIXEL_BANDWIDTH} RMS")


def noise_floor(target: np.ndarray, prompts: list, kernel: Kernel, splits: int = FLOOR_SPLITS,
                seed: int = SEED) -> float | None:
    """Median over random seed-halves of the target (same prompts in both) of the upper 95% bound that D
    between the two halves gets from this module's bootstrap: what the rule itself reports for two samples of
    one distribution. None when there are too few units to halve."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(np.asarray(prompts) == p) for p in dict.fromkeys(prompts)]
    if any(len(g) < 2 for g in groups):  # a prompt with one seed can't be split: halve all units instead
        groups = [np.arange(len(target))]
    half = sum(len(g) // 2 for g in groups)
    if half < 3:
        return None
    k = kernel(target, target)
    counts = resample_counts(half, FLOOR_BOOT, seed)
    bounds = []
    for _ in range(splits):
        a, b = [], []
        for g in groups:
            g = rng.permutation(g)
            a += list(g[:len(g) // 2])
            b += list(g[len(g) // 2:2 * (len(g) // 2)])
        _, high = percentile_ci(paired_mmd2(k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)], counts))
        bounds.append(high)
    return float(np.median(bounds))


def distribution_evidence(columns: dict[int, np.ndarray], target: np.ndarray, tolerance: float, kernel: Kernel,
                          n_boot: int = DISTRIBUTION_BOOT, seed: int = SEED) -> Evidence:
    """Per swept count (columns: steps -> features aligned with the target's units): D, its CI, pass on the bound."""
    counts = resample_counts(len(target), n_boot, seed)  # the same resample for every step count: paired
    out = []
    for steps in sorted(columns):
        distance, replicates = mmd2_replicates(kernel, columns[steps], counts, paired=target)
        low, high = percentile_ci(replicates)
        out.append({"steps": int(steps), "distance": distance, "ci_low": float(low), "ci_high": float(high),
                    "plateau": 0.0, "pass": bool(high <= tolerance)})
    return out


def judge_schedulers(features: Callable[[list[str]], np.ndarray], sweep: pd.DataFrame, distance: Distance,
                     target_column: str = "reference_sha256") -> dict[str, dict[str, Any]]:
    """The rule per scheduler. `sweep`: sweep rows with prompt_id, seed, scheduler, steps, sha256 and the
    target image's sha256 per unit in `target_column`; `features(shas)` -> one row per image."""
    out = {}
    for scheduler, rows in sweep.dropna(subset=[target_column]).groupby("scheduler", sort=True):
        units = rows.drop_duplicates(UNIT).sort_values(UNIT)
        steps = sorted(set(rows.steps))
        complete = [s for s in steps if len(rows[rows.steps == s]) == len(units)]
        target = features(list(units[target_column]))
        tolerance = noise_floor(target, list(units.prompt_id), distance.kernel)
        if tolerance is None or len(complete) < len(steps):
            why = ("fewer than 3 prompt+seed units per half to measure the target's noise floor: add seeds"
                   if tolerance is None else "some step counts lack images for some prompt+seed units: rerender")
            out[scheduler] = {"min_steps": None, "reached": False, "why": why, "metric": distance.name}
            continue
        columns = {s: features(list(rows[rows.steps == s].sort_values(UNIT).sha256)) for s in steps}
        found = distribution_evidence(columns, target, tolerance, distance.kernel)
        out[scheduler] = {**decide(steps, {distance.name: found}), "metric": distance.name,
                          "distance": f"paired MMD^2, {distance.text}", "tolerance": tolerance, "n": len(units),
                          "evidence": found}
    return out


def rule_text(distance: Distance, backbone: str | None = None) -> str:
    return RULE.format(kernel=f"{distance.name}: {distance.text}" + (f", backbone {backbone}" if backbone else ""))


def judge_run(run: RunDir, images: pd.DataFrame, config: SweepConfig, scored: ScoreResult,
              executor: Any = None) -> dict[str, Any]:
    """The rule on a scored run, on the first of JUDGES that was scored, with the per-image features score cached
    (references' computed if missing, e.g. when the set metric's target is a folder). Without any of them scored
    the block says why and judges nothing: a distance is never made up."""
    metric = next((m for m in JUDGES if m in scored.set_scores), None)
    if metric is None:
        why = "; ".join(f"{m}: {scored.skipped[m]}" if m in scored.skipped else f"{m} is not among the scored metrics"
                        for m in JUDGES)
        return {"metric": None, "why": f"no distribution metric was scored ({why})"}
    spec, options = METRICS.get(metric), metric_options(config, metric)
    store = feature_store(run, spec, options)
    pairs = with_references(images, config).dropna(subset=["reference_sha256"])
    refs = pairs.drop_duplicates("reference_sha256")
    files = [(sha, run.image_path(key)) for sha, key in zip(refs.reference_sha256, refs.reference_key)]
    store.compute(spec, options, files, executor)
    backbone = scored.metrics.get(metric, {}).get("backbone") if spec.embeddings else None  # a selectable backbone
    distance = Distance.of(metric)
    return {"metric": metric, **({"backbone": backbone} if backbone else {}), "rule": rule_text(distance, backbone),
            "schedulers": judge_schedulers(store.load, pairs, distance)}
