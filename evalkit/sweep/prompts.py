"""Load prompt lists from .txt, .csv, .tsv or .jsonl files.

Every problem with a prompt file raises :class:`evalkit.errors.EvalkitError`
with a one-line message that names the problem and how to fix it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvalkitError

SUPPORTED_EXTENSIONS = (".txt", ".csv", ".tsv", ".jsonl")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str = ""  # the suite's category of the prompt ("" where the file has none)
    challenge: str = ""  # PartiPrompts' challenge level ("" elsewhere)
    meta: tuple[tuple[str, str], ...] = ()  # the row's other columns, (name, value), kept as prompt metadata


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read prompts from ``path``; the format is chosen by the file extension.

    - ``.txt``: one prompt per line; blank lines and ``#`` lines are skipped.
    - ``.csv`` / ``.tsv``: a header row with a ``prompt`` column, optional ``id``.
    - ``.jsonl``: one JSON object per line with ``prompt``, optional ``id``.

    Prompts without an id get ``p{index:03d}`` (0-based, in file order).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise EvalkitError(
            f"prompt file {path} not found: pass --prompts with an existing "
            ".txt/.csv/.tsv/.jsonl file"
        )
    if ext not in SUPPORTED_EXTENSIONS:
        raise EvalkitError(
            f"unsupported prompt file extension {ext or '(none)'!r} for {path}: "
            "use a .txt, .csv, .tsv or .jsonl file"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalkitError(
            f"prompt file {path} is not valid UTF-8 (byte {exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        raise EvalkitError(
            f"can't read prompt file {path} ({exc.strerror}): check its permissions "
            f"(e.g. chmod a+r {path}) or pass another --prompts file"
        ) from None

    if ext == ".txt":
        rows = _read_txt(text)
    elif ext in (".csv", ".tsv"):
        rows = _read_table(text, path, delimiter="\t" if ext == ".tsv" else ",")
    else:
        rows = _read_jsonl(text, path)

    if not rows:
        raise EvalkitError(f"empty prompt file {path}: add one prompt per line")
    return _prompts_of(rows, path)


def _prompts_of(rows: list[Row], path: Path) -> list[Prompt]:
    """Prompts with their ids (given, else positional), each id and each text once."""
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    seen_text: dict[str, int] = {}
    for index, (given_id, prompt_text, where) in enumerate(rows):
        pid = given_id if given_id else f"p{index:03d}"
        if pid in seen:
            raise EvalkitError(
                f"duplicate prompt id {pid!r} in {path} ({where}, first seen at "
                f"{rows[seen[pid]][2]}): give every prompt a unique id"
            )
        seen[pid] = index
        if prompt_text in seen_text:  # same prompt + seed = the same image twice: a set metric would count it twice
            raise EvalkitError(
                f"duplicate prompt {prompt_text!r} in {path} at {rows[seen_text[prompt_text]][2]} and "
                f"{where}: keep each prompt once (add more seeds for more images of one prompt)"
            )
        seen_text[prompt_text] = index
        prompts.append(Prompt(id=pid, text=prompt_text))
    return prompts


# Each reader returns (id or None, text, location description) tuples.
Row = tuple[str | None, str, str]


def _read_txt(text: str) -> list[Row]:
    rows: list[Row] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        rows.append((None, stripped, f"line {lineno}"))
    return rows


def _cell(value: object) -> str:
    return "" if value is None else str(value).strip()


def _read_table(text: str, path: Path, delimiter: str) -> list[Row]:
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        return []
    reader = csv.DictReader(lines, delimiter=delimiter)
    fields = [(_cell(f)).lower() for f in (reader.fieldnames or [])]
    kind = "tsv" if delimiter == "\t" else "csv"
    if "prompt" not in fields:
        raise EvalkitError(
            f"{kind} prompt file {path} has no 'prompt' column (header: "
            f"{', '.join(fields) or 'none'}): add a header row with a 'prompt' "
            "column (and optionally 'id')"
        )
    # Map normalised header names back to the file's spelling.
    original = {(_cell(f)).lower(): f for f in reader.fieldnames or []}
    rows: list[Row] = []
    for row in reader:
        lineno = reader.line_num
        values = [_cell(v) for k, v in row.items() if k is not None]
        if not any(values):
            continue  # blank line
        prompt_text = _cell(row.get(original["prompt"]))
        if not prompt_text:
            raise EvalkitError(
                f"empty prompt text in {path} at line {lineno}: fill in the "
                "'prompt' column or delete the row"
            )
        given_id = _cell(row.get(original["id"])) if "id" in original else ""
        rows.append((given_id or None, prompt_text, f"line {lineno}"))
    return rows


def _read_jsonl(text: str, path: Path) -> list[Row]:
    rows: list[Row] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalkitError(
                f"line {lineno} of {path} is not valid JSON ({exc.msg}): write one "
                'JSON object per line, e.g. {"prompt": "a cat"}'
            ) from None
        if not isinstance(obj, dict) or "prompt" not in obj:
            raise EvalkitError(
                f"line {lineno} of {path} has no 'prompt' field: write one JSON "
                'object per line, e.g. {"prompt": "a cat"}'
            )
        prompt_text = _cell(obj["prompt"]) if isinstance(obj["prompt"], str) else ""
        if not prompt_text:
            raise EvalkitError(
                f"empty prompt text in {path} at line {lineno}: give 'prompt' a "
                "non-empty string or delete the line"
            )
        raw_id = obj.get("id")
        given_id = _cell(raw_id) if raw_id is not None else ""
        rows.append((given_id or None, prompt_text, f"line {lineno}"))
    return rows
