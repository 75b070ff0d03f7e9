"""Release gate: judge a candidate run folder against a baseline (or against absolute bands), exit 0/1.

`gate_main(baseline, candidate, rules=None, junit=None, markdown=None, thresholds_only=False)` prints a
table and returns the exit code (0 every rule instance passes, 1 any fails); bad input raises
`EvalkitError` (exit 2 in the CLI).

Comparability: both runs must share prompts (ids and text), seeds, image size, guidance, negative prompt,
reference scheduler and steps, min-steps tolerances and metric backbones, and at least one
(scheduler, steps) column. The model may differ: that is what is being gated.

Rules file (TOML); every table is optional, every key below is the whole set of allowed keys:

    [[regression]]            # paired: candidate vs baseline image of the same (prompt, seed) unit
    metric = "ssim"           # a metric scored in both runs
    scheduler = "*"           # a scheduler name, or "*" (default) = every shared scheduler
    steps = "*"               # an int, or "*" (default) = every shared step count
    max_drop = 0.01           # required, >= 0, in the metric's units

    [[min_steps]]
    scheduler = "*"           # default "*"
    max_increase = 0          # required, >= 0: candidate's minimum useful steps minus baseline's

    [[band]]                  # MLPerf-style absolute band on the candidate's set_scores value
    metric = "clip_score"
    scheduler = "euler"       # or "*"
    steps = 20                # or "*"
    lo = 31.5                 # required, lo <= value <= hi passes
    hi = 40.0

regression: delta = candidate - baseline per unit, sign flipped for lower-is-better metrics so negative =
worse; its mean gets a 95% percentile-bootstrap CI over (prompt, seed) units (2000 replicates, seeded, all
columns of a metric resampled with the same units, as in stats.py). PASS iff the worse CI bound shows a drop
of at most max_drop (judged on the bound, not the mean). Set metrics (FID/KID) have no per-unit values: their CI
comes from resampling the shared units jointly in both runs and recomputing the metric from the cached features
(set_gate.py); runs scored against different targets (fid_reference) are refused. A band rule reports the
candidate's own 95% interval from set_scores (it passes on the value, as MLPerf's bands do). A "*" scheduler
skips columns flagged `not-convergent` (stochastic samplers on convergence metrics); name the scheduler to gate
them anyway.

min_steps: from summary.json. A scheduler that reached the plateau in the baseline but not in the candidate
fails; one that reaches it in neither passes (with a note).

    [[broken_images]]         # always applied: without this table, max_broken = 0 for every scheduler
    scheduler = "*"           # a swept scheduler, "references", or "*" (default) = each of them
    max_broken = 0            # non-finite or blank images the candidate may have there (default 0)

broken_images: a broken image has no scores (it is never compared with anything), so without this rule a
model returning NaN could pass every other rule. To accept some, relax it explicitly in the rules file.

A gate that compares nothing (e.g. every swept scheduler stochastic, so "*" regression rules on convergence
metrics skip every column and neither run reaches minimum steps) is bad input, exit 2: gate such sweeps on
FID/KID or clip_score, or name the scheduler in the rule.

Without a rules file: a regression rule per per-image metric scored in both runs that has a default
tolerance (plateau.DEFAULT_TOLERANCES, used as max_drop; e.g. psnr has none and is not gated), over every
shared column, plus `min_steps` with max_increase 0 for every scheduler. With `thresholds_only`, one run
(the candidate) is judged on the file's [[band]] rules only.
"""
from __future__ import annotations

import math
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .config import read_toml
from .errors import EvalkitError
from .metrics import METRICS
from .metrics.base import SET
from .plateau import DEFAULT_TOLERANCES
from .stats import bootstrap_means, orientation
from .store import UNIT_COLUMN, ScoredRun, atomic_write, is_broken

