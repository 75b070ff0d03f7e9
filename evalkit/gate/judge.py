"""Judging two comparable runs (or one run against bands): each rule expanded over the columns it covers, one
typed Outcome per instance. Regressions of per-image metrics are paired over (prompt, seed) units here; set
metrics resample the units through their cached features (sets.py)."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pandas as pd

from ..errors import EvalkitError
from ..metrics import METRICS
from ..metrics.base import SET
from ..store.read import REFERENCES, Column, ScoredRun
from ..store.tables import CORRECTED, NOT_CONVERGENT, UNCHECKED, UNIT_COLUMN
from ..stats.bootstrap import bootstrap_means, orientation
from .outcome import Outcome
from .rules import ALL, ALWAYS, Rule, always_rules, default_rules, expand
from .sets import judge_set_regression


def judge(rules: list[Rule] | None, base: ScoredRun, cand: ScoredRun) -> list[Outcome]:
    """The gate's decision on two comparable runs: the given rules (or the defaults) plus the rules every gate
    judges (broken images, uncertified references)."""
    chosen = rules if rules is not None else default_rules(base, cand)
    return checked(evaluate([r for r in chosen if r.kind not in ALWAYS] + always_rules(rules), base, cand))


def judge_bands(rules: list[Rule], cand: ScoredRun) -> list[Outcome]:
    """One run on its own: the file's [[band]] rules plus the rules every gate judges."""
    bands = [r for r in rules if r.kind == "band"]
    return checked(evaluate([*bands, *always_rules(rules)], None, cand))


def checked(outcomes: list[Outcome]) -> list[Outcome]:
    """Repeats numbered; a gate that compared nothing is bad input, never a pass."""
    if not any(o.compared for o in outcomes):
        raise EvalkitError("the gate compared nothing: no rule instance had values to judge (e.g. every swept "
                           "scheduler is stochastic, so \"*\" skips their convergence columns and neither run reaches "
                           "min steps): gate them on fid/kid or clip_score, or name the scheduler in a [[regression]]")
    seen: Counter = Counter()
    out = []
    for o in outcomes:  # two rules expanding to the same instance keep both, numbered
        seen[o.name] += 1
        out.append(dataclasses.replace(o, repeat=seen[o.name]))
    return out


def evaluate(rules: list[Rule], base: ScoredRun | None, cand: ScoredRun) -> list[Outcome]:
    deltas = {None: paired_deltas(base, cand)} if base is not None else {}
    out: list[Outcome] = []
    for rule in rules:
        if rule.kind == "regression":
            if rule.category not in deltas:
                deltas[rule.category] = paired_deltas(base, cand, category_prompts(rule, base, cand))
            out += judge_regression(rule, base, cand, deltas[rule.category])
        elif rule.kind == "min_steps":
            out += judge_min_steps(rule, base, cand)
        elif rule.kind == "broken_images":
            out += judge_broken(rule, base, cand)
        elif rule.kind == "uncertified_references":
            out.append(judge_uncertified(rule, base, cand))
        else:
            out += judge_band(rule, base, cand)
    return out


def category_prompts(rule: Rule, base: ScoredRun, cand: ScoredRun) -> set[str]:
    """The prompt ids of the rule's category (the same in both runs: comparable runs share their prompts)."""
    found = set(cand.sweep.prompt_id[cand.sweep.category == rule.category])
    if not found:
        have = sorted(set(cand.sweep.category) - {""})
        raise EvalkitError(f"{rule.where}: category {rule.category!r} is not a category of the candidate's prompts "
                           f"({', '.join(have) if have else 'its prompts have no categories'}): name one of them "
                           "or drop `category`")
    return found


def paired_deltas(base: ScoredRun, cand: ScoredRun, prompts: set[str] | None = None) -> pd.DataFrame:
    """Per (scheduler, steps, metric): paired means of both runs and of candidate − baseline, with its CI.

    Only units (prompt, seed) present in both runs count (and only `prompts`' units when given: a category's).
    The CI is stats.bootstrap_means on the per-unit differences: one resample of units per metric shared by all
    columns (= stats.paired_difference per column when no unit is missing)."""
    keys = UNIT_COLUMN + ["metric"]
    both = base.sweep_values().merge(cand.sweep_values(), on=keys, suffixes=("_b", "_c")).dropna(subset=["value_b", "value_c"])
    if prompts is not None:
        both = both[both.prompt_id.isin(prompts)]
    if both.empty:
        return pd.DataFrame(columns=["scheduler", "steps", "metric", "mean_b", "mean_c", "mean", "ci_low",
                                     "ci_high", "n"])
    diffs = both.assign(value=both.value_c - both.value_b)[keys + ["value"]]
    table = bootstrap_means(diffs).rename(columns={"value": "mean"})
    means = both.groupby(["scheduler", "steps", "metric"], as_index=False)[["value_b", "value_c"]].mean()
    means = means.rename(columns={"value_b": "mean_b", "value_c": "mean_c"})
    return table.merge(means, on=["scheduler", "steps", "metric"])


