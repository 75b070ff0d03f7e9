"""Prompt sources on disk, read as records: the user's own .txt/.csv/.tsv/.jsonl files and the published suites
(PartiPrompts, DrawBench, GenEval, HPDv2's benchmark prompts, T2I-CompBench), each recognised by its columns or
shape, or named by `prompt_format`.

A reader returns every row as published (its text, where it was read, its row index within its file, the suite's
own id and labels where it has them, every other column as metadata); ids, repeats and sampling are decided
later, by sweep/prompts.py and sweep/sample.py. Every problem is one EvalkitError naming the source and the fix.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import EvalkitError

FILE_EXTENSIONS = (".txt", ".csv", ".tsv", ".jsonl", ".json")
GLOB_CHARS = re.compile(r"[*?\[]")
# Columns that make a table one of the published suites (header names match case-insensitively). Each maps an
# evalkit role to the suite's column; the roles are then required.
SUITE_COLUMNS = {
    "partiprompts": {"prompt": "prompt", "category": "category", "challenge": "challenge"},
    "drawbench": {"prompt": "prompts", "category": "category"},
    "geneval": {"prompt": "prompt", "category": "tag"},
}
OPTIONAL_ROLES = ("id", "category", "challenge")  # picked up by name where a table has them
# HPSv2's benchmark: one JSON list of prompts per style (hpsv2.utils.hps_prompt_files); the image of prompt i of
# a style is <style>/{i:05d}.jpg, so that is the prompt's id here
HPD_STYLES = ("anime", "concept-art", "paintings", "photo")
# T2I-CompBench's file names: <category>[_<split>], the split train/val/test with an optional qualifier
# (color_val_seen, complex_train_action)
T2I_SPLIT = re.compile(r"(?P<category>.+?)_(?P<split>(?:train|val|test)(?:_.+)?)")


@dataclass(frozen=True)
class Record:
    """One prompt row as its source holds it."""

    text: str
    where: str  # for messages and the run folder's record: "line 14", "anime.json [17]"
    row: int  # 0-based index of the row in its file (or dataset split), as published
    id: str = ""  # the suite's own id; "" = derive one from the text
    category: str = ""
    challenge: str = ""
    meta: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Records:
    format: str  # the format the source was read as (never "auto")
    files: tuple[str, ...]  # the files read, relative to the source where it is a folder
    records: list[Record]


def read_source(source: str | Path, prompt_format: str = "auto", columns: dict[str, str] | None = None) -> Records:
    """Every row of a prompt file, folder or glob, in source order (files sorted by name)."""
    path = Path(source)
    columns = columns or {}
    if GLOB_CHARS.search(path.name):
        files = _glob(path)  # exactly the files it matches
        return _read_files(files, _folder_format(files, path, prompt_format), path.parent, folder=False)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in (".txt", ".json"))
        return _read_files(files, _folder_format(files, path, prompt_format), path, folder=True)
    if not path.is_file():
        raise EvalkitError(f"prompt file {path} not found: pass --prompts with an existing .txt/.csv/.tsv/.jsonl "
                           "file (or .json, a folder of suite files, hf:NAME[:SPLIT])")
    fmt = _file_format(path, prompt_format)
    if fmt in ("hpdv2", "t2i-compbench"):
        return _read_files([path], fmt, path.parent, folder=False)
    text = read_text(path)
    auto = prompt_format == "auto"  # recognise a published suite by its columns
    if fmt == "txt":
        return Records(fmt, (path.name,), _lines(text, comments=True))
    if fmt in ("jsonl", "geneval"):
        return _jsonl(text, path, "auto" if auto else fmt, columns)
    return _table(text, path, fmt, "auto" if auto else fmt, columns)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalkitError(f"prompt file {path} is not valid UTF-8 (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise EvalkitError(f"can't read prompt file {path} ({exc.strerror}): check its permissions "
                           f"(e.g. chmod a+r {path}) or pass another --prompts file") from None


# -- which format -----------------------------------------------------------------------------------------------
def _file_format(path: Path, prompt_format: str) -> str:
    ext = path.suffix.lower()
    if prompt_format != "auto":
        return prompt_format
    if ext not in FILE_EXTENSIONS:
        raise EvalkitError(f"unsupported prompt file extension {ext or '(none)'!r} for {path}: use a .txt, .csv, "
                           ".tsv, .jsonl or .json file (or set prompt_format)")
    return {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "hpdv2"}[ext]


def _folder_format(files: list[Path], where: Path, prompt_format: str) -> str:
    """A folder (or glob) holds one suite's files: HPDv2's .json lists or T2I-CompBench's .txt files."""
    if prompt_format not in ("auto", "hpdv2", "t2i-compbench"):
        raise EvalkitError(f"prompt_format {prompt_format!r} reads one file, but {where} names several: pass the "
                           'file, or use prompt_format "hpdv2" (.json files) or "t2i-compbench" (.txt files)')
    kinds = {f.suffix.lower() for f in files}
    if prompt_format == "auto":
        if kinds == {".json"}:
            return "hpdv2"
        if kinds == {".txt"}:
            return "t2i-compbench"
        if not files:
            raise EvalkitError(f"{where} holds no .txt or .json prompt files: point prompts at a folder of "
                               "T2I-CompBench .txt files or HPDv2 benchmark .json files, or at one prompt file")
        other = next((f for f in files if f.suffix.lower() not in (".txt", ".json")), None)
        if other is not None:
            raise EvalkitError(f"{where} matches {other.name}, neither a .txt nor a .json prompt file: narrow the "
                               "pattern to the suite's files, e.g. DIR/*_val.txt")
        raise EvalkitError(f"{where} holds both .txt and .json files: set prompt_format = \"t2i-compbench\" "
                           "(.txt) or \"hpdv2\" (.json), or point prompts at a glob such as DIR/*_val.txt")
    wanted = ".json" if prompt_format == "hpdv2" else ".txt"
    if not any(f.suffix.lower() == wanted for f in files):
        raise EvalkitError(f"{where} holds no {wanted} files for prompt_format {prompt_format!r}: point prompts at "
                           f"the folder holding the suite's {wanted} files")
    return prompt_format