ALL = "*"
N_BOOT, LEVEL, SEED = 2000, 0.95, 0
KINDS = {  # rule kind -> (required keys, optional keys with defaults)
    "regression": ({"metric", "max_drop"}, {"scheduler": ALL, "steps": ALL}),
    "min_steps": ({"max_increase"}, {"scheduler": ALL}),
    "band": ({"metric", "scheduler", "steps", "lo", "hi"}, {}),
    "broken_images": (set(), {"scheduler": ALL, "max_broken": 0}),
}
REFERENCES = "references"  # the broken_images rule's name for the run's reference images
HEADER = ["rule", "baseline", "candidate", "delta", "CI", "verdict"]
DELTA_NOTE = ("delta = candidate − baseline, sign flipped for lower-is-better metrics (negative = worse); "
              "CI = 95% paired bootstrap over (prompt, seed) units; regressions pass on the CI's worse bound")


@dataclass(frozen=True)
class Rule:
    """One rule as written in the rules file (or a default); `where` names it in error messages."""

    kind: str
    where: str
    metric: str | None = None
    scheduler: str = ALL
    steps: int | str = ALL
    limit: float = 0.0  # max_drop / max_increase
    lo: float = -math.inf
    hi: float = math.inf


@dataclass(frozen=True)
class Outcome:
    """One expanded rule instance, judged."""

    name: str
    passed: bool
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci: tuple[float, float] | None
    message: str  # why it passed or failed, one line
    compared: bool = True  # False: the instance had nothing to judge (the gate refuses to compare nothing)


class RunData(ScoredRun):
    """A scored run (store.ScoredRun) with the gate's look-ups."""

    def broken(self, scheduler: str) -> tuple[int, int]:
        """(broken, all) images of one swept scheduler, or of the references (REFERENCES)."""
        rows = self.references if scheduler == REFERENCES else self.sweep[self.sweep.scheduler == scheduler]
        return sum(is_broken(f) for f in rows["flags"]), len(rows)

    def columns(self, metric: str) -> set[tuple[str, int]]:
        rows = self.set_scores[self.set_scores.metric == metric]
        return {(s, int(n)) for s, n in zip(rows.scheduler, rows.steps)
                if s in self.config.schedulers and int(n) in self.config.steps}

    def flagged(self, metric: str, column: tuple[str, int], flag: str) -> bool:
        row = self._row(metric, column)
        return row is not None and flag in str(row.get("flags", "") or "").split(",")

    def set_value(self, metric: str, column: tuple[str, int]) -> float | None:
        row = self._row(metric, column)
        return None if row is None else float(row["value"])

    def _row(self, metric: str, column: tuple[str, int]) -> pd.Series | None:
        t = self.set_scores
        rows = t[(t.metric == metric) & (t.scheduler == column[0]) & (t.steps == column[1])]
        return rows.iloc[0] if len(rows) else None


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def gate_main(baseline: str | Path | None, candidate: str | Path, rules: str | Path | None = None,
              junit: str | Path | None = None, markdown: str | Path | None = None,
              thresholds_only: bool = False) -> int:
    """Judge the candidate; print the table; write JUnit/markdown if asked; return 0 (pass) or 1 (fail)."""
    if thresholds_only and baseline is not None:
        raise EvalkitError("--thresholds-only judges one run against absolute bands: drop --baseline")
    if not thresholds_only and baseline is None:
        raise EvalkitError("gate needs --baseline DIR and --candidate DIR (or --thresholds-only with --rules)")
    for flag, path in (("--junit", junit), ("--markdown", markdown)):
        if path is not None:
            _check_writable(flag, Path(path))
    # the runs before the rules: their configs register the python: metric plugins whose names the rules may use
    base, cand = (load_run(baseline) if baseline is not None else None), load_run(candidate)
    parsed = load_rules(rules) if rules is not None else None
    if thresholds_only:
        bands = [r for r in (parsed or []) if r.kind == "band"]
        if not bands:
            raise EvalkitError("--thresholds-only needs a rules file with at least one [[band]] rule: "
                               "pass --rules FILE with [[band]] metric, scheduler, steps, lo, hi")
        outcomes = _checked([o for r in [*bands, *broken_rules(parsed)] for o in
                             (judge_band(r, None, cand) if r.kind == "band" else judge_broken(r, None, cand))])
        title = f"candidate {cand.dir} ({cand.config.model}) against absolute bands"
    else:
        check_comparable(base, cand)
        outcomes = judge(parsed, base, cand)
        title = f"candidate {cand.dir} ({cand.config.model}) vs baseline {base.dir} ({base.config.model})"
    print(console_table(outcomes, title))
    for flag, path, write in (("--junit", junit, lambda p: write_junit(p, outcomes)),
                              ("--markdown", markdown, lambda p: atomic_write(p, markdown_summary(outcomes, title).encode()))):
        if path is not None:
            try:
                write(Path(path))
            except OSError as exc:  # e.g. the disk filled up since the check
                raise EvalkitError(f"{flag} {path} could not be written ({exc.strerror}): pass a writable file path "
                                   "(the verdict above stands)") from None
    return 0 if all(o.passed for o in outcomes) else 1


