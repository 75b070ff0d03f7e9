"""What the gate prints and writes: the console table (a per-scheduler summary, then every rule instance), a
markdown PR comment, and JUnit XML (one testsuite per scheduler)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..store.files import atomic_write
from .outcome import Outcome

HEADER = ["rule", "baseline", "candidate", "delta", "CI", "verdict"]
DELTA_NOTE = ("delta = candidate − baseline, sign flipped for lower-is-better metrics (negative = worse); "
              "CI = 95% paired bootstrap over (prompt, seed) units; regressions pass on the CI's worse bound")


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


def by_scheduler(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.scheduler, []).append(o)
    return groups


def scheduler_summary(outcomes: list[Outcome]) -> list[list[str]]:
    """Per scheduler: rules failed, the min-steps change, the worst regression (lowest delta) with its CI."""
    out = []
    for scheduler, group in by_scheduler(outcomes).items():
        failed = sum(not o.passed for o in group)
        steps = next((o for o in group if o.kind == "min_steps"), None)
        change = "—" if steps is None else f"{_fmt(steps.baseline)} → {_fmt(steps.candidate)}"
        if steps is not None and steps.delta is not None:
            change += f" ({-steps.delta:+g})"
        regressions = [o for o in group if o.kind == "regression" and o.delta is not None]
        worst = min(regressions, key=lambda o: o.delta, default=None)
        worst_text = "—" if worst is None else (
            f"{worst.place}: {worst.delta:+.4g}"
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
