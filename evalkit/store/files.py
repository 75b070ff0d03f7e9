"""Writing and reading the run folder's files: atomic writes, and checked readers that turn a corrupt, foreign or
missing file into one EvalkitError naming the file and the fix."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import EvalkitError

TMP_PREFIX = ".tmp-"
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: mkstemp creates 0600 files, published files get the usual 0666 & ~umask


def write_failed(path: Path, exc: OSError) -> EvalkitError:
    """Disk full, read-only or vanished folder: one line; what was written before stays."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    fix = "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"make {path.parent} writable"
    return EvalkitError(f"cannot write {path} ({why}): {fix}, then rerun the same command "
                        "(everything written before is kept)")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        try:
            os.fchmod(fd, 0o666 & ~UMASK)
            write_all(fd, data)
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


def atomic_write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """JSON written atomically, its folder created first (caches live in folders made on demand)."""
    make_dirs(Path(path).parent)
    atomic_write(path, json.dumps(data, indent=indent, default=str).encode())


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


def read_cache(path: Path, kind: type = dict, valid: Any = None) -> Any:
    """A cache file, or an empty one when missing or corrupt (caches are rebuildable: entries are recomputed);
    in a dict cache, only entries that `valid` accepts are kept."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return kind()
    if not isinstance(data, kind):
        return kind()
    if kind is dict and valid is not None:
        return {k: v for k, v in data.items() if valid(v)}
    return data


def sha256_of(path: Path) -> str | None:
    """The file's sha256, or None when it can't be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def digest(text: str) -> str:
    """A short content hash for cache file and folder names."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_output_file(flag: str, path: Path, example: str, make_parents: bool = False) -> None:
    """An output file the user named (`--junit`, `--markdown`, `compare --out`), checked before any work: bad
    paths are input errors (exit 2), never a failed gate or a traceback. With `make_parents`, missing folders
    are fine (they are made when the file is written) as long as the nearest existing one is writable."""
    if path.is_dir():
        raise EvalkitError(f"{flag} {path} is a folder: pass a file path, e.g. {path / example}")
    folder = path.parent
    while make_parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise EvalkitError(f"{flag} {path}: folder {folder} {what}: create it or pass another path")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise EvalkitError(f"{flag} {path}: folder {folder} is not writable ({exc.strerror}): "
                           "pass a path in a writable folder") from None

