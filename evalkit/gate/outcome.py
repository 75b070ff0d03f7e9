"""One judged rule instance, with what it judged as fields (kind, metric, scheduler, steps): outputs group and
summarise outcomes by them, never by parsing the instance's printed name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One expanded rule instance, judged."""

    kind: str  # the rule's kind: regression, min_steps, band, broken_images
    scheduler: str  # a swept scheduler, or "references" (broken_images)
    passed: bool
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci: tuple[float, float] | None
    message: str  # why it passed or failed, one line
    metric: str | None = None  # regression and band rules
    steps: int | None = None  # regression and band rules: the column's step count
    category: str | None = None  # regression and min_steps rules that name a prompt category
    compared: bool = True  # False: the instance had nothing to judge (the gate refuses to compare nothing)
    repeat: int = 1  # the n-th instance on the same place (two rules expanding to it): JUnit names stay unique

    @property
    def place(self) -> str:
        """What the instance judged: `metric scheduler@steps`, or the scheduler alone."""
        column = self.scheduler if self.steps is None else f"{self.scheduler}@{self.steps}"
        column = f"{self.metric} {column}" if self.metric else column
        return f"{column} [{self.category}]" if self.category else column

    @property
    def name(self) -> str:
        name = f"{self.kind} {self.place}"
        return name if self.repeat == 1 else f"{name} ({self.repeat})"
