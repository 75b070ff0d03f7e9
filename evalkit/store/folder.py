"""The run folder: the one owner of every path in it (caches included), its lock, and the images table.

Layout (README "What a run folder holds"): config.toml, images/<key>.png, images.parquet (+ images.journal while a
render runs), jobs.parquet, scores.parquet, set_scores.parquet, summary.json, report.html, and cache/ (per-image
scores, set-metric features, set-metric intervals, ground-truth images of the exact models). Every file is
written atomically; an image is trusted only if its bytes still hash to the sha256 its row recorded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TOML_HEADER, SweepConfig, to_toml
from ..errors import EvalkitError
from .files import (TMP_PREFIX, UMASK, atomic_write, atomic_write_json, atomic_write_table, digest, read_json,
                    read_table, sha256_of, write_all, write_failed)
from .tables import IMAGE_COLUMNS

RERENDER, RESCORE = "`evalkit render {dir}`", "`evalkit score {dir}`"


class RunDir:
    """A run folder: every file's path, the lock, the images table and its journal."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_file = self.path / "config.toml"
        self.images_dir = self.path / "images"
        self.images_table = self.path / "images.parquet"
        # rows of finished batches, appended (one JSON line per image) and folded into images.parquet at
        # the end of a stage: saving a batch costs O(batch), not a rewrite of the whole table
        self.images_journal = self.path / "images.journal"
        self.jobs_table = self.path / "jobs.parquet"  # the current sweep's keys, in plan order
        self.scores_table = self.path / "scores.parquet"
        self.set_scores_table = self.path / "set_scores.parquet"
        self.summary_file = self.path / "summary.json"
        self.report_file = self.path / "report.html"
        self.lock_file = self.path / ".lock"
        self.cache_dir = self.path / "cache"
        self.scores_cache_dir = self.cache_dir / "scores"  # per-image values, one file per metric + backbone
        self.features_root = self.cache_dir / "features"  # one folder per feature extractor
        self.intervals_dir = self.cache_dir / "intervals"  # set-metric values and intervals, one file per metric
        self.groundtruth_dir = self.cache_dir / "groundtruth"  # the exact models' ground-truth images (selftest)

    # -- paths --------------------------------------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        return self.images_dir / f"{key}.png"

    def image_row_path(self, key: str) -> str:
        """An image's `path` as its row records it: relative to the run folder."""
        return f"images/{key}.png"

    def score_cache(self, metric: str, identity: str) -> Path:
        """Per-image values of `metric` under one backbone + preprocessing (`identity`), by image content."""
        return self.scores_cache_dir / f"{metric}-{digest(identity)}.json"

    def score_notes(self, metric: str, identity: str) -> Path:
        """Prompts the scorer had to truncate, kept beside `score_cache`'s values so reruns still warn."""
        return self.score_cache(metric, identity).with_suffix(".truncated.json")

    def features_dir(self, feature_id: str) -> Path:
        """Per-image features of one feature extractor (MetricSpec.feature_id), one .npy per image content hash."""
        return self.features_root / digest(feature_id)

    def intervals_cache(self, metric: str, identity: str) -> Path:
        """Set-metric values and intervals per column, keyed by their inputs."""
        return self.intervals_dir / f"{metric}-{digest(identity)}.json"

    # -- the folder -----------------------------------------------------------------------------------------
    def check_reusable(self) -> None:
        """Refuse to write a run into a folder that holds something else (its config.toml, report.html...)."""
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return
        if any(p.exists() for p in (self.lock_file, self.images_table, self.images_journal)) or (
                self.config_file.is_file() and self.config_file.read_text(errors="replace").startswith(TOML_HEADER)):
            return
        raise EvalkitError(f"--out {self.path} is a folder with other files, not an evalkit run folder: "
                           "pass --out with a new or empty folder (or an earlier run's folder)")

    def prepare(self) -> None:
        """Create images/ (or say why the folder can't be written) and clear temp files of a killed run.
        Call it holding `lock()`: the temp files of a live run belong to the lock's holder."""
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=TMP_PREFIX)
            probe.close()
        except OSError as exc:
            raise self._not_writable(exc) from None
        for folder in (self.path, self.images_dir):
            for leftover in folder.glob(TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)

    def _not_writable(self, exc: OSError) -> EvalkitError:
        return EvalkitError(f"output folder {self.path} is not writable ({exc.strerror}): pass --out with a folder "
                            "you can write")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive flock, taken before anything in the folder is touched (only the folder itself and
        its .lock are created first). The OS releases it when the holder dies: a killed run never blocks."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_file, "a+")
        except OSError as exc:
            raise self._not_writable(exc) from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise EvalkitError(
                    f"run folder {self.path} is in use by another evalkit process (pid {holder}): "
                    "wait for it to finish or pass a different --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    # -- what the stages write ------------------------------------------------------------------------------
    def save_config(self, config: SweepConfig) -> SweepConfig:
        """Write the resolved config (absolute paths) as config.toml, and return it."""
        resolved = dataclasses.replace(config, out=str(self.path.resolve()),
                                       prompts=str(config.prompts_path().resolve()))
        atomic_write(self.config_file, to_toml(resolved).encode())
        return resolved

    def write_jobs(self, keys: list[str]) -> None:
        atomic_write_table(self.jobs_table, pd.DataFrame({"key": keys}))

    def write_scores(self, scores: pd.DataFrame) -> None:
        atomic_write_table(self.scores_table, scores)

    def write_set_scores(self, table: pd.DataFrame) -> None:
        atomic_write_table(self.set_scores_table, table)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary, indent=2)

    def merge_summary(self, update: dict[str, Any]) -> None:
        """summary.json with `update`'s keys replaced (a min-steps search adds its answer to a scored run)."""
        summary = read_json(self.summary_file, f"delete it and rerun {RESCORE.format(dir=self.path)}") \
            if self.summary_file.is_file() else {}
        self.write_summary({**summary, **update})

    # -- the images table -----------------------------------------------------------------------------------
    def read_images(self) -> pd.DataFrame:
        """Rows of images whose PNG is on disk (a row without its file is dropped and re-rendered)."""
        table = self._image_rows()
        present = pd.Series([(self.path / p).is_file() for p in table["path"]], index=table.index, dtype=bool)
        return table[present].reset_index(drop=True)

    def altered(self, table: pd.DataFrame) -> pd.Series:
        """Per row: the PNG's bytes no longer hash to the row's sha256 (truncated, changed or replaced)."""
        return pd.Series([sha256_of(self.path / p) != sha for p, sha in zip(table["path"], table["sha256"])],
                         index=table.index, dtype=bool)

    def check_intact(self, table: pd.DataFrame) -> None:
        """Refuse to trust images (or scores cached for them) whose bytes changed since they were rendered."""
        bad = table[self.altered(table)]
        if len(bad):
            raise EvalkitError(f"{len(bad)} image(s) no longer match the sha256 in images.parquet (truncated, changed "
                               f"or replaced), e.g. {self.path / bad.path.iloc[0]}: re-render them with "
                               f"{RERENDER.format(dir=self.path)} (then rescore)")

    def append_images(self, rows: list[dict]) -> None:
        """Add rows of images whose PNGs are already written: one append + fsync to the journal."""
        if not rows:
            return
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        try:
            fd = os.open(self.images_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~UMASK)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_failed(self.images_journal, exc) from None

    def compact_images(self) -> None:
        """Fold the journal into images.parquet (atomic), one row per key, then drop the journal."""
        if self.images_journal.exists():
            atomic_write_table(self.images_table, self._image_rows())
            self.images_journal.unlink()

    def _image_rows(self) -> pd.DataFrame:
        fix = (f"delete it and rerun {RERENDER.format(dir=self.path)} (images whose rows are lost are rendered "
               "again)")
        frames = [read_table(self.images_table, IMAGE_COLUMNS, fix)[IMAGE_COLUMNS]] \
            if self.images_table.exists() else []
        if self.images_journal.exists():
            rows = [row for line in self.images_journal.read_bytes().splitlines() if (row := self._journal_row(line))]
            frames.append(pd.DataFrame(rows, columns=IMAGE_COLUMNS))
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=IMAGE_COLUMNS)
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)[IMAGE_COLUMNS]

    def _journal_row(self, line: bytes) -> dict[str, Any] | None:
        """A journal line as a row, or None: a line torn by a kill mid-append, or one that is not an image row
        of this folder (its image is then rendered again)."""
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not isinstance(row, dict) or set(row) != set(IMAGE_COLUMNS) or not isinstance(row["key"], str) \
                or row["path"] != self.image_row_path(row["key"]) or not isinstance(row["sha256"], str):
            return None
        return row

    def current_images(self) -> pd.DataFrame:
        """The rendered rows of the current sweep (and its references), in plan order, each PNG verified
        against its sha256.

        images.parquet indexes every image ever rendered in the folder; jobs.parquet says which of them
        the sweep in config.toml is made of, so readers need no model to tell them apart.
        """
        if not self.jobs_table.is_file():
            raise EvalkitError(f"{self.path} has no jobs.parquet: run `evalkit render {self.path}` first")
        keys = read_table(self.jobs_table, ["key"], f"rerun {RERENDER.format(dir=self.path)} to rewrite it")
        images = keys[["key"]].merge(self.read_images(), on="key", how="inner")[IMAGE_COLUMNS]
        self.check_intact(images)
        return images
