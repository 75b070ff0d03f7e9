"""The run folder: the one owner of every path in it (caches included), its lock, and the images table.

Layout (README "What a run folder holds"): config.toml, prompts.parquet + prompt_sample.json (the prompts the run
renders and how they were chosen), images/<key>.png, images.parquet (+ images.journal while a render runs),
jobs.parquet, references.parquet, scores.parquet, set_scores.parquet, summary.json, report.html, and
cache/ (per-image scores, reference certification, set-metric features, set-metric intervals, ground-truth images of
the exact models). Every file is written atomically; an image is trusted only if its bytes still hash to the
sha256 its row recorded.

No path is ever read from a table: an image's file is `image_path(key)`, derived from its key (a hex content hash)
here and nowhere else. A row whose stored `path` is not `images/<key>.png` is not an image of this folder: the
render stage renders it again, readers refuse it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..config import OWN_REFERENCES, TOML_HEADER, SweepConfig, to_toml
from ..errors import EvalkitError
from ..sweep.plan import CHECK, REFERENCE, SWEEP
from .files import (TMP_PREFIX, UMASK, atomic_write, atomic_write_json, atomic_write_table, digest, fits, read_json,
                    read_table, sha256_of, write_all, write_failed)
from .tables import (CERTIFICATION_COLUMNS, CERTIFICATION_SCHEMA, IMAGE_COLUMNS, IMAGE_OPTIONAL, IMAGE_SCHEMA,
                     JOB_SCHEMA, LABELS,
                     SCORE_COLUMNS, SCORE_SCHEMA, SET_SCORE_COLUMNS, SET_SCORE_OPTIONAL, SET_SCORE_SCHEMA)

if TYPE_CHECKING:
    from ..sweep.sample import RunPrompts

RERENDER, RESCORE = "`evalkit render {dir}`", "`evalkit score {dir}`"
# An image key is a hex content hash (sweep.plan.job_key): images/<key>.png can only name a file in images/.
KEY = re.compile(r"[0-9a-f]{8,64}")
ROLES = (SWEEP, REFERENCE, CHECK)


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
        self.prompts_table = self.path / "prompts.parquet"  # the prompts the sweep renders, as chosen from its source
        self.prompt_sample_file = self.path / "prompt_sample.json"  # how they were chosen: source, n, strata
        self.scores_table = self.path / "scores.parquet"
        self.set_scores_table = self.path / "set_scores.parquet"
        self.references_table = self.path / "references.parquet"  # each reference's certification
        self.summary_file = self.path / "summary.json"
        self.report_file = self.path / "report.html"
        self.lock_file = self.path / ".lock"
        self.cache_dir = self.path / "cache"
        self.scores_cache_dir = self.cache_dir / "scores"  # per-image values, one file per metric + backbone
        self.features_root = self.cache_dir / "features"  # one folder per feature extractor
        self.intervals_dir = self.cache_dir / "intervals"  # set-metric values and intervals, one file per metric
        self.groundtruth_dir = self.cache_dir / "groundtruth"  # the exact models' ground-truth images (selftest)
        self.certify_cache = self.cache_dir / "certify.json"  # reference vs check agreement, by both images' content

    # -- paths --------------------------------------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        """The one place an image's file is named: from its key, never from a table's `path`."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValueError(f"not an image key: {key!r}")
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
        """Write the resolved config as config.toml, and return it (paths absolute).

        The file names its own folder as `out = "."` (a config file's relative paths are relative to the file):
        a run folder copied or moved elsewhere stays itself, so `evalkit run COPY/config.toml` resumes COPY and
        checks COPY's images, never the folder it was copied from. Prompts and fid_reference live outside the
        folder: they are recorded absolute (a relative fid_reference would otherwise be read back relative to
        the run folder)."""
        target = config.fid_reference
        target = target if target == OWN_REFERENCES else str(Path(target).resolve())
        resolved = dataclasses.replace(config, out=str(self.path.resolve()), prompts=config.prompts_source(),
                                       fid_reference=target)
        atomic_write(self.config_file, to_toml(dataclasses.replace(resolved, out=".")).encode())
        return resolved

    def write_prompts(self, prompts: RunPrompts) -> None:
        """The run's prompts (prompts.parquet: id, prompt, category, challenge, meta as JSON, row and place in the
        source) and how the sample chose them (prompt_sample.json: source, n, by, allocation, seed, per stratum
        available and chosen)."""
        atomic_write_table(self.prompts_table, pd.DataFrame(
            prompts.rows(), columns=["id", "prompt", "category", "challenge", "meta", "row", "where"]))
        atomic_write_json(self.prompt_sample_file, prompts.sample, indent=2)

    def write_jobs(self, keys: list[str]) -> None:
        atomic_write_table(self.jobs_table, pd.DataFrame({"key": keys}))

    def write_scores(self, scores: pd.DataFrame) -> None:
        atomic_write_table(self.scores_table, scores)

    def write_set_scores(self, table: pd.DataFrame) -> None:
        atomic_write_table(self.set_scores_table, table)

    def write_references(self, table: pd.DataFrame) -> None:
        atomic_write_table(self.references_table, table)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary, indent=2)

    def merge_summary(self, update: dict[str, Any]) -> None:
        """summary.json with `update`'s keys replaced (a min-steps search adds its answer to a scored run)."""
        summary = read_json(self.summary_file, f"delete it and rerun {RESCORE.format(dir=self.path)}") \
            if self.summary_file.is_file() else {}
        self.write_summary({**summary, **update})

    # -- the score stage's tables ----------------------------------------------------------------------------
    def read_scores(self) -> pd.DataFrame:
        """scores.parquet, typed (SCORE_SCHEMA), one value per image and metric."""
        return read_table(self.scores_table, SCORE_SCHEMA, self._rescore, unique=["key", "metric"])[SCORE_COLUMNS]

    def read_set_scores(self) -> pd.DataFrame:
        """set_scores.parquet, typed (SET_SCORE_SCHEMA), one row per column and metric; tables written before
        `broken` and `flags` existed read as 0 and no flags."""
        table = read_table(self.set_scores_table, SET_SCORE_SCHEMA, self._rescore, optional=SET_SCORE_OPTIONAL,
                           unique=["scheduler", "steps", "metric"])
        table = table.assign(broken=table.get("broken", 0), flags=table.get("flags", "")).fillna(
            {"flags": "", "broken": 0})
        return table.astype({"broken": int})[SET_SCORE_COLUMNS]

    def read_references(self) -> pd.DataFrame | None:
        """references.parquet, typed (CERTIFICATION_SCHEMA), one row per reference image; None for a run scored
        before references were certified."""
        if not self.references_table.is_file():
            return None
        return read_table(self.references_table, CERTIFICATION_SCHEMA, self._rescore, unique=["key"])[
            CERTIFICATION_COLUMNS]

    @property
    def _rescore(self) -> str:
        return f"rescore with {RESCORE.format(dir=self.path)}"

    # -- the images table -----------------------------------------------------------------------------------
    def read_images(self) -> pd.DataFrame:
        """Rows of this folder's images whose PNG is on disk: what the render stage (and the min-steps search) treat
        as rendered. A row without its file is dropped, and so is a row that is not an image row of this folder
        (`_own`: its `path` is not images/<key>.png, its key is not a content key, or its role is unknown),
        whatever its sha256 says: their images are rendered again."""
        table = self._image_rows()
        own = self._own(table)
        present = pd.Series([bool(ok) and self.image_path(k).is_file() for k, ok in zip(table["key"].tolist(), own)],
                            index=table.index, dtype=bool)
        return table[present].reset_index(drop=True)

    def altered(self, table: pd.DataFrame) -> pd.Series:
        """Per row: the PNG's bytes no longer hash to the row's sha256 (truncated, changed or replaced). The file
        is the key's (`image_path`), never the one the row's `path` names."""
        return pd.Series([sha256_of(self.image_path(k)) != sha
                          for k, sha in zip(table["key"].tolist(), table["sha256"].tolist())],
                         index=table.index, dtype=bool)

    def check_intact(self, table: pd.DataFrame) -> None:
        """Refuse to trust images (or scores cached for them) whose bytes changed since they were rendered."""
        bad = table[self.altered(table)]
        if len(bad):
            raise EvalkitError(f"{len(bad)} image(s) no longer match the sha256 in images.parquet (truncated, changed "
                               f"or replaced), e.g. {self.image_path(bad.key.iloc[0])}: re-render them with "
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

    def relabel_images(self, labels: pd.DataFrame) -> None:
        """Give rendered images the current plan's labels (`labels`: key + tables.LABELS): a prompt's id, category
        and challenge are not part of its images' keys, so a rerun after they change (a suite read with its
        categories, content ids for positional ones) keeps every image and rewrites only its row."""
        self.compact_images()
        if not self.images_table.exists():
            return
        table = self._image_rows()
        current = table[["key"]].merge(labels.drop_duplicates("key"), on="key", how="left")
        known = current.prompt_id.notna().to_numpy()
        changed = known & (current[LABELS].fillna("").to_numpy() != table[LABELS].fillna("").to_numpy()).any(axis=1)
        if changed.any():
            table.loc[changed, LABELS] = current.loc[changed, LABELS].to_numpy()
            atomic_write_table(self.images_table, table)

    def compact_images(self) -> None:
        """Fold the journal into images.parquet (atomic), one row per key, then drop the journal."""
        if self.images_journal.exists():
            atomic_write_table(self.images_table, self._image_rows())
            self.images_journal.unlink()

    def _image_rows(self) -> pd.DataFrame:
        """Every row of images.parquet (each value checked against IMAGE_SCHEMA) and of the journal, one per key."""
        fix = (f"delete it and rerun {RERENDER.format(dir=self.path)} (images whose rows are lost are rendered "
               "again)")
        frames = [_with_labels(read_table(self.images_table, IMAGE_SCHEMA, fix, optional=IMAGE_OPTIONAL))] \
            if self.images_table.exists() else []
        if self.images_journal.exists():
            rows = [row for line in self.images_journal.read_bytes().splitlines() if (row := self._journal_row(line))]
            frames.append(_with_labels(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=IMAGE_COLUMNS))
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=IMAGE_COLUMNS)
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)[IMAGE_COLUMNS]

    def _journal_row(self, line: bytes) -> dict[str, Any] | None:
        """A journal line as a row, or None: a line torn by a kill mid-append, or one that is not an image row
        of this folder (a value of the wrong type, or `_own` says no): its image is then rendered again."""
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not isinstance(row, dict) or not set(IMAGE_SCHEMA) <= set(row) <= set(IMAGE_COLUMNS) \
                or not all(fits(row.get(c, ""), kind) for c, kind in {**IMAGE_SCHEMA, **IMAGE_OPTIONAL}.items()) \
                or not self._is_own(row["key"], row["path"], row["role"]):
            return None
        return row

    def _is_own(self, key: str, path: str, role: str) -> bool:
        """An image row of this folder: a content key, the path derived from it, a known role."""
        return bool(KEY.fullmatch(key)) and path == self.image_row_path(key) and role in ROLES

    def _own(self, table: pd.DataFrame) -> pd.Series:
        # .tolist() first, here and above: iterating arrow-backed columns value by value is ~10x slower
        keys, paths, roles = (table[column].tolist() for column in ("key", "path", "role"))
        return pd.Series([self._is_own(k, p, r) for k, p, r in zip(keys, paths, roles)], index=table.index, dtype=bool)

    def current_images(self) -> pd.DataFrame:
        """The rendered rows of the current sweep (and its references), in plan order, each PNG verified
        against its sha256: what scoring and every reader of a scored run take.

        images.parquet indexes every image ever rendered in the folder; jobs.parquet says which of them
        the sweep in config.toml is made of, so readers need no model to tell them apart. Every job must have
        its own row and its PNG: an image missing, a row naming another file, or a PNG changed since it was
        rendered is one line naming it and the fix (the render stage renders such images again: it reads
        `read_images`, which drops them).
        """
        if not self.jobs_table.is_file():
            raise EvalkitError(f"{self.path} has no jobs.parquet: run `evalkit render {self.path}` first")
        fix = f"rerun {RERENDER.format(dir=self.path)} to rewrite it"
        keys = read_table(self.jobs_table, JOB_SCHEMA, fix, unique=["key"])
        foreign = [k for k in keys["key"] if not KEY.fullmatch(k)]
        if foreign:
            raise EvalkitError(f"{self.jobs_table}: column 'key' holds {foreign[0][:40]!r}, not an image key: {fix}")
        images = keys[["key"]].merge(self._image_rows(), on="key", how="left")[IMAGE_COLUMNS]
        rendered = images[images["sha256"].notna()]
        alien = rendered[~self._own(rendered)]
        redo = f"re-render with {RERENDER.format(dir=self.path)} (then rescore with {RESCORE.format(dir=self.path)})"
        if len(alien):
            row = alien.iloc[0]
            own = self.image_row_path(row.key)
            what = f"names {row.path!r}, not {own}" if row.path != own else \
                f"has role {row.role!r}, not one of {', '.join(ROLES)}"
            raise EvalkitError(f"{self.images_table}: the row of image {row.key} {what}: it is not an image of this "
                               f"folder ({len(alien)} such row(s) in the current sweep): {redo}")
        missing = [k for k, sha in zip(images["key"].tolist(), images["sha256"].tolist())
                   if not isinstance(sha, str) or not self.image_path(k).is_file()]
        if missing:
            raise EvalkitError(f"{len(missing)} image(s) of the current sweep are missing (no PNG, or no row in "
                               f"images.parquet), e.g. {self.image_path(missing[0])}: {redo}")
        self.check_intact(images)
        return images


def _with_labels(table: pd.DataFrame) -> pd.DataFrame:
    """An images table with every column, the labels a row written before them lacks read as ""."""
    for column in IMAGE_OPTIONAL:
        if column not in table.columns:
            table[column] = ""
        table[column] = table[column].fillna("").astype(str)
    return table[IMAGE_COLUMNS]
