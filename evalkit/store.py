"""The run folder: atomic writes, the tables and their checks, a lock against concurrent runs, and
`ScoredRun`, the one reader of a scored run (report, gate, search, summary and selftest read through it).

Every file is read through one checked reader: a corrupt or foreign table, summary or journal line
becomes one EvalkitError naming the file and the fix, and an image is trusted only if its bytes still
hash to the sha256 its row recorded.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import SweepConfig, load_config
from .errors import EvalkitError

SWEEP, REFERENCE = "sweep", "reference"  # the images table's roles
IMAGE_COLUMNS = ["key", "prompt_id", "prompt", "seed", "scheduler", "steps", "nfe", "role", "seconds",
                 "path", "sha256", "width", "height", "flags"]
SCORE_COLUMNS = ["key", "metric", "value"]
SET_SCORE_COLUMNS = ["scheduler", "steps", "metric", "value", "ci_low", "ci_high", "n", "broken", "flags"]
UNIT_COLUMN = ["prompt_id", "seed", "scheduler", "steps"]  # a per-image value's place: unit x column
# image flags meaning "no picture": such an image is never scored, nor anything against it
BROKEN_FLAGS = ("nan", "blank")
BROKEN = "broken-images"  # set_scores flag: the column has images (or references) excluded as broken
RERENDER, RESCORE = "`evalkit render {dir}`", "`evalkit score {dir}`"
_TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, published files get the usual 0666 & ~umask


def is_broken(flags: Any) -> bool:
    """An image flagged non-finite or blank: excluded from scoring (never compared with anything)."""
    return any(flag in BROKEN_FLAGS for flag in str(flags or "").split(","))


def write_failed(path: Path, exc: OSError) -> EvalkitError:
    """Disk full, read-only or vanished folder: one line; what was written before stays."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    fix = "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"make {path.parent} writable"
    return EvalkitError(f"cannot write {path} ({why}): {fix}, then rerun the same command "
                        "(everything written before is kept)")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_failed(path, exc) from None
        raise


def atomic_write_table(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, table.to_parquet(index=False))


def make_dirs(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path / ".", exc) from None
    return path


def read_table(path: Path, columns: list[str], fix: str) -> pd.DataFrame:
    """A parquet table with (at least) `columns`; corrupt, foreign or unreadable -> one line with the fix."""
    try:
        table = pd.read_parquet(path)
    except FileNotFoundError:
        raise EvalkitError(f"{path} is missing: {fix}") from None
    except Exception as exc:  # pyarrow raises its own types for truncated, garbage or foreign files
        raise EvalkitError(f"{path} is corrupt or not a table ({type(exc).__name__}): {fix}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise EvalkitError(f"{path} is not an evalkit table (no column {', '.join(missing)}): {fix}")
    return table


def read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise EvalkitError(f"{path} is missing: {fix}") from None
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"{path} is corrupt ({type(exc).__name__}): {fix}") from None
    if not isinstance(data, dict):
        raise EvalkitError(f"{path} is not an evalkit summary (not a JSON object): {fix}")
    return data


def sha256_of(path: Path) -> str | None:
    """The file's sha256, or None when it can't be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class RunDir:
    """A run folder: config.toml, images/, images.parquet (+ its journal), jobs.parquet, later stages' tables."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.images_dir = self.path / "images"
        self.images_table = self.path / "images.parquet"
        # rows of finished batches, appended (one JSON line per image) and folded into images.parquet at
        # the end of a stage: saving a batch costs O(batch), not a rewrite of the whole table
        self.images_journal = self.path / "images.journal"
        self.jobs_table = self.path / "jobs.parquet"  # the current sweep's keys, in plan order
        self.config_file = self.path / "config.toml"

    def prepare(self) -> None:
        """Create images/ (or say why the folder can't be written) and clear temp files of a killed run.
        Call it holding `lock()`: the temp files of a live run belong to the lock's holder."""
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=_TMP_PREFIX)
            probe.close()
        except OSError as exc:
            raise self._not_writable(exc) from None
        for folder in (self.path, self.images_dir):
            for leftover in folder.glob(_TMP_PREFIX + "*"):
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
            handle = open(self.path / ".lock", "a+")
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
            fd = os.open(self.images_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~_UMASK)
            try:
                _write_all(fd, data)
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
            rows = [row for line in self.images_journal.read_bytes().splitlines() if (row := _journal_row(line))]
            frames.append(pd.DataFrame(rows, columns=IMAGE_COLUMNS))
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=IMAGE_COLUMNS)
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)[IMAGE_COLUMNS]

    def write_jobs(self, keys: list[str]) -> None:
        atomic_write_table(self.jobs_table, pd.DataFrame({"key": keys}))

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