def _scored(rule: Rule, *runs: ScoredRun) -> None:
    for run, label in zip(runs, ("baseline", "candidate") if len(runs) == 2 else ("candidate",)):
        if rule.metric not in set(run.set_scores.metric):
            have = ", ".join(sorted(set(run.set_scores.metric))) or "none"
            raise EvalkitError(f"{rule.where}: metric {rule.metric!r} was not scored in the {label} run {run.dir} "
                               f"(scored: {have}): score it in both runs or drop the rule")


def judge_regression(rule: Rule, base: ScoredRun, cand: ScoredRun, deltas: pd.DataFrame) -> list[Outcome]:
    _scored(rule, base, cand)
    columns = base.columns(rule.metric) & cand.columns(rule.metric)
    skip = lambda c: any(r.flagged(rule.metric, c, NOT_CONVERGENT) for r in (base, cand))  # noqa: E731
    if METRICS.get(rule.metric).inputs == SET:  # a unit bootstrap over both runs' cached features (sets.py)
        if rule.category is not None:
            raise EvalkitError(f"{rule.where}: {rule.metric} is a set metric, judged over the whole run: drop "
                               "`category` (per-category rules take per-image metrics)")
        return judge_set_regression(rule, base, cand, expand(rule, columns, skip))
    sign = orientation(cand.higher_is_better(rule.metric))
    out = []
    for column in expand(rule, columns, skip):
        row = deltas[(deltas.metric == rule.metric) & (deltas.scheduler == column[0]) & (deltas.steps == column[1])]
        place = {"kind": "regression", "metric": rule.metric, "scheduler": column[0], "steps": column[1],
                 "category": rule.category}
        if row.empty:
            out.append(_unpaired(rule, base, cand, column, place))
            continue
        r = row.iloc[0]
        lo, hi = sorted([sign * r.ci_low, sign * r.ci_high])
        ok = -lo <= rule.limit  # the CI's worse bound is the largest drop the data allow
        out.append(Outcome(**place, passed=ok, baseline=float(r.mean_b), candidate=float(r.mean_c),
                           delta=float(sign * r["mean"]), ci=(lo, hi),
                           message=f"paired over {int(r.n)} units: CI worse bound {lo:+.4g} "
                                   f"{'within' if ok else 'beyond'} max_drop {rule.limit:g}"))
    return out


def _unpaired(rule: Rule, base: ScoredRun, cand: ScoredRun, column: Column, place: dict) -> Outcome:
    """A column no unit of which has values in both runs: broken images fail it; anything else is bad input."""
    broken = [r.set_row(rule.metric, column) for r in (base, cand)]
    broken = [0 if row is None else int(row["broken"]) for row in broken]
    if not any(broken):
        raise EvalkitError(f"{rule.where}: the runs share no (prompt, seed) units with {rule.metric} values "
                           f"at {column[0]}@{column[1]}: rescore both runs")
    return Outcome(**place, passed=False, baseline=base.set_value(rule.metric, column),
                   candidate=cand.set_value(rule.metric, column), delta=None, ci=None,
                   message=f"no unit scored in both runs: {broken[1]} candidate and {broken[0]} baseline image(s) "
                           "broken (non-finite or blank)")


def judge_min_steps(rule: Rule, base: ScoredRun, cand: ScoredRun) -> list[Outcome]:
    for run in (base, cand):
        if "schedulers" not in run.min_steps():
            raise EvalkitError(f"{rule.where}: {run.dir}/summary.json has no min_steps: rescore it with "
                               f"`evalkit score {run.dir}` (or drop the [[min_steps]] rule)")
    if rule.category is not None:
        return judge_category_min_steps(rule, base, cand)
    entries = [run.min_steps()["schedulers"] for run in (base, cand)]
    return compare_min_steps(rule, entries[0], entries[1])


def judge_category_min_steps(rule: Rule, base: ScoredRun, cand: ScoredRun) -> list[Outcome]:
    """min_steps over one category's units (summary.json min_steps.categories): a category too small to judge in
    either run compares nothing, and says so."""
    found = [run.min_steps().get("categories", {}).get(rule.category) for run in (base, cand)]
    if found[0] is None or found[1] is None:
        have = sorted(cand.min_steps().get("categories", {}))
        raise EvalkitError(f"{rule.where}: category {rule.category!r} has no min-steps answer in the "
                           f"{'baseline' if found[0] is None else 'candidate'} run ("
                           f"{'categories: ' + ', '.join(have) if have else 'its prompts have no categories'}): "
                           "name one of them, or rescore runs made before per-category answers")
    unjudged = [f"{label}: {entry.get('why')}" for label, entry in zip(("baseline", "candidate"), found)
                if not entry.get("judged")]
    if unjudged:
        return [Outcome(kind="min_steps", scheduler=ALL, category=rule.category, passed=True, baseline=None,
                        candidate=None, delta=None, ci=None, compared=False,
                        message="not judged (" + "; ".join(unjudged) + ")")]
    return compare_min_steps(rule, found[0]["schedulers"], found[1]["schedulers"])


