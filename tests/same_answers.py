"""Compare the answers of two run folders: `python tests/same_answers.py RUN_A RUN_B [--rtol R]` (exit 0 when equal).

What is compared: `images.parquet` without the measured `seconds`, `scores.parquet`, `set_scores.parquet`, and
`summary.json` without what a rerun changes by itself (the creation time, package versions, the device, render
timings, measured seconds per image, and the run folder's own path). Exactly by default; with `--rtol`, floats
may differ by that relative amount (everything else, every decision included, must be equal), and the largest
relative difference seen is printed. It is how a restructuring shows that it changed no answer; tests use it
to check that a sweep reproduces in a new folder.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLES = {"images.parquet": ["key"], "scores.parquet": ["key", "metric"],
          "set_scores.parquet": ["metric", "scheduler", "steps"]}
MEASURED = {"images.parquet": ["seconds"]}
SUMMARY_VOLATILE = ("created", "versions", "device", "render")


def table(folder: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(folder / name).drop(columns=MEASURED.get(name, []))
    return frame.sort_values(TABLES[name], ignore_index=True)


def summary(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "summary.json").read_text())
    for key in SUMMARY_VOLATILE:
        data.pop(key, None)
    data.get("config", {}).pop("out", None)
    for entry in (data.get("min_steps") or {}).get("schedulers", {}).values():
        entry.pop("seconds_per_image", None)
    return data


class Comparison:
    """Walks two runs' answers side by side, collecting where they differ and the largest float difference."""

    def __init__(self, rtol: float = 0.0):
        self.rtol, self.largest, self.found = rtol, 0.0, []

    def same(self, a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            if math.isnan(a) or math.isnan(b):
                return math.isnan(a) and math.isnan(b)
            gap = abs(a - b) / max(abs(a), abs(b), 1e-300)
            self.largest = max(self.largest, gap if a != b else 0.0)
            return gap <= self.rtol
        return a == b

    def tables(self, name: str, left: pd.DataFrame, right: pd.DataFrame) -> None:
        if list(left.columns) != list(right.columns) or len(left) != len(right):
            self.found.append(f"{name}: columns {list(left.columns)} vs {list(right.columns)}, "
                              f"{len(left)} vs {len(right)} rows")
            return
        for column in left.columns:
            for i, (a, b) in enumerate(zip(left[column].tolist(), right[column].tolist())):
                if not self.same(_plain(a), _plain(b)):
                    self.found.append(f"{name}: {column} row {i}: {a!r} vs {b!r}")

    def json(self, a: Any, b: Any, at: str = "summary.json") -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key in a and key in b:
                    self.json(a[key], b[key], f"{at}.{key}")
                else:
                    self.found.append(f"{at}.{key}: only in one run")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                self.json(x, y, f"{at}[{i}]")
        elif not self.same(a, b):
            self.found.append(f"{at}: {a!r} vs {b!r}")


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, (float, np.floating)) else value


def compare(a: Path, b: Path, rtol: float = 0.0) -> Comparison:
    result = Comparison(rtol)
    for name in TABLES:
        result.tables(name, table(a, name), table(b, name))
    result.json(summary(a), summary(b))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default: exact)")
    args = parser.parse_args()
    result = compare(args.run_a, args.run_b, args.rtol)
    for name in [*TABLES, "summary.json"]:
        verdict = "differs" if any(f.startswith(name) for f in result.found) else "identical" if not args.rtol \
            else f"equal within rtol {args.rtol:g}"
        print(f"{name:<20}{verdict}")
    print(f"largest relative difference of a float: {result.largest:.3g}")
    for line in result.found[:20]:
        print(line)
    return 1 if result.found else 0


if __name__ == "__main__":
    raise SystemExit(main())