def judge(rules: list[Rule] | None, base: RunData, cand: RunData) -> list[Outcome]:
    """The gate's decision on two comparable runs: the given rules (or the defaults) plus the broken-images rule."""
    chosen = rules if rules is not None else default_rules(base, cand)
    return _checked(evaluate([r for r in chosen if r.kind != "broken_images"] + broken_rules(rules), base, cand))


def _checked(outcomes: list[Outcome]) -> list[Outcome]:
    """Unique names; a gate that compared nothing is bad input, never a pass."""
    if not any(o.compared for o in outcomes):
        raise EvalkitError("the gate compared nothing: no rule instance had values to judge (e.g. every swept "
                           "scheduler is stochastic, so \"*\" skips their convergence columns and neither run reaches "
                           "min steps): gate them on fid/kid or clip_score, or name the scheduler in a [[regression]]")
    return _unique_names(outcomes)


def _check_writable(flag: str, path: Path) -> None:
    """Output-file problems are bad input (exit 2), found before judging, never a failed gate (exit 1)."""
    if path.is_dir():
        example = path / ("gate.xml" if flag == "--junit" else "gate.md")
        raise EvalkitError(f"{flag} {path} is a folder: pass a file path, e.g. {example}")
    if not path.parent.is_dir():
        raise EvalkitError(f"{flag} {path}: folder {path.parent} does not exist: create it or pass another path")
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise EvalkitError(f"{flag} {path}: folder {path.parent} is not writable ({exc.strerror}): "
                           "pass a path in a writable folder") from None


# ----------------------------------------------------------------------------------------------------------
# Reading runs and checking they can be compared
# ----------------------------------------------------------------------------------------------------------

def load_run(path: str | Path) -> RunData:
    return RunData.read(path)


def check_comparable(base: RunData, cand: RunData) -> None:
    """Raise one EvalkitError naming every difference that makes a paired comparison meaningless."""
    diffs = []
    b, c = base.config, cand.config
    if set(b.seeds) != set(c.seeds):
        diffs.append(f"seeds {_list(sorted(b.seeds))} vs {_list(sorted(c.seeds))}")
    diffs += _prompt_diffs(_prompts(base), _prompts(cand))
    sizes = [sorted({(int(w), int(h)) for w, h in zip(r.sweep.width, r.sweep.height)}) for r in (base, cand)]
    if sizes[0] != sizes[1]:
        diffs.append(f"image size {_sizes(sizes[0])} vs {_sizes(sizes[1])}")
    for key in ("guidance", "negative_prompt", "reference_scheduler", "reference_steps", "tolerances"):
        if getattr(b, key) != getattr(c, key):
            diffs.append(f"{key} {getattr(b, key)!r} vs {getattr(c, key)!r}")
    metrics_b, metrics_c = base.summary.get("metrics", {}), cand.summary.get("metrics", {})
    for name in sorted(set(metrics_b) & set(metrics_c)):
        if metrics_b[name].get("backbone") != metrics_c[name].get("backbone"):
            diffs.append(f"{name} backbone {metrics_b[name].get('backbone')!r} vs {metrics_c[name].get('backbone')!r}")
    columns = [{(s, int(n)) for s, n in zip(r.sweep.scheduler, r.sweep.steps)} for r in (base, cand)]
    if not columns[0] & columns[1]:
        diffs.append(f"no shared (scheduler, steps) columns ({_cols(columns[0])} vs {_cols(columns[1])})")
    if diffs:
        raise EvalkitError(f"not comparable: {'; '.join(diffs)}: use the same sweep config for both runs "
                           "(only the model may differ)")