def _glob(pattern: Path) -> list[Path]:
    if not pattern.parent.is_dir():
        raise EvalkitError(f"prompt folder {pattern.parent} not found (prompts {pattern}): pass an existing folder "
                           "with a pattern for its files, e.g. T2I-CompBench/examples/dataset/*_val.txt")
    files = sorted(p for p in pattern.parent.glob(pattern.name) if p.is_file())
    if not files:
        raise EvalkitError(f"no file matches {pattern}: check the pattern (e.g. *_val.txt) against the folder's "
                           "files")
    return files


# -- folders: HPDv2 and T2I-CompBench ----------------------------------------------------------------------------
def _read_files(files: list[Path], fmt: str, root: Path, folder: bool) -> Records:
    wanted = ".json" if fmt == "hpdv2" else ".txt"
    files = [f for f in files if f.suffix.lower() == wanted or not folder]
    if fmt == "hpdv2" and folder:
        styles = [f for f in files if f.stem in HPD_STYLES]
        if len(styles) == len(HPD_STYLES):  # the benchmark's folder also holds drawbench.json: not one of its styles
            files = styles
    records: list[Record] = []
    for file in files:
        records += _hpd_style(file) if fmt == "hpdv2" else _t2i_file(file)
    return Records(fmt, tuple(_relative(f, root) for f in files), records)


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def _hpd_style(file: Path) -> list[Record]:
    """An HPDv2 benchmark file: a JSON list of prompt strings; its stem is the style."""
    try:
        items = json.loads(read_text(file))
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{file} is not valid JSON ({exc.msg}, line {exc.lineno}): an HPDv2 benchmark file is a "
                           'JSON list of prompts, e.g. ["a cat", "a dog"]') from None
    if not isinstance(items, list):
        raise EvalkitError(f"{file} holds a JSON {type(items).__name__}, not a list of prompts: an HPDv2 benchmark "
                           'file is a JSON list of prompt strings, e.g. ["a cat", "a dog"]')
    records = []
    for index, item in enumerate(items):
        text = item.strip() if isinstance(item, str) else ""
        if not text:
            raise EvalkitError(f"{file} item [{index}] is {json.dumps(item)[:40]}, not a prompt: an HPDv2 benchmark "
                               "file lists non-empty prompt strings")
        records.append(Record(text, f"{file.name} [{index}]", index, id=f"{file.stem}-{index:05d}",
                              category=file.stem))
    return records


