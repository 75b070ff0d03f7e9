"""Writing and reading the run folder's files: atomic writes, and checked readers that turn a corrupt, foreign or
missing file into one EvalkitError naming the file and the fix."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


# What a value must be: the kinds of a table's columns (`read_table`'s schema) and of summary.json's fields. Each
# reads as the end of "... where <kind> is expected"; `or_empty(kind)` also takes null (JSON null, a missing value).
TEXT, WHOLE, NUMBER, BOOL = "text", "a whole number", "a number", "true or false"
EMPTY = " or null"


def or_empty(kind: str) -> str:
    return kind + EMPTY


def is_empty(value: Any) -> bool:
    """None, NaN, pd.NA: a missing value (parquet null, JSON null)."""
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def fits(value: Any, kind: str) -> bool:
    """Whether one value is of `kind` (a number is never a boolean, nor a boolean a number)."""
    if kind.endswith(EMPTY):
        return is_empty(value) or fits(value, kind[:-len(EMPTY)])
    if kind == TEXT:
        return isinstance(value, str)
    if isinstance(value, (bool, np.bool_)):
        return kind == BOOL
    if kind == NUMBER:
        return isinstance(value, (int, float, np.integer, np.floating))
    if kind == WHOLE:
        return isinstance(value, (int, np.integer)) or (
            isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer())
    return False


def held(value: Any) -> str:
    """What a value that does not fit is, for a one-line error: its kind and a short excerpt."""
    if is_empty(value):
        return "an empty value"
    if isinstance(value, (bool, np.bool_)):
        return f"a boolean ({str(bool(value)).lower()})"
    if isinstance(value, str):
        return f"text ({_excerpt(value)})"
    if isinstance(value, (int, np.integer)):
        return f"a whole number ({value})"
    if isinstance(value, (float, np.floating)):
        return f"a number ({value:g})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple, np.ndarray)):
        return f"a list ({_excerpt(list(value))})"
    if isinstance(value, bytes):
        return f"bytes ({_excerpt(value)})"
    return f"a {type(value).__name__}"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages: 2, not np.int64(2))."""
    return value.item() if isinstance(value, np.generic) else value


def _excerpt(value: Any, limit: int = 40) -> str:
    text = repr(_plain(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_table(path: Path, schema: Mapping[str, str], fix: str,
               optional: Mapping[str, str] | None = None, unique: Sequence[str] = ()) -> pd.DataFrame:
    """A parquet table with (at least) the columns of `schema`; corrupt, foreign or unreadable -> one line with
    the fix.

    With a schema of column -> kind (TEXT, WHOLE, NUMBER, `or_empty(...)`), every value is checked: a table with
    the right columns but the wrong types (steps as text, scores as strings) is refused here, in one line naming
    the file, the column, what it holds and the fix, instead of failing later in a merge or a sum. Checked
    columns come back as their kind: numbers as float64 (NaN for empty), whole numbers as int64 (float64 when
    empty values are allowed), text as is. `optional` columns are checked the same way when present. With
    `unique`, no two rows may share those columns' values (one value per image and metric, say): a repeated row
    would be counted twice by every reader."""
    try:
        table = pd.read_parquet(path)
    except FileNotFoundError:
        raise EvalkitError(f"{path} is missing: {fix}") from None
    except Exception as exc:  # pyarrow raises its own types for truncated, garbage or foreign files
        raise EvalkitError(f"{path} is corrupt or not a table ({type(exc).__name__}): {fix}") from None
    missing = [c for c in schema if c not in table.columns]
    if missing:
        raise EvalkitError(f"{path} is not an evalkit table (no column {', '.join(missing)}): {fix}")
    kinds = {**schema, **{c: k for c, k in (optional or {}).items() if c in table.columns}}
    twice = [c for c in kinds if list(table.columns).count(c) > 1]
    if twice:
        raise EvalkitError(f"{path} is not an evalkit table (column {twice[0]} appears twice): {fix}")
    for column, kind in kinds.items():
        table[column] = _column_as(path, column, table[column], kind, fix)
    repeated = table[table.duplicated(list(unique), keep=False)] if unique else table.iloc[:0]
    if len(repeated):
        first = ", ".join(f"{c} {_plain(v)!r}" for c, v in zip(unique, repeated.iloc[0][list(unique)]))
        raise EvalkitError(f"{path}: {len(repeated)} rows share their {', '.join(unique)} (e.g. {first}), where each "
                           f"must be one row: {fix}")
    return table


def _column_as(path: Path, column: str, values: pd.Series, kind: str, fix: str) -> pd.Series:
    """The column as `kind` holds it, or one line naming the first value that does not fit."""
    dtype = values.dtype
    integers = pd.api.types.is_integer_dtype(dtype)
    numeric = (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               and not pd.api.types.is_complex_dtype(dtype))
    base = kind.removesuffix(EMPTY)
    if numeric and base in (NUMBER, WHOLE):  # the common case, without a loop over the values
        empty = values.isna().to_numpy()
        if integers or base == NUMBER:  # (nullable integers may hold NA)
            ok = ~empty | (kind != WHOLE)
        else:
            floats = values.astype(float).to_numpy()
            ok = (np.isfinite(floats) & (floats == np.round(floats))) | (empty & (kind != WHOLE))
        bad = values[~ok]
    elif base == TEXT and isinstance(dtype, pd.StringDtype):  # every value a str or missing: no loop over them
        bad = values[values.isna()] if kind == TEXT else values.iloc[:0]
    else:
        bad = values[[not fits(v, kind) for v in values]]
    if len(bad):
        raise EvalkitError(f"{path}: column {column!r} holds {held(bad.iloc[0])} where {kind} is expected: {fix}")
    if base == TEXT:
        return values.astype(object) if isinstance(dtype, pd.CategoricalDtype) else values
    if kind == WHOLE:  # straight to int64: a seed near 2**63 must not pass through a float
        return values.astype("int64") if integers else pd.to_numeric(values).astype("int64")
    return pd.to_numeric(values).astype(float) if len(values) else values.astype(float)


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

