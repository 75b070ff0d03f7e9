"""The minimum-steps decision, the one every answer evalkit gives goes through: exhaustive and adaptive min-steps,
the distribution rule, the self-test, the report's per-prompt view (recommend and the gate read its answers).

A rule supplies evidence per swept step count (a distance from the plateau, its interval, and `pass`); the
minimum useful step count is the smallest count from which every piece of evidence passes, at that count and
every larger one. Several rules (per-seed metrics, the distribution rule) must all pass: their joint answer is
the largest of their answers, which is what `combine` reports, naming the rules that decided it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Evidence = list[dict[str, Any]]  # per swept count, in order: {"steps", "distance", "ci_low", "ci_high", "pass", ...}


def passing_from(passing: Sequence[bool]) -> int:
    """The first index from which every entry passes ("within tolerance from here on"); len if the last fails."""
    first = len(passing)
    while first > 0 and passing[first - 1]:
        first -= 1
    return first


def decide(steps: list[int], evidence: dict[str, Evidence], stochastic: bool = False) -> dict[str, Any]:
    """{min_steps, reached[, why]} from evidence per gating metric (or rule) over the swept `steps`."""
    if not evidence:
        why = ("stochastic sampler: it never converges to one image per seed, and no absolute gating metric "
               "(e.g. clip_score) was scored") if stochastic else "no gating metric was scored"
        return {"min_steps": None, "reached": False, "why": why}
    passing = [all(ev[i]["pass"] for ev in evidence.values()) for i in range(len(steps))]
    first = passing_from(passing)
    if first == len(steps):
        broken = {m: ev[-1]["broken"] for m, ev in evidence.items() if ev[-1].get("broken")}
        if broken:
            return {"min_steps": None, "reached": False,
                    "why": f"broken (non-finite or blank) images at {steps[-1]} steps ("
                           f"{', '.join(f'{m}: {k} unscored' for m, k in broken.items())}): fix the model's output"}
        failing = [m for m, ev in evidence.items() if not ev[-1]["pass"]]
        return {"min_steps": None, "reached": False,
                "why": f"not within tolerance even at {steps[-1]} steps ({', '.join(failing)}): sweep more steps"}
    return {"min_steps": int(steps[first]), "reached": True}


def combine(entry: dict[str, Any], per_kind: dict[str, dict[str, Any]],
            distribution: dict[str, Any] | None) -> dict[str, Any]:
    """One answer from the rules that could judge (every one must pass: the largest count wins), naming them.

    `entry`: the per-seed rule's answer (`decide` over all its metrics); `per_kind`: the same rule's answer per
    kind of metric it judged on ("per-seed convergence" and/or "absolute"; their largest count is `entry`'s, since
    every metric must pass from a count on), empty when it judged nothing; `distribution`: the distribution rule's
    answer for the scheduler, or None when no distribution metric was scored."""
    rules = dict(per_kind)
    if distribution is not None and "evidence" in distribution:
        rules["distribution"] = distribution
    if not rules:
        why = entry.get("why", "")
        if distribution is not None:
            why += f"; distribution rule: {distribution.get('why')}"
        return {**entry, "why": why, "judged_by": [], "rules": {}}
    summary = {k: {"min_steps": r.get("min_steps"), "reached": r.get("reached"),
                   **({"why": r["why"]} if "why" in r else {})} for k, r in rules.items()}
    unreached = [k for k, r in rules.items() if not r.get("reached")]
    if unreached:
        why = "; ".join(f"{k}: {rules[k].get('why')}" for k in unreached)
        return {"min_steps": None, "reached": False, "why": why, "judged_by": unreached, "rules": summary}
    top = max(r["min_steps"] for r in rules.values())
    return {"min_steps": top, "reached": True, "judged_by": [k for k, r in rules.items() if r["min_steps"] == top],
            "rules": summary}