def _t2i_file(file: Path) -> list[Record]:
    """A T2I-CompBench file: one prompt per line; the name is the category, a _train/_val/_test suffix its split."""
    match = T2I_SPLIT.fullmatch(file.stem)
    category, split = (match["category"], match["split"]) if match else (file.stem, "")
    meta = (("split", split),) if split else ()
    return [Record(r.text, f"{file.name} {r.where}", r.row, category=category, meta=meta)
            for r in _lines(read_text(file), comments=False)]


def _lines(text: str, comments: bool) -> list[Record]:
    """One prompt per line; blank lines (and, in a plain .txt, `#` comment lines) skipped."""
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not (comments and stripped.startswith("#")):
            records.append(Record(stripped, f"line {lineno}", len(records)))
    return records


# -- tables: csv/tsv, jsonl (and hf: datasets, through sweep/hub.py) ----------------------------------------------
def cell(value: Any) -> str:
    """A value as prompt metadata: strings stripped, nested values as compact JSON, null as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def table_roles(fields: Iterable[str], kind: str, prompt_format: str, columns: dict[str, str],
                what: str) -> tuple[str, dict[str, str], set[str]]:
    """(format, {role: column as spelled in the source}, the columns every row must hold) for a table with these
    column names.

    `kind` is the generic format (csv, tsv, jsonl, hf); `columns` (prompt_columns) names roles' columns
    explicitly; otherwise the published suites are recognised by their columns, and `prompt` (plus optional `id`,
    `category`, `challenge`) is what a table of the user's own holds."""
    fields = [f for f in fields if f is not None]
    spelled = {}
    for f in fields:
        spelled.setdefault(f.strip().lower(), f)
    found = ", ".join(fields) or "none"
    fmt = prompt_format if prompt_format != "auto" else (kind if columns else _recognise(spelled, kind))
    roles: dict[str, str] = {}
    for role, column in SUITE_COLUMNS.get(fmt, {}).items():  # a suite's own columns are required
        if column not in spelled and role not in columns:
            raise EvalkitError(f"{what} is not in {fmt} format: it has no {column!r} column (columns: {found}): "
                               "check the file, or set prompt_format to the format it is in")
        roles[role] = spelled.get(column, "")
    for role, column in columns.items():
        if column.lower() not in spelled:
            raise EvalkitError(f"{what} has no column {column!r} for prompt_columns.{role} (columns: {found}): name "
                               "one of its columns")
        roles[role] = spelled[column.lower()]
    if "prompt" not in roles:
        if "prompt" not in spelled:
            raise EvalkitError(f"{what} has no 'prompt' column (columns: {found}): add a header row with a 'prompt' "
                               "column (and optionally 'id', 'category'), or name the column with prompt_columns = "
                               '{ prompt = "COLUMN" }')
        roles["prompt"] = spelled["prompt"]
    required = set(roles.values())
    for role in OPTIONAL_ROLES:
        if role not in roles and role in spelled and spelled[role] not in required:
            roles[role] = spelled[role]
    return fmt, roles, required