def _journal_row(line: bytes) -> dict[str, Any] | None:
    """A journal line as a row, or None: a line torn by a kill mid-append, or one that is not an image row
    of this folder (its image is then rendered again)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or set(row) != set(IMAGE_COLUMNS) or not isinstance(row["key"], str) \
            or row["path"] != f"images/{row['key']}.png" or not isinstance(row["sha256"], str):
        return None
    return row


@dataclass
class ScoredRun:
    """A scored run folder, read and checked once: what the report, the gate, min-steps and the self-test use.

    `values` is the one join of per-image scores to their (prompt, seed, scheduler, steps) place; broken
    images (see `is_broken`) have no value (NaN), and set_scores counts them per column (`broken`)."""

    dir: Path
    config: SweepConfig
    images: pd.DataFrame  # the current sweep's rows (role SWEEP) and its references (REFERENCE), plan order
    values: pd.DataFrame  # per image: key, prompt_id, prompt, seed, scheduler, steps, role, metric, value
    set_scores: pd.DataFrame  # SET_SCORE_COLUMNS
    summary: dict[str, Any]

    FILES = ("config.toml", "images.parquet", "jobs.parquet", "scores.parquet", "set_scores.parquet", "summary.json")

    @classmethod
    def read(cls, path: str | os.PathLike) -> ScoredRun:
        folder = Path(path)
        for name in cls.FILES:
            if not (folder / name).is_file():
                raise EvalkitError(f"{folder} is not a scored run folder (no {name}): run `evalkit run` or "
                                   f"{RESCORE.format(dir=folder)} first")
        config = load_config(folder / "config.toml", out=str(folder))
        images = RunDir(folder).current_images()
        rescore = f"rescore with {RESCORE.format(dir=folder)}"
        scores = read_table(folder / "scores.parquet", SCORE_COLUMNS, rescore)[SCORE_COLUMNS]
        set_scores = read_table(folder / "set_scores.parquet", SET_SCORE_COLUMNS[:7], rescore)
        set_scores = set_scores.assign(broken=set_scores.get("broken", 0),
                                       flags=set_scores.get("flags", "")).fillna({"flags": "", "broken": 0})
        summary = read_json(folder / "summary.json", rescore)
        return cls(folder, config, images, join_values(scores, images), set_scores[SET_SCORE_COLUMNS], summary)

    @property
    def sweep(self) -> pd.DataFrame:
        return self.images[self.images.role == SWEEP]

    @property
    def references(self) -> pd.DataFrame:
        return self.images[self.images.role == REFERENCE]

    def sweep_values(self) -> pd.DataFrame:
        """Per-image values of the sweep, in the shape stats.py takes: prompt_id, seed, scheduler, steps,
        metric, value."""
        return self.values[self.values.role == SWEEP][[*UNIT_COLUMN, "metric", "value"]]

    def min_steps(self) -> dict[str, Any]:
        return self.summary.get("min_steps") or {}


def join_values(scores: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Per-image values joined to where they belong: the one place scores meet (prompt, seed, scheduler, steps)."""
    return scores.merge(images[["key", "prompt_id", "prompt", "seed", "scheduler", "steps", "role"]], on="key")
