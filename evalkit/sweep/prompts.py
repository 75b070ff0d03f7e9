"""Prompts: what a sweep renders, read from a prompt file, a published suite or a Hugging Face dataset.

`read_prompts` reads any source (sweep/suites.py: files and folders; sweep/hub.py: `hf:` datasets) and gives each
prompt a stable id: the suite's own where it has one (an `id` column; HPDv2's `<style>-<index>`), else one derived
from the text (`content_id`), so a prompt keeps its id when its file is reordered, cut to a subset or sampled,
and runs on different samples of one suite join on the same prompts.

Every problem raises :class:`evalkit.errors.EvalkitError` with a one-line message that names the problem and how
to fix it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config import is_hf_source
from ..errors import EvalkitError
from .suites import Record, Records, read_source

# The user's own files: a prompt listed twice there is a mistake to fix. A published suite (anything else) is read
# as published: a prompt it repeats is rendered once (its first row), and the repeat is named in the run's record.
OWN_FORMATS = ("txt", "csv", "tsv", "jsonl")
CONTENT_ID_DIGITS = 10  # 40 bits: two of a million prompts share an id with odds of 1 in 2,000


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str = ""  # the suite's category of the prompt ("" where the file has none)
    challenge: str = ""  # PartiPrompts' challenge level ("" elsewhere)
    meta: tuple[tuple[str, str], ...] = ()  # the row's other columns, (name, value), kept as prompt metadata


@dataclass(frozen=True)
class Suite:
    """A prompt source as read: its prompts (each text once, in source order) and where each came from."""

    source: str  # the file, folder, glob or hf: dataset read
    format: str  # the format it was read as
    files: tuple[str, ...]
    prompts: tuple[Prompt, ...]
    origins: dict[str, tuple[int, str]] = field(repr=False)  # prompt id -> (row in its file, where, e.g. "line 14")
    repeats: tuple[tuple[str, str, str], ...] = ()  # (text, where, where first): rows left out as repeats


def content_id(text: str) -> str:
    """A prompt's id derived from its text alone: the same in any file, order or subset that holds it."""
    return "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:CONTENT_ID_DIGITS]


def load_prompts(source: str | Path, prompt_format: str = "auto",
                 columns: dict[str, str] | None = None) -> list[Prompt]:
    """The prompts of a file, folder, glob or `hf:NAME[:SPLIT]` (see `read_prompts`)."""
    return list(read_prompts(source, prompt_format, columns).prompts)


def read_prompts(source: str | Path, prompt_format: str = "auto", columns: dict[str, str] | None = None) -> Suite:
    """Read a prompt source, recognised by its columns or shape unless `prompt_format` names it.

    - ``.txt``: one prompt per line; blank lines and ``#`` lines are skipped.
    - ``.csv`` / ``.tsv``: a header row with a ``prompt`` column, optional ``id``, ``category``, ``challenge``;
      PartiPrompts (``Prompt, Category, Challenge``) and DrawBench (``Prompts, Category``) by their columns.
    - ``.jsonl``: one JSON object per line with ``prompt`` (optional ``id``...); GenEval's by ``prompt`` + ``tag``.
    - ``.json`` or a folder of them: HPDv2 benchmark styles; a folder of ``.txt``: T2I-CompBench categories.
    - ``hf:NAME[:SPLIT]``: a dataset in the local Hugging Face cache, read offline.

    Columns a table has beyond the ones evalkit reads are kept as each prompt's ``meta``.
    """
    source = str(source)
    if is_hf_source(source):
        from .hub import read_hub  # imports `datasets` only for an hf: source

        read = read_hub(source, prompt_format, columns)
    else:
        read = read_source(source, prompt_format, columns)
    if not read.records:
        raise EvalkitError(f"empty prompt file {source}: add one prompt per line" if Path(source).is_file() else
                           f"hf dataset {source} has no rows: name a split that holds prompts" if
                           is_hf_source(source) else f"no prompts in {source}: its files hold no prompt lines")
    return _suite(source, read)


def _suite(source: str, read: Records) -> Suite:
    """Prompts with their ids, each id and each text once."""
    prompts: list[Prompt] = []
    origins: dict[str, tuple[int, str]] = {}
    by_text: dict[str, Record] = {}
    by_id: dict[str, Record] = {}
    repeats: list[tuple[str, str, str]] = []
    for record in read.records:
        first = by_text.get(record.text)
        if first is not None:  # same prompt + seed = the same image twice: a set metric would count it twice
            if read.format in OWN_FORMATS:
                raise EvalkitError(f"duplicate prompt {record.text!r} in {source} at {first.where} and "
                                   f"{record.where}: keep each prompt once (add more seeds for more images of one "
                                   "prompt)")
            repeats.append((record.text, record.where, first.where))
            continue
        pid = record.id or content_id(record.text)
        if pid in by_id:
            other = by_id[pid]
            fix = "give every prompt a unique id" if record.id else \
                "two texts share a content id: give these rows an id column"
            raise EvalkitError(f"duplicate prompt id {pid!r} in {source} ({record.where}, first seen at "
                               f"{other.where}): {fix}")
        by_text[record.text] = by_id[pid] = record
        origins[pid] = (record.row, record.where)
        prompts.append(Prompt(pid, record.text, record.category, record.challenge, record.meta))
    if repeats:
        text, where, first = repeats[0]
        warnings.warn(f"{source}: {len(repeats)} repeated prompt(s) rendered once (their first row kept), e.g. "
                      f"{text[:60]!r} at {where} (first at {first})", stacklevel=3)
    return Suite(source, read.format, read.files, tuple(prompts), origins, tuple(repeats))
