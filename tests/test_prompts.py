"""Tests for evalkit.sweep.prompts: the user's own formats, content ids and error messages (the published suites,
sampling and hf: datasets: test_suites.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.sweep.prompts import Prompt, content_id, load_prompts

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "prompts" / "default.txt"

TEXTS = [
    "a smiling person's face, studio portrait",
    'a sign that says "STOP" on a pole',
    "three apples, on a table",  # comma exercises csv quoting
    "caf\u00e9 sign with \u00fcml\u00e4uts and \u732b",  # non-ASCII
]


def test_default_prompts_load():
    prompts = load_prompts(DEFAULT)
    assert len(prompts) == 12
    assert [p.id for p in prompts] == [content_id(p.text) for p in prompts]
    assert all(len(p.id) == 11 and p.id.startswith("p") for p in prompts)
    assert all(p.text and p.text == p.text.strip() for p in prompts)
    assert len({p.text for p in prompts}) == 12
    joined = " ".join(p.text for p in prompts).lower()
    for word in ["face", "standing", "kitten", "fish", "sun", "hills", "beach", "mountain",
                 "hello", "stop", "three apples", "checkerboard", "circles", "gradient"]:
        assert word in joined, word


def test_prompt_is_frozen():
    p = Prompt(id="a", text="b")
    with pytest.raises(Exception):
        p.text = "c"  # type: ignore[misc]


def _write_txt(path: Path, texts, ids=None):
    assert ids is None
    lines = ["# a comment", ""] + [texts[0], "   ", "  # indented comment"] + texts[1:]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_table(path: Path, texts, ids=None, delimiter=","):
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        if ids is None:
            w.writerow(["prompt", "extra"])
            for t in texts:
                w.writerow([t, "x"])
        else:
            w.writerow(["id", "prompt"])
            for i, t in zip(ids, texts):
                w.writerow([i, t])


def _write_jsonl(path: Path, texts, ids=None):
    with path.open("w", encoding="utf-8") as f:
        for k, t in enumerate(texts):
            obj = {"prompt": t} if ids is None else {"id": ids[k], "prompt": t}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            if k == 0:
                f.write("\n")  # blank lines are tolerated


WRITERS = {
    "txt": _write_txt,
    "csv": _write_table,
    "tsv": lambda p, t, ids=None: _write_table(p, t, ids, delimiter="\t"),
    "jsonl": _write_jsonl,
}


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_round_trip_default_ids(tmp_path, ext):
    path = tmp_path / f"prompts.{ext}"
    WRITERS[ext](path, TEXTS)
    prompts = load_prompts(path)
    extra = (("extra", "x"),) if ext in ("csv", "tsv") else ()  # a table's other columns are kept as metadata
    assert prompts == [Prompt(content_id(t), t, meta=extra) for t in TEXTS]


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl"])
def test_round_trip_given_ids(tmp_path, ext):
    ids = ["face", "stop", "apples", "cafe"]
    path = tmp_path / f"prompts.{ext}"
    WRITERS[ext](path, TEXTS, ids)
    assert load_prompts(str(path)) == [Prompt(i, t) for i, t in zip(ids, TEXTS)]


def test_all_formats_agree(tmp_path):
    loaded = []
    for ext, writer in WRITERS.items():
        path = tmp_path / f"p.{ext}"
        writer(path, TEXTS)
        loaded.append([(p.id, p.text) for p in load_prompts(path)])
    assert all(x == loaded[0] for x in loaded)


def test_partial_ids_fall_back_to_content_ids(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,prompt\nfirst,a cat\n,a fish\n", encoding="utf-8")
    assert load_prompts(path) == [Prompt("first", "a cat"), Prompt(content_id("a fish"), "a fish")]


def test_content_ids_are_the_texts_and_survive_reordering_and_subsetting(tmp_path):
    """A prompt's id depends on its text alone: a reordered or cut file keeps every id (so runs on both join)."""
    (tmp_path / "all.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (tmp_path / "some.txt").write_text("\n".join([TEXTS[3], TEXTS[1]]) + "\n", encoding="utf-8")
    full = {p.text: p.id for p in load_prompts(tmp_path / "all.txt")}
    part = {p.text: p.id for p in load_prompts(tmp_path / "some.txt")}
    assert part == {t: full[t] for t in (TEXTS[3], TEXTS[1])}
    assert content_id("a cat") == "p" + __import__("hashlib").sha256(b"a cat").hexdigest()[:10]


def test_category_challenge_and_extra_columns_of_a_users_table(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,Category,source,challenge\na cat,animals,mine,easy\na car,vehicles,,hard\n",
                    encoding="utf-8")
    assert load_prompts(path) == [Prompt(content_id("a cat"), "a cat", "animals", "easy", (("source", "mine"),)),
                                  Prompt(content_id("a car"), "a car", "vehicles", "hard", (("source", ""),))]


def test_bom_is_tolerated(tmp_path):
    for ext, body in [("csv", "prompt\na cat\n"), ("txt", "a cat\n"),
                      ("jsonl", '{"prompt": "a cat"}\n')]:
        path = tmp_path / f"bom.{ext}"
        path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
        assert load_prompts(path) == [Prompt(content_id("a cat"), "a cat")], ext


def test_uppercase_extension_and_header(tmp_path):
    path = tmp_path / "P.CSV"
    path.write_text("ID,Prompt\nx,a cat\n", encoding="utf-8")
    assert load_prompts(path) == [Prompt("x", "a cat")]


ERROR_CASES = [
    # (file name, content or None for missing, expected fragment)
    ("missing.txt", None, "not found: pass --prompts"),
    ("prompts.yaml", "- a cat\n", "unsupported prompt file extension"),
    ("noext", "a cat\n", "unsupported prompt file extension"),
    ("empty.txt", "", "empty prompt file"),
    ("comments.txt", "# only\n\n   \n", "add one prompt per line"),
    ("empty.csv", "", "empty prompt file"),
    ("header_only.csv", "id,prompt\n", "empty prompt file"),
    ("empty.jsonl", "\n\n", "empty prompt file"),
    ("nocol.csv", "id,text\n1,a cat\n", "no 'prompt' column"),
    ("nocol.tsv", "id\ttext\n1\ta cat\n", "no 'prompt' column"),
    ("bad.jsonl", '{"prompt": "a cat"}\n{not json}\n', "line 2"),
    ("bad2.jsonl", '{"prompt": "a cat"}\nnot json\n', "is not valid JSON"),
    ("noprompt.jsonl", '{"prompt": "a"}\n\n{"text": "a cat"}\n', "line 3 of"),
    ("noprompt2.jsonl", '{"text": "a cat"}\n', "has no 'prompt' field"),
    ("list.jsonl", '["a cat"]\n', "has no 'prompt' field"),
    ("dup.csv", "id,prompt\na,x\na,y\n", "duplicate prompt id 'a'"),
    ("dup.jsonl", f'{{"id": "{content_id("y")}", "prompt": "x"}}\n{{"prompt": "y"}}\n',
     f"duplicate prompt id '{content_id('y')}'"),
    ("duptext.txt", "a cat\na dog\na cat\n", "duplicate prompt 'a cat'"),
    ("duptext.csv", "prompt,category\na cat,x\na cat,y\n", "at line 2 and line 3: keep each prompt once"),
    ("blank.csv", "id,prompt\na,x\nb,  \n", "empty prompt text"),
    ("blank.tsv", "id\tprompt\na\t\n", "empty prompt text"),
    ("blank.jsonl", '{"prompt": ""}\n', "empty prompt text"),
    ("null.jsonl", '{"prompt": null}\n', "empty prompt text"),
    ("latin1.txt", b"caf\xe9\n", "not valid UTF-8"),
]


@pytest.mark.parametrize("name,content,fragment", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_errors(tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalkitError) as excinfo:
        load_prompts(path)
    message = str(excinfo.value)
    assert fragment in message
    assert "\n" not in message
    assert str(path) in message or name == "missing.txt" and "missing.txt" in message


def test_missing_file_message_is_exact(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(EvalkitError, match="pass --prompts with an existing "
                       r"\.txt/\.csv/\.tsv/\.jsonl file \(or \.json, a folder of suite files, hf:NAME\[:SPLIT\]\)"):
        load_prompts(path)


def test_a_folder_without_prompt_files_says_what_it_reads(tmp_path):
    d = tmp_path / "dir.txt"
    d.mkdir()
    (d / "notes.md").write_text("a cat\n")
    with pytest.raises(EvalkitError, match="holds no .txt or .json prompt files"):
        load_prompts(d)
