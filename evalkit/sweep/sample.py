"""The run's prompts: its source read (sweep/prompts.py), then `prompt_sample` applied, the one way every command
gets them (`run_prompts`).

A sample is reproducible and grows without taking anything back: every prompt has a seeded pseudo-random priority
(a hash of the seed and its id, so rows added to the file never reorder the others), the strata's counts are handed
out one seat at a time, and a stratum's seats go to its prompts in priority order. The sample of n + 1 is the
sample of n plus one prompt, so a bigger sample renders only the prompts it adds. Seats go by Sainte-Laguë
(Webster's divisor method) for a proportional allocation, never by largest remainders, which can take a seat back
as n grows (the Alabama paradox); an equal allocation gives each seat to the stratum holding the fewest.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from operator import attrgetter
from typing import Any

from ..config import SweepConfig
from ..errors import EvalkitError
from .prompts import Prompt, Suite, read_prompts


@dataclass(frozen=True)
class RunPrompts:
    """What a run renders: the chosen prompts (in source order) and the record of how they were chosen."""

    prompts: list[Prompt]
    suite: Suite
    sample: dict[str, Any]  # prompt_sample.json

    def rows(self) -> list[dict[str, Any]]:
        """prompts.parquet: one row per chosen prompt."""
        return [{"id": p.id, "prompt": p.text, "category": p.category, "challenge": p.challenge,
                 "meta": json.dumps(dict(p.meta), ensure_ascii=False), "row": self.suite.origins[p.id][0],
                 "where": self.suite.origins[p.id][1]} for p in self.prompts]


def run_prompts(config: SweepConfig) -> RunPrompts:
    """The run's prompts from its config: the source read with its format and columns, then sampled."""
    suite = read_prompts(config.prompts_source(), config.prompt_format, config.prompt_columns)
    spec = config.prompt_sample
    chosen, strata = (sample_prompts(list(suite.prompts), **spec) if spec else (list(suite.prompts), None))
    record = {"source": suite.source, "format": suite.format, "files": list(suite.files),
              "available": len(suite.prompts), "chosen": len(chosen), "n": spec.get("n"), "by": spec.get("by"),
              "allocation": spec.get("allocation"), "seed": spec.get("seed"), "strata": strata,
              "repeats_left_out": [{"prompt": text, "where": where, "first": first}
                                   for text, where, first in suite.repeats]}
    return RunPrompts(chosen, suite, record)


def sample_prompts(prompts: list[Prompt], n: int, by: str | None = None, allocation: str = "proportional",
                   seed: int = 0) -> tuple[list[Prompt], dict[str, dict[str, int]] | None]:
    """n of `prompts` (all of them if n is larger), in their order, and per stratum {available, chosen} (None
    without `by`)."""
    ranked = sorted(prompts, key=lambda p: priority(seed, p.id))
    if by is None:
        keep = {p.id for p in ranked[:n]}
        return [p for p in prompts if p.id in keep], None
    column = stratum_column(prompts, by)
    groups: dict[str, list[Prompt]] = {}
    for p in ranked:
        groups.setdefault(column(p), []).append(p)
    seats = allocate({name: len(members) for name, members in groups.items()}, n, allocation,
                     tiebreak={name: priority(seed, members[0].id) for name, members in groups.items()})
    keep = {p.id for name, members in groups.items() for p in members[:seats[name]]}
    strata = {name: {"available": len(groups[name]), "chosen": seats[name]} for name in sorted(groups)}
    return [p for p in prompts if p.id in keep], strata


def priority(seed: int, prompt_id: str) -> int:
    """A prompt's place in the seed's random order: a hash of the two, independent of every other prompt."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt_id}".encode()).digest()[:8], "big")


def allocate(sizes: dict[str, int], n: int, allocation: str, tiebreak: dict[str, int]) -> dict[str, int]:
    """Seats per stratum for a sample of n, handed out one at a time (house monotone: the seats for n + 1 are
    those for n plus one). proportional: Sainte-Laguë, the next seat to the stratum with the largest
    size / (2 * seats + 1); equal: to the stratum with the fewest seats. A full stratum takes no more; ties go by
    `tiebreak` (the seed's priority of each stratum's first prompt), so no stratum name is favoured."""
    seats = dict.fromkeys(sizes, 0)
    heap = [(_claim(size, 0, allocation), tiebreak[name], name) for name, size in sizes.items() if size]
    heapq.heapify(heap)
    for _ in range(min(n, sum(sizes.values()))):
        _, tie, name = heapq.heappop(heap)
        seats[name] += 1
        if seats[name] < sizes[name]:
            heapq.heappush(heap, (_claim(sizes[name], seats[name], allocation), tie, name))
    return seats


def _claim(size: int, seats: int, allocation: str) -> Any:
    """Heap order for a stratum's next seat: smallest first."""
    if allocation == "equal":
        return seats
    return -Fraction(size, 2 * seats + 1)  # exact: float quotients could tie-break differently on other machines


def stratum_column(prompts: list[Prompt], by: str) -> Callable[[Prompt], str]:
    """The value of column `by` (category, challenge or a metadata column, any case) of a prompt."""
    name = by.strip().lower()
    if name in ("category", "challenge"):
        column = attrgetter(name)
    else:
        names = {n.lower(): n for p in prompts for n, _ in p.meta}
        if name not in names:
            have = ["category", "challenge", *sorted(set(names.values()))]
            raise EvalkitError(f"prompt_sample.by {by!r} is not a column of the prompts: use one of "
                               f"{', '.join(have)}")

        def column(prompt: Prompt) -> str:
            return next((value for n, value in prompt.meta if n.lower() == name), "")
    if not any(column(p) for p in prompts):
        raise EvalkitError(f"prompt_sample.by {by!r}: no prompt has a value in that column, so there is nothing to "
                           "stratify by: drop `by` for a plain random sample, or name a column the prompts fill")
    return column