def _recognise(spelled: dict[str, str], kind: str) -> str:
    names = set(spelled)
    if {"prompt", "category", "challenge"} <= names:
        return "partiprompts"
    if {"prompts", "category"} <= names and "prompt" not in names:
        return "drawbench"
    if {"prompt", "tag"} <= names and kind in ("jsonl", "hf"):
        return "geneval"
    return kind


def record_of(row: dict[str, Any], roles: dict[str, str], where: str, index: int, source: str,
              order: Iterable[str]) -> Record:
    """A table row as a Record: the roles' cells, every other column (in `order`) as metadata."""
    value = row.get(roles["prompt"])
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise EvalkitError(f"empty prompt text in {source} at {where}: fill in the {roles['prompt']!r} column "
                           "or delete the row")
    used = set(roles.values())
    meta = tuple((name, cell(row[name])) for name in order if name not in used and name in row)
    return Record(text, where, index, id=cell(row.get(roles["id"])) if "id" in roles else "",
                  category=cell(row.get(roles["category"])) if "category" in roles else "",
                  challenge=cell(row.get(roles["challenge"])) if "challenge" in roles else "", meta=meta)


def _table(text: str, path: Path, fmt: str, prompt_format: str, columns: dict[str, str]) -> Records:
    """A csv/tsv file with a header row. `fmt`: how to split it (csv, tsv or a suite's published delimiter);
    `prompt_format`: auto, or the format it must be in."""
    tab = fmt == "tsv" or (fmt == "partiprompts" and path.suffix.lower() != ".csv") or \
        (fmt == "drawbench" and path.suffix.lower() == ".tsv")
    kind = "tsv" if tab else "csv"
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        return Records(fmt, (path.name,), [])
    reader = csv.DictReader(lines, delimiter="\t" if tab else ",")
    fields = [f for f in (reader.fieldnames or []) if f is not None]
    fmt, roles, _ = table_roles(fields, kind, prompt_format, columns, f"{kind} prompt file {path}")
    if fmt == "partiprompts" and tab:  # published as raw TSV: a quote is text, even at the start of a prompt
        reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    records = []
    for row in reader:
        if not any(cell(v) for k, v in row.items() if k is not None):
            continue  # a blank line
        records.append(record_of(row, roles, f"line {reader.line_num}", len(records), str(path), fields))
    return Records(fmt, (path.name,), records)


def _jsonl(text: str, path: Path, prompt_format: str, columns: dict[str, str]) -> Records:
    objects = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"line {lineno} of {path} is not valid JSON ({exc.msg}): write one JSON object per "
                               'line, e.g. {"prompt": "a cat"}') from None
        if not isinstance(obj, dict):
            raise EvalkitError(f"line {lineno} of {path} has no 'prompt' field: write one JSON object per line, "
                               'e.g. {"prompt": "a cat"}')
        objects.append((lineno, obj))
    if not objects:
        return Records(prompt_format if prompt_format != "auto" else "jsonl", (path.name,), [])
    what = f"jsonl prompt file {path} (line {objects[0][0]})"
    try:  # the first line's fields name the columns
        fmt, roles, required = table_roles(list(objects[0][1]), "jsonl", prompt_format, columns, what)
    except EvalkitError as exc:
        if "no 'prompt' column" in str(exc):  # the message a jsonl file has always given
            raise EvalkitError(f"line {objects[0][0]} of {path} has no 'prompt' field: write one JSON object per "
                               'line, e.g. {"prompt": "a cat"} (or name the field with prompt_columns)') from None
        raise
    records = []
    for lineno, obj in objects:
        missing = sorted(required - set(obj), key=lambda c: c != roles["prompt"])
        if missing:
            raise EvalkitError(f"line {lineno} of {path} has no {missing[0]!r} field (line {objects[0][0]} has it): "
                               'give every line the same fields, e.g. {"prompt": "a cat"}')
        records.append(record_of(obj, roles, f"line {lineno}", len(records), str(path), list(obj)))
    return Records(fmt, (path.name,), records)