def compare_min_steps(rule: Rule, base: dict, cand: dict) -> list[Outcome]:
    """Per scheduler both runs' answers: an increase beyond max_increase, or a plateau lost, fails."""
    columns = {(s, 0) for s in set(base) & set(cand)}
    out = []
    for scheduler, _ in expand(rule, columns):
        b, c = base[scheduler], cand[scheduler]
        vb, vc = b.get("min_steps") if b.get("reached") else None, c.get("min_steps") if c.get("reached") else None
        place = {"kind": "min_steps", "scheduler": scheduler, "category": rule.category}
        if vb is not None and vc is not None:
            inc = vc - vb
            ok = inc <= rule.limit
            out.append(Outcome(**place, passed=ok, baseline=vb, candidate=vc, delta=-inc, ci=None,
                               message=f"min steps {vb} -> {vc}: increase {inc} {'<=' if ok else '>'} max_increase "
                                       f"{rule.limit:g}"))
        elif vb is not None:
            out.append(Outcome(**place, passed=False, baseline=vb, candidate=None, delta=None, ci=None,
                               message=f"reached the plateau at {vb} steps in baseline but not in candidate "
                                       f"({c.get('why', 'not reached')})"))
        elif vc is not None:
            out.append(Outcome(**place, passed=True, baseline=None, candidate=vc, delta=None, ci=None,
                               message="reached in candidate only (baseline never did)"))
        else:
            out.append(Outcome(**place, passed=True, baseline=None, candidate=None, delta=None, ci=None,
                               message="not reached in either run: nothing to compare (sweep more steps)",
                               compared=False))
    return out


def judge_broken(rule: Rule, base: ScoredRun | None, cand: ScoredRun) -> list[Outcome]:
    """Broken (non-finite or blank) images of the candidate, per swept scheduler and for the references."""
    columns = {(s, 0) for s in cand.sweep.scheduler} | ({(REFERENCES, 0)} if len(cand.references) else set())
    out = []
    for scheduler, _ in expand(rule, columns):
        count, total = cand.broken(scheduler)
        ok = count <= rule.limit
        out.append(Outcome(kind="broken_images", scheduler=scheduler, passed=ok,
                           baseline=base.broken(scheduler)[0] if base is not None else None, candidate=count,
                           delta=None, ci=None, compared=False,
                           message=f"{count} of {total} image(s) non-finite or blank (unscored) "
                                   f"{'<=' if ok else '>'} max_broken {rule.limit:g}"))
    return out


def judge_uncertified(rule: Rule, base: ScoredRun | None, cand: ScoredRun) -> Outcome:
    """Units of the candidate whose reference no second solution confirms (stages/certify.py): they have no
    convergence values, so every verdict on convergence metrics rests on the other units."""
    counts = [None if run is None or run.certification is None else len(run.uncertified()) for run in (base, cand)]
    place = dict(kind="uncertified_references", scheduler=REFERENCES, delta=None, ci=None, compared=False)
    if counts[1] is None or not cand.config.certify:
        why = "certify = false" if cand.certification is not None else "scored before certification: rescore it"
        return Outcome(**place, passed=True, baseline=counts[0], candidate=None,
                       message=f"not checked ({why}): convergence verdicts rest on references no second solution checked")
    table = cand.certification
    checked = int((table.status != UNCHECKED).sum())
    corrected = int((table.status == CORRECTED).sum())
    ok = counts[1] <= rule.limit
    units = ", ".join(f"{p}/{s}" for p, s in zip(cand.uncertified().prompt_id, cand.uncertified().seed))
    return Outcome(**place, passed=ok, baseline=counts[0], candidate=counts[1],
                   message=f"{counts[1]} of {checked} reference(s) uncertified, left out of convergence verdicts "
                           f"{'<=' if ok else '>'} max_uncertified {rule.limit:g}"
                           + (f" ({units})" if units else "") + (f"; {corrected} corrected by a tie-break" if corrected else ""))


def judge_band(rule: Rule, base: ScoredRun | None, cand: ScoredRun) -> list[Outcome]:
    _scored(rule, cand)
    out = []
    for column in expand(rule, cand.columns(rule.metric)):
        value = cand.set_value(rule.metric, column)
        ok = value is not None and rule.lo <= value <= rule.hi
        out.append(Outcome(kind="band", metric=rule.metric, scheduler=column[0], steps=column[1], passed=ok,
                           baseline=base.set_value(rule.metric, column) if base is not None else None,
                           candidate=value, delta=None,
                           ci=cand.set_interval(rule.metric, column),  # the candidate's own 95% interval
                           message=f"candidate {value:.4g} {'in' if ok else 'outside'} [{rule.lo:g}, {rule.hi:g}]"))
    return out