def _prompts(run: RunData) -> dict[str, str]:
    return dict(zip(run.sweep.prompt_id, run.sweep.prompt))


def _prompt_diffs(a: dict[str, str], b: dict[str, str]) -> list[str]:
    out = []
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a:
        out.append(f"prompts only in baseline: {', '.join(only_a)}")
    if only_b:
        out.append(f"prompts only in candidate: {', '.join(only_b)}")
    changed = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    if changed:
        out.append(f"prompts differ at {', '.join(changed)}")
    return out


def _list(items: list) -> str:
    return "[" + ",".join(str(x) for x in items) + "]"


def _sizes(sizes: list[tuple[int, int]]) -> str:
    return ",".join(f"{w}x{h}" for w, h in sizes) or "none"


def _cols(columns: set[tuple[str, int]]) -> str:
    return ",".join(f"{s}@{n}" for s, n in sorted(columns)) or "none"


# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------

def load_rules(path: str | Path) -> list[Rule]:
    """Parse and validate a rules file; every problem is a one-line EvalkitError naming the rule."""
    path = Path(path)
    data = read_toml(path, "rules file", "no --rules for the defaults")
    unknown = [k for k in data if k not in KINDS]
    if unknown:
        raise EvalkitError(f"unknown table {unknown[0]!r} in rules file {path}: use [[regression]], "
                           "[[min_steps]] or [[band]]")
    rules = []
    for kind, entries in data.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise EvalkitError(f"{kind} in rules file {path} must be an array of tables: write [[{kind}]]")
        rules += [_rule(kind, entry, f"{path.name}: [[{kind}]] #{i}") for i, entry in enumerate(entries, 1)]
    if not rules:
        raise EvalkitError(f"rules file {path} has no rules: add [[regression]], [[min_steps]] or [[band]] tables")
    return rules


def _rule(kind: str, entry: dict[str, Any], where: str) -> Rule:
    required, optional = KINDS[kind]
    unknown = sorted(set(entry) - required - set(optional))
    if unknown:
        raise EvalkitError(f"{where}: unknown key {unknown[0]!r}: allowed keys are "
                           f"{', '.join(sorted(required | set(optional)))}")
    missing = sorted(required - set(entry))
    if missing:
        raise EvalkitError(f"{where}: missing {', '.join(missing)}: every [[{kind}]] needs "
                           f"{', '.join(sorted(required))}")
    v = {**optional, **entry}
    fields: dict[str, Any] = {"kind": kind, "where": where, "scheduler": _scheduler(v["scheduler"], where)}
    if "metric" in v:
        if not isinstance(v["metric"], str):
            raise EvalkitError(f"{where}: metric must be a name string, got {v['metric']!r}")
        try:
            fields["metric"] = METRICS.canonical(v["metric"])
        except EvalkitError as exc:
            raise EvalkitError(f"{where}: {exc}") from None
    if "steps" in v:
        fields["steps"] = _steps(v["steps"], where)
    if kind == "regression":
        fields["limit"] = _number(v["max_drop"], "max_drop", where, minimum=0.0)
    elif kind == "min_steps":
        fields["limit"] = _number(v["max_increase"], "max_increase", where, minimum=0.0)
    elif kind == "broken_images":
        fields["limit"] = _number(v["max_broken"], "max_broken", where, minimum=0.0)
    else:
        fields["lo"], fields["hi"] = _number(v["lo"], "lo", where), _number(v["hi"], "hi", where)
        if fields["lo"] > fields["hi"]:
            raise EvalkitError(f"{where}: lo ({fields['lo']}) > hi ({fields['hi']}): swap them")
    return Rule(**fields)


