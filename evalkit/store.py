"""The run folder: atomic writes, the images table, and a lock against concurrent runs."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .errors import EvalkitError

IMAGE_COLUMNS = ["key", "prompt_id", "prompt", "seed", "scheduler", "steps", "nfe", "role", "seconds",
                 "path", "sha256", "width", "height", "flags"]
_TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, published files get the usual 0666 & ~umask


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_table(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, table.to_parquet(index=False))


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
        """Create the folder (or say why it can't be written) and clear temp files of a killed run."""
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=_TMP_PREFIX)
            probe.close()
        except OSError as exc:
            raise EvalkitError(
                f"output folder {self.path} is not writable ({exc.strerror}): pass --out with a folder you can write"
            ) from None
        for folder in (self.path, self.images_dir):
            for leftover in folder.glob(_TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive flock: the OS releases it when the holder dies, so a killed run never blocks a rerun."""
        handle = open(self.path / ".lock", "a+")
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

    def append_images(self, rows: list[dict]) -> None:
        """Add rows of images whose PNGs are already written: one append + fsync to the journal."""
        if not rows:
            return
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        fd = os.open(self.images_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def compact_images(self) -> None:
        """Fold the journal into images.parquet (atomic), one row per key, then drop the journal."""
        if self.images_journal.exists():
            atomic_write_table(self.images_table, self._image_rows())
            self.images_journal.unlink()

    def _image_rows(self) -> pd.DataFrame:
        frames = [pd.read_parquet(self.images_table)] if self.images_table.exists() else []
        if self.images_journal.exists():
            rows = []
            for line in self.images_journal.read_bytes().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line torn by a kill mid-append: its images are rendered again
                    continue
            frames.append(pd.DataFrame(rows, columns=IMAGE_COLUMNS))
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=IMAGE_COLUMNS)
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)[IMAGE_COLUMNS]

    def write_jobs(self, keys: list[str]) -> None:
        atomic_write_table(self.jobs_table, pd.DataFrame({"key": keys}))

    def current_images(self) -> pd.DataFrame:
        """The rendered rows of the current sweep (and its references), in plan order.

        images.parquet indexes every image ever rendered in the folder; jobs.parquet says which of them
        the sweep in config.toml is made of, so readers need no model to tell them apart.
        """
        if not self.jobs_table.is_file():
            raise EvalkitError(f"{self.path} has no jobs.parquet: run `evalkit render {self.path}` first")
        keys = pd.read_parquet(self.jobs_table)
        return keys.merge(self.read_images(), on="key", how="inner")[IMAGE_COLUMNS]
