"""The run folder's tables: their columns, which images count as broken, and the joins every reader shares."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..config import SweepConfig
from ..sweep.plan import REFERENCE, SWEEP, reference_scheduler
from .files import NUMBER, TEXT, WHOLE, or_empty

# Each table's columns and what they hold (files.read_table checks every value against these): a table with the
# right columns but the wrong types is refused in one line when it is read, never a traceback later.
IMAGE_SCHEMA = {"key": TEXT, "prompt_id": TEXT, "prompt": TEXT, "seed": WHOLE, "scheduler": TEXT, "steps": WHOLE,
                "nfe": WHOLE, "role": TEXT, "seconds": NUMBER, "path": TEXT, "sha256": TEXT, "width": WHOLE,
                "height": WHOLE, "flags": or_empty(TEXT)}
# the prompt's labels (sweep.prompts.Prompt) came later: a table or journal row without them reads as ""
IMAGE_OPTIONAL = {"category": or_empty(TEXT), "challenge": or_empty(TEXT)}
LABELS = ["prompt_id", "category", "challenge"]  # what a plan says of an image beyond its pixels: relabelled, never keyed
JOB_SCHEMA = {"key": TEXT}
SCORE_SCHEMA = {"key": TEXT, "metric": TEXT, "value": NUMBER}
# `broken` and `flags` came later: a table without them reads as 0 and no flags
SET_SCORE_SCHEMA = {"scheduler": TEXT, "steps": WHOLE, "metric": TEXT, "value": NUMBER, "ci_low": NUMBER,
                    "ci_high": NUMBER, "n": WHOLE}
SET_SCORE_OPTIONAL = {"broken": or_empty(WHOLE), "flags": or_empty(TEXT)}
# references.parquet: per reference image, the check image that certifies it and how far apart the two are
# (stages/certify.py); ssim and the errors are empty where nothing was compared
CERTIFICATION_SCHEMA = {"key": TEXT, "prompt_id": TEXT, "seed": WHOLE, "scheduler": TEXT,
                        "check_scheduler": or_empty(TEXT), "check_key": or_empty(TEXT), "ssim": or_empty(NUMBER),
                        "max_error": or_empty(NUMBER), "mean_error": or_empty(NUMBER),
                        "tiebreak_key": or_empty(TEXT), "status": TEXT}
# a reference's `status` there: its check agrees (or a tie-break sides with it); a tie-break sides with the check,
# which then stands in for it; no two of the three agree, or the check is broken; or it was not checked
# (certification off, a stochastic reference, the check solver's own reference, or a broken reference)
CERTIFIED, CORRECTED, UNCERTIFIED, UNCHECKED = "certified", "corrected", "uncertified", "unchecked"
IMAGE_COLUMNS = [*IMAGE_SCHEMA, *IMAGE_OPTIONAL]
CERTIFICATION_COLUMNS = list(CERTIFICATION_SCHEMA)
SCORE_COLUMNS = list(SCORE_SCHEMA)
SET_SCORE_COLUMNS = [*SET_SCORE_SCHEMA, *SET_SCORE_OPTIONAL]
UNIT_COLUMN = ["prompt_id", "seed", "scheduler", "steps"]  # a per-image value's place: unit x column
# image flags meaning "no picture": such an image is never scored, nor anything against it
BROKEN_FLAGS = ("nan", "blank")
BROKEN = "broken-images"  # set_scores flag: the column has images (or references) excluded as broken
NOT_CONVERGENT = "not-convergent"  # set_scores flag: a stochastic sampler's value on a convergence metric
SMALL_N = "small-n"  # set_scores flag: a set metric below the number of images its authors ask for


def is_broken(flags: Any) -> bool:
    """An image flagged non-finite or blank: excluded from scoring (never compared with anything)."""
    return any(flag in BROKEN_FLAGS for flag in str(flags or "").split(","))


def has_flag(flags: Any, flag: str) -> bool:
    return flag in str(flags or "").split(",")


def join_values(scores: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Per-image values joined to where they belong: the one place scores meet (prompt, seed, scheduler, steps)."""
    return scores.merge(images[["key", "prompt_id", "prompt", "seed", "scheduler", "steps", "role"]], on="key")


def sweep_values(values: pd.DataFrame) -> pd.DataFrame:
    """Per-image values of the sweep, in the shape stats takes: prompt_id, seed, scheduler, steps, metric, value."""
    return values[values.role == SWEEP][[*UNIT_COLUMN, "metric", "value"]]


def with_references(images: pd.DataFrame, config: SweepConfig, certification: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sweep rows with `reference_key/sha256/flags`: the same prompt+seed's high-step image (or, where
    `certification` says CORRECTED, the check image standing in for it: stages/certify.py);
    `excluded`: the image or its reference is broken (non-finite or blank), so it is scored against nothing; and
    `uncertified`: its reference is UNCERTIFIED, so no convergence metric is taken against it."""
    refs = images[images.role == REFERENCE][["prompt_id", "seed", "scheduler", "key", "sha256", "flags"]]
    if certification is not None:
        stand_in = dict(zip(certification.key[certification.status == CORRECTED],
                            certification.check_key[certification.status == CORRECTED]))
        rows = images.set_index("key")
        for column in ("sha256", "flags"):
            refs[column] = [rows.at[stand_in[k], column] if k in stand_in else v for k, v in zip(refs.key, refs[column])]
        refs["key"] = [stand_in.get(k, k) for k in refs.key]
    uncertified = set() if certification is None else set(certification.key[certification.status == UNCERTIFIED])
    refs = refs.rename(columns={"scheduler": "reference_scheduler", "key": "reference_key",
                                "sha256": "reference_sha256", "flags": "reference_flags"})
    sweep = images[images.role == SWEEP].copy()
    sweep["reference_scheduler"] = [reference_scheduler(config, s) for s in sweep.scheduler]
    pairs = sweep.merge(refs, on=["prompt_id", "seed", "reference_scheduler"], how="left")
    pairs["excluded"] = [is_broken(a) or is_broken(b) for a, b in zip(pairs["flags"], pairs["reference_flags"])]
    pairs["uncertified"] = pairs["reference_key"].isin(uncertified)
    return pairs


def broken_images(images: pd.DataFrame) -> dict[str, int]:
    """Non-finite or blank images of the run per column label (`scheduler@steps`), only where there are some."""
    bad = images[[is_broken(f) for f in images["flags"]]]
    return {f"{s}@{int(n)}" + ("" if role == SWEEP else f" ({role})"): int(k)
            for (s, n, role), k in bad.groupby(["scheduler", "steps", "role"]).size().items()}
