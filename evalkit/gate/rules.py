"""Gate rules: the rules file (format in gate/__init__.py), the default rules, and the columns a rule covers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import read_toml
from ..errors import EvalkitError
from ..metrics import METRICS
from ..metrics.base import SET
from ..minsteps.perseed import default_tolerances
from ..store.read import Column, ScoredRun

ALL = "*"
KINDS = {  # rule kind -> (required keys, optional keys with defaults)
    "regression": ({"metric", "max_drop"}, {"scheduler": ALL, "steps": ALL, "category": None}),
    "min_steps": ({"max_increase"}, {"scheduler": ALL, "category": None}),
    "band": ({"metric", "scheduler", "steps", "lo", "hi"}, {}),
    "broken_images": (set(), {"scheduler": ALL, "max_broken": 0}),
    "uncertified_references": (set(), {"max_uncertified": 0}),
}
ALWAYS = ("broken_images", "uncertified_references")  # judged in every gate: their defaults when the file has none


@dataclass(frozen=True)
class Rule:
    """One rule as written in the rules file (or a default); `where` names it in error messages."""

    kind: str
    where: str
    metric: str | None = None
    scheduler: str = ALL
    steps: int | str = ALL
    limit: float = 0.0  # max_drop / max_increase / max_broken / max_uncertified
    lo: float = -math.inf
    hi: float = math.inf
    category: str | None = None  # regression / min_steps: judged over this prompt category's units only


def load_rules(path: str | Path) -> list[Rule]:
    """Parse and validate a rules file; every problem is a one-line EvalkitError naming the rule."""
    path = Path(path)
    data = read_toml(path, "rules file", "no --rules for the defaults")
    unknown = [k for k in data if k not in KINDS]
    if unknown:
        raise EvalkitError(f"unknown table {unknown[0]!r} in rules file {path}: use "
                           f"{', '.join(f'[[{k}]]' for k in KINDS)}")
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
    fields: dict[str, Any] = {"kind": kind, "where": where, "scheduler": _scheduler(v.get("scheduler", ALL), where)}
    if "metric" in v:
        if not isinstance(v["metric"], str):
            raise EvalkitError(f"{where}: metric must be a name string, got {v['metric']!r}")
        try:
            fields["metric"] = METRICS.canonical(v["metric"])
        except EvalkitError as exc:
            raise EvalkitError(f"{where}: {exc}") from None
    if "steps" in v:
        fields["steps"] = _steps(v["steps"], where)
    if v.get("category") is not None:
        if not isinstance(v["category"], str) or not v["category"].strip():
            raise EvalkitError(f"{where}: category must be a category name of the runs' prompt suite, "
                               f"got {v['category']!r}")
        fields["category"] = v["category"].strip()
    if kind == "regression":
        fields["limit"] = _number(v["max_drop"], "max_drop", where, minimum=0.0)
    elif kind == "min_steps":
        fields["limit"] = _number(v["max_increase"], "max_increase", where, minimum=0.0)
    elif kind == "broken_images":
        fields["limit"] = _number(v["max_broken"], "max_broken", where, minimum=0.0)
    elif kind == "uncertified_references":
        fields["limit"] = _number(v["max_uncertified"], "max_uncertified", where, minimum=0.0)
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


def default_rules(base: ScoredRun, cand: ScoredRun) -> list[Rule]:
    """Regression on every per-image metric with a default tolerance scored in both runs; min_steps +0."""
    scored = set(base.set_scores.metric) & set(cand.set_scores.metric)
    defaults = default_tolerances()
    rules = [Rule("regression", f"default ({name}, max_drop = its default min-steps tolerance)", metric=name,
                  limit=defaults[name])
             for name in sorted(scored) if name in defaults and METRICS.get(name).inputs != SET]
    return rules + [Rule("min_steps", "default (min_steps, max_increase = 0)", limit=0.0)]


def always_rules(parsed: list[Rule] | None) -> list[Rule]:
    """The rules every gate judges: the file's [[broken_images]] / [[uncertified_references]] rules, or for each
    kind it leaves out, the default that none may be broken / uncertified."""
    out = []
    for kind, limit in (("broken_images", "max_broken"), ("uncertified_references", "max_uncertified")):
        given = [r for r in parsed or [] if r.kind == kind]
        out += given or [Rule(kind, f"default ({kind}, {limit} = 0)", limit=0.0)]
    return out


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
                           f"(have {columns_text(columns)}): use a swept step count or \"*\"")
    if rule.scheduler == ALL:
        chosen = [c for c in chosen if not skip(c)]
    return chosen




def columns_text(columns: set[Column]) -> str:
    return ",".join(f"{s}@{n}" for s, n in sorted(columns)) or "none"
