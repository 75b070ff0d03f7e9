"""The set_scores table: per (scheduler, steps, metric) the mean of per-image values with its paired bootstrap CI
over (prompt, seed) units, set metrics as scored, and the flags that say how to read a row."""
from __future__ import annotations

import pandas as pd

from ..config import SweepConfig
from ..metrics import METRICS
from ..metrics.base import CONVERGENCE
from ..store.tables import BROKEN, NOT_CONVERGENT, SET_SCORE_COLUMNS, SMALL_N, UNIT_COLUMN, join_values
from ..stats.bootstrap import bootstrap_means
from ..sweep.schedulers import SCHEDULERS
from .score import ScoreResult


def aggregate_scores(images: pd.DataFrame, config: SweepConfig, result: ScoreResult) -> pd.DataFrame:
    """Per-image metrics: means with paired-bootstrap CIs over (prompt, seed) units (references are their own
    column); set metrics as computed. `broken` counts the column's images left unscored as broken; `flags`
    marks values to read with care (see `flag_rows`)."""
    values = join_values(result.scores, images)
    frames = [bootstrap_means(values[[*UNIT_COLUMN, "metric", "value"]])] if not values.empty else []
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SET_SCORE_COLUMNS[:7])
    if len(result.broken):
        table = table.merge(result.broken, on=["scheduler", "steps", "metric"], how="left")
    table["broken"] = table.get("broken", pd.Series(0, index=table.index)).fillna(0).astype(int)
    sets = [frame.assign(metric=name) for name, frame in result.set_scores.items()]
    table = pd.concat([table, *sets], ignore_index=True) if sets else table
    table["broken"] = table["broken"].fillna(0).astype(int)
    table["flags"] = flag_rows(table, config)
    return table[SET_SCORE_COLUMNS]


def flag_rows(table: pd.DataFrame, config: SweepConfig) -> list[str]:
    """`not-convergent`: a stochastic sampler on a convergence metric; `small-n`: a set metric below its min n;
    `broken-images`: images of the column (or their references) were non-finite or blank, left unscored."""
    flags = []
    for row in table.itertuples():
        spec, scheduler = METRICS.get(row.metric), SCHEDULERS.get(row.scheduler)
        row_flags = []
        if scheduler.stochastic and spec.kind == CONVERGENCE:
            row_flags.append(NOT_CONVERGENT)
        if spec.min_n and row.n < spec.min_n:
            row_flags.append(SMALL_N)
        if row.broken:
            row_flags.append(BROKEN)
        flags.append(",".join(row_flags))
    return flags
