"""`evalkit gate`: read the runs, parse the rules, judge, print, write the requested files, return the exit code."""
from __future__ import annotations

from pathlib import Path

from ..errors import EvalkitError
from ..store.files import atomic_write, check_output_file
from ..store.read import ScoredRun
from .comparable import check_comparable
from .judge import judge, judge_bands
from .outputs import console_table, markdown_summary, write_junit
from .rules import load_rules


def gate_main(baseline: str | Path | None, candidate: str | Path, rules: str | Path | None = None,
              junit: str | Path | None = None, markdown: str | Path | None = None,
              thresholds_only: bool = False) -> int:
    """Judge the candidate; print the table; write JUnit/markdown if asked; return 0 (pass) or 1 (fail)."""
    if thresholds_only and baseline is not None:
        raise EvalkitError("--thresholds-only judges one run against absolute bands: drop --baseline")
    if not thresholds_only and baseline is None:
        raise EvalkitError("gate needs --baseline DIR and --candidate DIR (or --thresholds-only with --rules)")
    for flag, path, example in (("--junit", junit, "gate.xml"), ("--markdown", markdown, "gate.md")):
        if path is not None:
            check_output_file(flag, Path(path), example)
    # the runs before the rules: their configs register the python: metric plugins whose names the rules may use
    base = ScoredRun.read(baseline) if baseline is not None else None
    cand = ScoredRun.read(candidate)
    parsed = load_rules(rules) if rules is not None else None
    if thresholds_only:
        if not any(r.kind == "band" for r in parsed or []):
            raise EvalkitError("--thresholds-only needs a rules file with at least one [[band]] rule: "
                               "pass --rules FILE with [[band]] metric, scheduler, steps, lo, hi")
        outcomes = judge_bands(parsed, cand)
        title = f"candidate {cand.dir} ({cand.config.model}) against absolute bands"
    else:
        check_comparable(base, cand)
        outcomes = judge(parsed, base, cand)
        title = f"candidate {cand.dir} ({cand.config.model}) vs baseline {base.dir} ({base.config.model})"
    print(console_table(outcomes, title))
    if junit is not None:  # atomic writes: a full disk is one line, and the verdict above stands
        write_junit(Path(junit), outcomes)
    if markdown is not None:
        atomic_write(Path(markdown), markdown_summary(outcomes, title).encode())
    return 0 if all(o.passed for o in outcomes) else 1