def _scheduler(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EvalkitError(f'{where}: scheduler must be a name or "*", got {value!r}')
    return value.strip()


def _steps(value: Any, where: str) -> int | str:
    if value == ALL:
        return ALL
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvalkitError(f'{where}: steps must be a positive integer or "*", got {value!r}')
    return value


def _number(value: Any, name: str, where: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise EvalkitError(f"{where}: {name} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise EvalkitError(f"{where}: {name} must be >= {minimum:g}, got {value!r}")
    return float(value)


def default_rules(base: RunData, cand: RunData) -> list[Rule]:
    """Regression on every per-image metric with a default tolerance scored in both runs; min_steps +0."""
    scored = set(base.set_scores.metric) & set(cand.set_scores.metric)
    rules = [Rule("regression", f"default ({name}, max_drop = plateau.DEFAULT_TOLERANCES)", metric=name,
                  limit=DEFAULT_TOLERANCES[name])
             for name in sorted(scored) if name in DEFAULT_TOLERANCES and METRICS.get(name).inputs != SET]
    return rules + [Rule("min_steps", "default (min_steps, max_increase = 0)", limit=0.0)]


def broken_rules(parsed: list[Rule] | None) -> list[Rule]:
    """The file's [[broken_images]] rules, or the default that no image may be broken: always judged."""
    given = [r for r in parsed or [] if r.kind == "broken_images"]
    return given or [Rule("broken_images", "default (broken_images, max_broken = 0)", limit=0.0)]


# ----------------------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------------------

def evaluate(rules: list[Rule], base: RunData, cand: RunData) -> list[Outcome]:
    deltas = paired_deltas(base, cand)
    out: list[Outcome] = []
    for rule in rules:
        if rule.kind == "regression":
            out += judge_regression(rule, base, cand, deltas)
        elif rule.kind == "min_steps":
            out += judge_min_steps(rule, base, cand)
        elif rule.kind == "broken_images":
            out += judge_broken(rule, base, cand)
        else:
            out += judge_band(rule, base, cand)
    return out


def paired_deltas(base: RunData, cand: RunData) -> pd.DataFrame:
    """Per (scheduler, steps, metric): paired means of both runs and of candidate − baseline, with its CI.

    Only units (prompt, seed) present in both runs count. The CI is stats.bootstrap_means on the per-unit
    differences: one resample of units per metric shared by all columns (= stats.paired_difference per
    column when no unit is missing)."""
    keys = UNIT_COLUMN + ["metric"]
    both = base.sweep_values().merge(cand.sweep_values(), on=keys, suffixes=("_b", "_c")).dropna(subset=["value_b", "value_c"])
    if both.empty:
        return pd.DataFrame(columns=["scheduler", "steps", "metric", "mean_b", "mean_c", "mean", "ci_low",
                                     "ci_high", "n"])
    diffs = both.assign(value=both.value_c - both.value_b)[keys + ["value"]]
    table = bootstrap_means(diffs, n_boot=N_BOOT, level=LEVEL, seed=SEED).rename(columns={"value": "mean"})
    means = both.groupby(["scheduler", "steps", "metric"], as_index=False)[["value_b", "value_c"]].mean()
    means = means.rename(columns={"value_b": "mean_b", "value_c": "mean_c"})
    return table.merge(means, on=["scheduler", "steps", "metric"])


Column = tuple[str, int]


def expand(rule: Rule, columns: set[Column], skip: Callable[[Column], bool] = lambda column: False) -> list[Column]:
    """The (scheduler, steps) columns a rule covers; a named scheduler/steps absent from `columns` is an error.
    A "*" scheduler leaves out the columns `skip` names."""
    schedulers = sorted({s for s, _ in columns})
    if rule.scheduler != ALL and rule.scheduler not in schedulers:
        raise EvalkitError(f"{rule.where}: scheduler {rule.scheduler!r} is not in the run(s) for "
                           f"{rule.metric or 'min_steps'} (have {', '.join(schedulers) or 'none'}): "
                           'fix the name or use "*"')
    chosen = [c for c in sorted(columns) if rule.scheduler in (ALL, c[0]) and rule.steps in (ALL, c[1])]
    if not chosen:
        raise EvalkitError(f"{rule.where}: no (scheduler, steps) column {rule.scheduler}@{rule.steps} for "
                           f"{rule.metric or 'min_steps'} in the run(s) "
                           f"(have {_cols(columns)}): use a swept step count or \"*\"")
    if rule.scheduler == ALL:
        chosen = [c for c in chosen if not skip(c)]
    return chosen


def _scored(rule: Rule, *runs: RunData) -> None:
    for run, label in zip(runs, ("baseline", "candidate") if len(runs) == 2 else ("candidate",)):
        if rule.metric not in set(run.set_scores.metric):
            have = ", ".join(sorted(set(run.set_scores.metric))) or "none"
            raise EvalkitError(f"{rule.where}: metric {rule.metric!r} was not scored in the {label} run {run.dir} "
                               f"(scored: {have}): score it in both runs or drop the rule")


def judge_regression(rule: Rule, base: RunData, cand: RunData, deltas: pd.DataFrame) -> list[Outcome]:
    _scored(rule, base, cand)
    spec = METRICS.get(rule.metric)
    sign = orientation(spec.higher_is_better)
    columns = base.columns(rule.metric) & cand.columns(rule.metric)
    skip = lambda c: any(r.flagged(rule.metric, c, "not-convergent") for r in (base, cand))  # noqa: E731
    if spec.inputs == SET:  # a unit bootstrap over both runs' cached features (set_gate.py)
        from .set_gate import judge_set_regression

        return judge_set_regression(rule, base, cand, expand(rule, columns, skip))
    out = []
    for column in expand(rule, columns, skip):
        name = f"regression {rule.metric} {column[0]}@{column[1]}"
        row = deltas[(deltas.metric == rule.metric) & (deltas.scheduler == column[0]) & (deltas.steps == column[1])]
        broken = [r.set_scores.loc[(r.set_scores.metric == rule.metric) & (r.set_scores.scheduler == column[0])
                                   & (r.set_scores.steps == column[1]), "broken"].sum() for r in (base, cand)]
        if row.empty and any(broken):
            out.append(Outcome(name, False, base.set_value(rule.metric, column), cand.set_value(rule.metric, column),
                               None, None, f"no unit scored in both runs: {int(broken[1])} candidate and "
                               f"{int(broken[0])} baseline image(s) broken (non-finite or blank)"))
            continue
        if row.empty:
            raise EvalkitError(f"{rule.where}: the runs share no (prompt, seed) units with {rule.metric} values "
                               f"at {column[0]}@{column[1]}: rescore both runs")
        r = row.iloc[0]
        lo, hi = sorted([sign * r.ci_low, sign * r.ci_high])
        ok = -lo <= rule.limit  # the CI's worse bound is the largest drop the data allow
        out.append(Outcome(name, ok, float(r.mean_b), float(r.mean_c), float(sign * r["mean"]), (lo, hi),
                           f"paired over {int(r.n)} units: CI worse bound {lo:+.4g} "
                           f"{'within' if ok else 'beyond'} max_drop {rule.limit:g}"))
    return out


def judge_min_steps(rule: Rule, base: RunData, cand: RunData) -> list[Outcome]:
    for run in (base, cand):
        if "schedulers" not in run.summary.get("min_steps", {}):
            raise EvalkitError(f"{rule.where}: {run.dir}/summary.json has no min_steps: rescore it with "
                               f"`evalkit score {run.dir}` (or drop the [[min_steps]] rule)")
    entries = [run.summary["min_steps"]["schedulers"] for run in (base, cand)]
    columns = {(s, 0) for s in set(entries[0]) & set(entries[1])}
    out = []
    for scheduler, _ in expand(rule, columns):
        b, c = entries[0][scheduler], entries[1][scheduler]
        vb, vc = b.get("min_steps") if b.get("reached") else None, c.get("min_steps") if c.get("reached") else None
        name = f"min_steps {scheduler}"
        if vb is not None and vc is not None:
            inc = vc - vb
            ok = inc <= rule.limit
            msg = f"min steps {vb} -> {vc}: increase {inc} {'<=' if ok else '>'} max_increase {rule.limit:g}"
            out.append(Outcome(name, ok, vb, vc, -inc, None, msg))
        elif vb is not None:
            out.append(Outcome(name, False, vb, None, None, None,
                               f"reached the plateau at {vb} steps in baseline but not in candidate "
                               f"({c.get('why', 'not reached')})"))
        elif vc is not None:
            out.append(Outcome(name, True, None, vc, None, None, "reached in candidate only (baseline never did)"))
        else:
            out.append(Outcome(name, True, None, None, None, None,
                               "not reached in either run: nothing to compare (sweep more steps)", compared=False))
    return out


def judge_broken(rule: Rule, base: RunData | None, cand: RunData) -> list[Outcome]:
    """Broken (non-finite or blank) images of the candidate, per swept scheduler and for the references."""
    columns = {(s, 0) for s in cand.sweep.scheduler} | ({(REFERENCES, 0)} if len(cand.references) else set())
    out = []
    for scheduler, _ in expand(rule, columns):
        count, total = cand.broken(scheduler)
        ok = count <= rule.limit
        out.append(Outcome(f"broken_images {scheduler}", ok, base.broken(scheduler)[0] if base is not None else None,
                           count, None, None,
                           f"{count} of {total} image(s) non-finite or blank (unscored) "
                           f"{'<=' if ok else '>'} max_broken {rule.limit:g}", compared=False))
    return out


def judge_band(rule: Rule, base: RunData | None, cand: RunData) -> list[Outcome]:
    _scored(rule, cand)
    out = []
    for column in expand(rule, cand.columns(rule.metric)):
        value = cand.set_value(rule.metric, column)
        ok = value is not None and rule.lo <= value <= rule.hi
        ref = base.set_value(rule.metric, column) if base is not None else None
        out.append(Outcome(f"band {rule.metric} {column[0]}@{column[1]}", ok, ref, value, None,
                           band_ci(cand, rule.metric, column),  # the candidate's own 95% interval
                           f"candidate {value:.4g} {'in' if ok else 'outside'} [{rule.lo:g}, {rule.hi:g}]"))
    return out


def _unique_names(outcomes: list[Outcome]) -> list[Outcome]:
    """Two rules expanding to the same instance keep both, numbered, so JUnit names stay unique."""
    seen: dict[str, int] = {}
    out = []
    for o in outcomes:
        seen[o.name] = seen.get(o.name, 0) + 1
        out.append(o if seen[o.name] == 1 else Outcome(**{**o.__dict__, "name": f"{o.name} ({seen[o.name]})"}))
    return out


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    return [[o.name, _fmt(o.baseline), _fmt(o.candidate), _fmt(o.delta),
             f"[{o.ci[0]:.4g}, {o.ci[1]:.4g}]" if o.ci else "—", "PASS" if o.passed else "FAIL"] for o in outcomes]


def verdict(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return f"PASS: all {len(outcomes)} rule instances pass"
    return f"FAIL: {len(failed)} of {len(outcomes)} rule instances fail"


def scheduler_of(outcome: Outcome) -> str:
    """The scheduler an expanded rule instance judges (names: `kind metric sched@steps`, `min_steps sched`, `broken_images sched`)."""
    words = outcome.name.split()
    return (words[1] if words[0] in ("min_steps", "broken_images") else words[2]).split("@")[0]


def by_scheduler(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(scheduler_of(o), []).append(o)
    return groups


def scheduler_summary(outcomes: list[Outcome]) -> list[list[str]]:
    """Per scheduler: rules failed, the min-steps change, the worst regression (lowest delta) with its CI."""
    out = []
    for scheduler, group in by_scheduler(outcomes).items():
        failed = sum(not o.passed for o in group)
        steps = next((o for o in group if o.name.startswith("min_steps")), None)
        change = "—" if steps is None else f"{_fmt(steps.baseline)} → {_fmt(steps.candidate)}"
        if steps is not None and steps.delta is not None:
            change += f" ({-steps.delta:+g})"
        regressions = [o for o in group if o.name.startswith("regression") and o.delta is not None]
        worst = min(regressions, key=lambda o: o.delta, default=None)
        worst_text = "—" if worst is None else (
            f"{' '.join(worst.name.split()[1:])}: {worst.delta:+.4g}"
            + (f" [{worst.ci[0]:.4g}, {worst.ci[1]:.4g}]" if worst.ci else ""))
        out.append([scheduler, f"{failed} of {len(group)}", change, worst_text, "FAIL" if failed else "PASS"])
    return out


SUMMARY_HEADER = ["scheduler", "rules failed", "min steps (baseline → candidate)", "worst regression (delta, CI)",
                  "verdict"]


def console_table(outcomes: list[Outcome], title: str) -> str:
    body = [HEADER + ["why"]] + [r + [o.message] for r, o in zip(rows(outcomes), outcomes)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    summary = [SUMMARY_HEADER] + scheduler_summary(outcomes)
    swidths = [max(len(line[i]) for line in summary) for i in range(len(SUMMARY_HEADER))]
    lines = [f"gate: {verdict(outcomes)}", f"gate: {title}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, swidths)).rstrip() for line in summary]
    lines += [""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in body]
    lines += [DELTA_NOTE, f"gate: {verdict(outcomes)}"]
    return "\n".join(lines)


def markdown_summary(outcomes: list[Outcome], title: str) -> str:
    """Verdict first, then one line per scheduler, then every rule instance in a collapsed <details> block."""
    icon = "✅" if all(o.passed for o in outcomes) else "❌"
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    table = lambda header: ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # noqa: E731
    lines = [f"### {icon} evalkit gate {verdict(outcomes)}", "", cell(title), ""]
    lines += table(SUMMARY_HEADER)
    for r in scheduler_summary(outcomes):
        r[-1] = "✅ pass" if r[-1] == "PASS" else "❌ **fail**"
        lines.append("| " + " | ".join(cell(x) for x in r) + " |")
    failed = sum(not o.passed for o in outcomes)
    lines += ["", f"<details><summary>All {len(outcomes)} rule instances "
                  f"({failed} failed)</summary>", ""]
    lines += table(HEADER)
    for r, o in zip(rows(outcomes), outcomes):
        r[-1] = "✅ pass" if o.passed else f"❌ **fail**: {o.message}"
        lines.append("| " + " | ".join(cell(x) for x in r) + " |")
    lines += ["", "</details>", "", f"<sub>{DELTA_NOTE}</sub>", ""]
    return "\n".join(lines)


def write_junit(path: Path, outcomes: list[Outcome]) -> None:
    """One <testsuite> per scheduler (classname evalkit.gate.SCHEDULER), so CI UIs group the rules by it."""
    failures = sum(not o.passed for o in outcomes)
    root = ET.Element("testsuites", name="evalkit gate", tests=str(len(outcomes)), failures=str(failures),
                      errors="0")
    for scheduler, group in by_scheduler(outcomes).items():
        suite = ET.SubElement(root, "testsuite", name=f"evalkit gate: {scheduler}", tests=str(len(group)),
                              failures=str(sum(not o.passed for o in group)), errors="0", skipped="0")
        for o in group:
            case = ET.SubElement(suite, "testcase", name=o.name, classname=f"evalkit.gate.{scheduler}")
            if o.passed:
                ET.SubElement(case, "system-out").text = o.message
            else:
                ET.SubElement(case, "failure", message=o.message, type="GateFailure").text = (
                    f"{o.name}: baseline {_fmt(o.baseline)}, candidate {_fmt(o.candidate)}, delta {_fmt(o.delta)}"
                    + (f", CI [{o.ci[0]:.4g}, {o.ci[1]:.4g}]" if o.ci else "") + f": {o.message}")
    ET.indent(root)
    atomic_write(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def band_ci(run: RunData, metric: str, column: Column) -> tuple[float, float] | None:
    """The run's own 95% interval for a band row, from set_scores (set metrics: the score stage's unit bootstrap)."""
    row = run._row(metric, column)
    if row is None or pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
        return None
    return float(row["ci_low"]), float(row["ci_high"])
