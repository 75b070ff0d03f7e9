"""Published prompt suites (sweep/suites.py, sweep/hub.py) and prompt_sample (sweep/sample.py).

Each suite is written here, small, in its published layout (evalkit ships none of them): PartiPrompts' raw TSV,
DrawBench's CSV, GenEval's evaluation_metadata.jsonl, HPDv2's benchmark style files, T2I-CompBench's folder of
per-category files, and a Hugging Face dataset put in the local `datasets` cache the way a download leaves it, read
with the network blocked. Then: ids that survive reordering and subsetting, samples that are reproducible, exact
per stratum and grow without taking a prompt back (a bigger sample renders only its new prompts), the run folder's
records, and every bad input as one line.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.config import load_config, make_config, open_run, to_toml
from evalkit.errors import EvalkitError
from evalkit.sweep.prompts import Prompt, content_id, load_prompts, read_prompts
from evalkit.sweep.sample import allocate, run_prompts, sample_prompts

CATEGORIES = ["Animals", "Vehicles", "Food & Beverage"]
# PartiPrompts.tsv as published (github.com/google-research/parti): raw TSV, no quoting, a Note column often empty
PARTI_ROWS = [
    ("a ginger kitten asleep on a wool blanket", "Animals", "Basic", ""),
    ('A sign that says "STOP" on a pole', "World Knowledge", "Writing & Symbols", ""),
    ('"Hello World" painted on a brick wall', "Illustrations", "Writing & Symbols", "starts with a quote"),
    ("a small orange fish in a glass bowl", "Animals", "Basic", "DALL-E"),
    ("a red F1 race car, side view", "Vehicles", "Fine-grained Detail", ""),
    ("three apples on a white table", "Food & Beverage", "Quantity", ""),
]


def write_parti(path: Path, rows=PARTI_ROWS) -> Path:
    lines = ["Prompt\tCategory\tChallenge\tNote", *("\t".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def suite_rows(count: int) -> list[tuple[str, str, str, str]]:
    """`count` unique PartiPrompts-style rows, categories 3:2:1 (Animals:Vehicles:Food & Beverage)."""
    share = ["Animals"] * 3 + ["Vehicles"] * 2 + ["Food & Beverage"]
    return [(f"a picture of thing number {i}", share[i % 6], ["Basic", "Complex"][i % 2], "") for i in range(count)]


# -- each format, as published -----------------------------------------------------------------------------------
def test_partiprompts_tsv_loads_with_categories_challenges_and_notes(tmp_path):
    suite = read_prompts(write_parti(tmp_path / "PartiPrompts.tsv"))
    assert suite.format == "partiprompts"
    assert [(p.text, p.category, p.challenge, p.meta) for p in suite.prompts] == \
        [(text, cat, chal, (("Note", note),)) for text, cat, chal, note in PARTI_ROWS]
    assert [p.id for p in suite.prompts] == [content_id(row[0]) for row in PARTI_ROWS]  # Parti has no ids
    assert suite.origins[content_id(PARTI_ROWS[2][0])] == (2, "line 4")  # 0-based row, and the file's line


def test_drawbench_csv_loads_with_categories(tmp_path):
    """DrawBench's sheet exported as CSV: `Prompts`, `Category` (standard CSV quoting)."""
    path = tmp_path / "DrawBench.csv"
    path.write_text('Prompts,Category\n"A storefront with ""Hello World"" written on it.",Text\n'
                    "A red colored car.,Colors\n\"Two cats, one dog.\",Counting\n", encoding="utf-8")
    prompts = load_prompts(path)
    assert [(p.text, p.category) for p in prompts] == [('A storefront with "Hello World" written on it.', "Text"),
                                                       ("A red colored car.", "Colors"),
                                                       ("Two cats, one dog.", "Counting")]
    assert read_prompts(path).format == "drawbench"


def test_geneval_metadata_loads_with_tags_and_its_objects_as_metadata(tmp_path):
    rows = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
            {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}],
             "prompt": "a photo of two cats"},
            {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"},
                                              {"class": "bench", "count": 1, "color": "blue"}],
             "prompt": "a photo of a red car and a blue bench"}]
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    suite = read_prompts(path)
    assert suite.format == "geneval"
    assert [(p.text, p.category) for p in suite.prompts] == [(r["prompt"], r["tag"]) for r in rows]
    counting = dict(suite.prompts[1].meta)
    assert json.loads(counting["include"]) == rows[1]["include"] and json.loads(counting["exclude"]) == \
        rows[1]["exclude"]
    assert counting["exclude"] == '[{"class":"cat","count":3}]'  # compact JSON
    assert "exclude" not in dict(suite.prompts[0].meta)
    assert [suite.origins[p.id][0] for p in suite.prompts] == [0, 1, 2]  # GenEval's own folder index


def write_hpd(folder: Path, extra: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    styles = {"anime": ["a girl with blue hair", "a fox in a forest"], "concept-art": ["a castle on a cliff"],
              "paintings": ["a lighthouse at dusk, oil on canvas"], "photo": ["a dog on a beach", "a city at night"]}
    for style, prompts in styles.items():
        (folder / f"{style}.json").write_text(json.dumps(prompts), encoding="utf-8")
    if extra:  # the published benchmark/ folder also holds DrawBench's prompts: not one of the four styles
        (folder / "drawbench.json").write_text(json.dumps(["a drawbench prompt"]), encoding="utf-8")
    return folder


def test_hpdv2_benchmark_folder_loads_its_four_styles_with_the_benchmarks_image_ids(tmp_path):
    suite = read_prompts(write_hpd(tmp_path / "benchmark"))
    assert suite.format == "hpdv2"
    assert suite.files == ("anime.json", "concept-art.json", "paintings.json", "photo.json")
    assert [(p.id, p.category) for p in suite.prompts] == [
        ("anime-00000", "anime"), ("anime-00001", "anime"), ("concept-art-00000", "concept-art"),
        ("paintings-00000", "paintings"), ("photo-00000", "photo"), ("photo-00001", "photo")]
    one = read_prompts(tmp_path / "benchmark" / "photo.json")  # one style file alone
    assert [(p.id, p.text, p.category) for p in one.prompts] == [("photo-00000", "a dog on a beach", "photo"),
                                                                 ("photo-00001", "a city at night", "photo")]
    every = read_prompts(str(tmp_path / "benchmark" / "*.json"))  # a glob means exactly the files it matches
    assert "drawbench" in {p.category for p in every.prompts}


def write_t2i(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"color_val.txt": "a green bench and a red car\na blue bowl and a yellow apple\n",
             "3d_spatial_val.txt": "a cat in front of a chair\n",
             "shape_val_seen.txt": "a round clock and a square box\n\n",
             "non_spatial_val.txt": "a man is reading a book\n"}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_t2i_compbench_folder_loads_categories_from_file_names_and_keeps_the_split(tmp_path):
    suite = read_prompts(write_t2i(tmp_path / "dataset"))
    assert suite.format == "t2i-compbench"
    got = [(p.text, p.category, dict(p.meta).get("split")) for p in suite.prompts]
    assert got == [("a cat in front of a chair", "3d_spatial", "val"),
                   ("a green bench and a red car", "color", "val"), ("a blue bowl and a yellow apple", "color", "val"),
                   ("a man is reading a book", "non_spatial", "val"),
                   ("a round clock and a square box", "shape", "val_seen")]
    assert suite.origins[content_id("a blue bowl and a yellow apple")] == (1, "color_val.txt line 2")
    only = read_prompts(str(tmp_path / "dataset" / "*_val.txt"))  # a glob picks the files
    assert {p.category for p in only.prompts} == {"3d_spatial", "color", "non_spatial"}
    single = read_prompts(tmp_path / "dataset" / "color_val.txt", "t2i-compbench")  # one file, named the format
    assert {p.category for p in single.prompts} == {"color"}
    assert {p.category for p in load_prompts(tmp_path / "dataset" / "color_val.txt")} == {""}  # a plain .txt


def test_a_forced_format_reads_a_file_whatever_its_name(tmp_path):
    path = write_parti(tmp_path / "suite.txt")
    assert [p.category for p in load_prompts(path, "partiprompts")][:1] == ["Animals"]
    assert len(load_prompts(path)) == len(PARTI_ROWS) + 1  # as a .txt, the header is a line like any other


def test_prompt_columns_map_a_users_own_columns(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("key,caption,style\nk1,a cat,photo\nk2,a dog,anime\n", encoding="utf-8")
    prompts = load_prompts(path, columns={"prompt": "caption", "category": "Style", "id": "key"})
    assert prompts == [Prompt("k1", "a cat", "photo"), Prompt("k2", "a dog", "anime")]


def test_a_suite_that_repeats_a_prompt_renders_it_once_and_says_so(tmp_path):
    rows = [*PARTI_ROWS, (PARTI_ROWS[0][0], "Animals", "Complex", "listed twice")]
    with pytest.warns(UserWarning, match=r"1 repeated prompt\(s\) rendered once .* at line 8 \(first at line 2\)"):
        suite = read_prompts(write_parti(tmp_path / "PartiPrompts.tsv", rows))
    assert len(suite.prompts) == len(PARTI_ROWS) and suite.prompts[0].challenge == "Basic"
    assert suite.repeats == ((PARTI_ROWS[0][0], "line 8", "line 2"),)


# -- stable ids -----------------------------------------------------------------------------------------------------
def test_ids_survive_reordering_and_subsetting_of_a_suite(tmp_path):
    full = {p.text: p.id for p in load_prompts(write_parti(tmp_path / "full.tsv"))}
    shuffled = [PARTI_ROWS[i] for i in (4, 2, 0)]
    part = {p.text: p.id for p in load_prompts(write_parti(tmp_path / "part.tsv", shuffled))}
    assert part == {row[0]: full[row[0]] for row in shuffled}


# -- sampling -----------------------------------------------------------------------------------------------------
def prompts_of(sizes: dict[str, int]) -> list[Prompt]:
    return [Prompt(content_id(f"{name} {i}"), f"{name} {i}", name, meta=(("Shard", str(i % 3)),))
            for name, size in sizes.items() for i in range(size)]


def test_a_sample_is_reproducible_in_source_order_and_the_seed_changes_it():
    prompts = prompts_of({"A": 40, "B": 25, "C": 10})
    first, strata = sample_prompts(prompts, 20, by="category", seed=3)
    again, _ = sample_prompts(list(reversed(prompts)), 20, by="category", seed=3)  # the file's order changes nothing
    assert {p.id for p in first} == {p.id for p in again}
    assert first == [p for p in prompts if p in first]  # chosen rows keep the source's order
    assert {p.id for p in sample_prompts(prompts, 20, by="category", seed=4)[0]} != {p.id for p in first}
    # quotas 10.67, 6.67, 2.67: Sainte-Laguë (divisor 3.85: 10.4, 6.5, 2.6 rounded) gives 10, 7, 3, where largest
    # remainders would give 11, 7, 2
    assert strata == {"A": {"available": 40, "chosen": 10}, "B": {"available": 25, "chosen": 7},
                      "C": {"available": 10, "chosen": 3}}


@pytest.mark.parametrize("allocation, n, expected", [
    ("proportional", 10, {"A": 5, "B": 3, "C": 2}),
    ("proportional", 100, {"A": 50, "B": 30, "C": 20}),
    ("equal", 9, {"A": 3, "B": 3, "C": 3}),
    ("equal", 40, {"A": 15, "B": 15, "C": 10}),  # C is full at 10: its seats go to the others
    ("equal", 1000, {"A": 50, "B": 30, "C": 10}),  # n beyond the suite: every prompt
])
def test_stratified_counts_are_exact(allocation, n, expected):
    sizes = {"A": 50, "B": 30, "C": 10 if allocation == "equal" else 20}
    chosen, strata = sample_prompts(prompts_of(sizes), n, by="category", allocation=allocation)
    assert {name: s["chosen"] for name, s in strata.items()} == expected
    assert len(chosen) == min(n, sum(sizes.values()))
    for name, count in expected.items():
        assert sum(p.category == name for p in chosen) == count


def webster_holds(sizes: dict[str, int], seats: dict[str, int]) -> bool:
    """Sainte-Laguë's defining inequality, checked directly: no stratum's last seat is worth less than any other
    (not full) stratum's next one: min over seated of N/(2a-1) >= max over open of N/(2a+1)."""
    last = min(Fraction(n, 2 * seats[k] - 1) for k, n in sizes.items() if seats[k])
    following = [Fraction(n, 2 * seats[k] + 1) for k, n in sizes.items() if seats[k] < n]
    return not following or last >= max(following)


def test_proportional_seats_are_sainte_lague_at_every_n_and_grow_one_at_a_time():
    sizes = {"a": 314, "b": 120, "c": 77, "d": 31, "e": 9, "f": 2, "g": 1}
    tie = {k: i for i, k in enumerate(sizes)}
    previous = dict.fromkeys(sizes, 0)
    for n in range(1, sum(sizes.values()) + 1):
        seats = allocate(sizes, n, "proportional", tie)
        assert sum(seats.values()) == n and webster_holds(sizes, seats), n
        grew = {k: seats[k] - previous[k] for k in sizes}
        assert sorted(grew.values()) == [0] * (len(sizes) - 1) + [1], n  # house monotone: no seat taken back
        previous = seats


@pytest.mark.parametrize("spec", [{"by": "category", "allocation": "proportional"},
                                  {"by": "category", "allocation": "equal"}, {"by": "shard"}, {}],
                         ids=["proportional", "equal", "meta-column", "random"])
def test_growing_n_keeps_every_earlier_prompt(spec):
    prompts = prompts_of({"A": 37, "B": 21, "C": 8, "D": 3})
    previous: set[str] = set()
    for n in range(1, len(prompts) + 2):
        chosen = {p.id for p in sample_prompts(prompts, n, seed=11, **spec)[0]}
        assert previous <= chosen and len(chosen) == min(n, len(prompts)), n
        previous = chosen


def test_rows_added_to_the_file_do_not_reshuffle_the_others():
    old = prompts_of({"A": 30})
    new = old + prompts_of({"Z": 10})
    picked = [p for p in sample_prompts(new, 15, seed=2)[0] if p in old]
    assert picked == sample_prompts(old, len(picked), seed=2)[0]


def test_by_matches_any_column_case_insensitively_and_names_the_columns_it_has(tmp_path):
    prompts = load_prompts(write_parti(tmp_path / "p.tsv"))
    _, strata = sample_prompts(prompts, 3, by="CHALLENGE")
    assert set(strata) == {row[2] for row in PARTI_ROWS}
    _, strata = sample_prompts(prompts, 3, by="note")
    assert "DALL-E" in strata
    with pytest.raises(EvalkitError, match="prompt_sample.by 'style' is not a column of the prompts: use one of "
                                           "category, challenge, Note$"):
        sample_prompts(prompts, 3, by="style")
    with pytest.raises(EvalkitError, match="no prompt has a value in that column"):
        sample_prompts([Prompt("a", "a cat"), Prompt("b", "a dog")], 1, by="category")


def test_prompt_sample_config_round_trips_and_validates():
    config = make_config({"prompt_sample": {"n": 200, "by": "category"}, "prompt_format": "PartiPrompts",
                          "prompt_columns": {"prompt": "caption"}})
    assert config.prompt_sample == {"n": 200, "by": "category", "allocation": "proportional", "seed": 0}
    assert config.prompt_format == "partiprompts"
    import tomllib

    assert make_config(tomllib.loads(to_toml(config))) == config
    assert make_config({"prompt_sample": "n=5,by=challenge,allocation=equal,seed=7"}).prompt_sample == \
        {"n": 5, "by": "challenge", "allocation": "equal", "seed": 7}
    assert make_config({"prompt_sample": "12"}).prompt_sample == {"n": 12, "seed": 0}


# -- the run: records in the folder, growth without re-rendering --------------------------------------------------
SMALL_RUN = {"model": "builtin:mixture", "schedulers": ["euler"], "steps": [1, 2], "seeds": 1, "reference_steps": 4,
             "certify": False, "metrics": ["ssim"], "device": "cpu"}


def test_a_bigger_sample_renders_only_the_prompts_it_adds_and_the_folder_records_each_sample(tmp_path):
    suite = write_parti(tmp_path / "PartiPrompts.tsv", suite_rows(12))
    config = {**SMALL_RUN, "prompts": str(suite), "out": str(tmp_path / "run")}
    small = evalkit.run({**config, "prompt_sample": {"n": 4, "by": "category"}})
    per_prompt = 2 + 1  # two step counts and a reference, one seed
    assert small.stats.rendered == 4 * per_prompt
    record = json.loads((small.dir / "prompt_sample.json").read_text())
    assert record["strata"] == {"Animals": {"available": 6, "chosen": 2}, "Food & Beverage": {"available": 2,
                                "chosen": 1}, "Vehicles": {"available": 4, "chosen": 1}}
    assert (record["n"], record["by"], record["allocation"], record["seed"], record["available"],
            record["chosen"], record["format"]) == (4, "category", "proportional", 0, 12, 4, "partiprompts")
    assert record["source"] == str(suite.resolve())
    table = pd.read_parquet(small.dir / "prompts.parquet")
    assert list(table.columns) == ["id", "prompt", "category", "challenge", "meta", "row", "where"]
    assert json.loads(table.meta.iloc[0]) == {"Note": ""}
    first_ids = set(table.id)
    assert set(small.images.prompt_id) == first_ids
    assert set(zip(small.images.prompt_id, small.images.category)) == set(zip(table.id, table.category))

    big = evalkit.run({**config, "prompt_sample": {"n": 7, "by": "category"}})
    table = pd.read_parquet(big.dir / "prompts.parquet")
    assert first_ids < set(table.id) and len(table) == 7
    assert big.stats.rendered == 3 * per_prompt  # the 4 earlier prompts' images are all reused
    assert set(big.images.prompt_id) == set(table.id)
    rows = {(r.id, r.row, r.where) for r in table.itertuples()}
    texts = [row[0] for row in suite_rows(12)]
    assert all(texts[row] == prompt for prompt, row in zip(table.prompt, table.row)) and len(rows) == 7
    assert evalkit.run({**config, "prompt_sample": {"n": 7, "by": "category"}}).stats.rendered == 0


def test_run_prompts_is_what_render_and_the_adaptive_search_use(tmp_path):
    """One home: the api and the min-steps search import run_prompts, none reads a prompt file itself."""
    import evalkit.api
    import evalkit.minsteps.search

    for module in (evalkit.api, evalkit.minsteps.search):
        assert module.run_prompts is run_prompts and not hasattr(module, "load_prompts")
    config = load_config(prompts=str(write_hpd(tmp_path / "hpd")), prompt_sample={"n": 2, "by": "category",
                                                                                   "allocation": "equal"})
    chosen = run_prompts(config)
    assert len(chosen.prompts) == 2 and len({p.category for p in chosen.prompts}) == 2
    assert chosen.sample["files"] == ["anime.json", "concept-art.json", "paintings.json", "photo.json"]


# -- Hugging Face datasets, from the local cache only ---------------------------------------------------------------
REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_hf_dataset(home: Path, repo_id: str, splits: dict[str, pd.DataFrame]) -> Path:
    """Put `splits` in $HF_HOME/datasets the way `datasets.load_dataset(repo_id)` leaves a download there.

    A download runs the parquet builder over the repo's data/<split>-*.parquet files and writes its Arrow cache to
    <ORG>___<name>/default/0.0.0/<commit>/ (dataset_info.json, <name>-<split>.arrow): offline, load_dataset finds
    that folder (datasets' CachedDatasetModuleFactory) and nothing else. Here the same builder runs over a local
    copy of such a repo; built locally it has no repo id, so its folder is then moved under the ORG___ prefix a
    hub repo id gives it."""
    from datasets.load import LocalDatasetModuleFactory, get_dataset_builder_class

    org, name = repo_id.split("/")
    repo = home / "staging" / name
    (repo / "data").mkdir(parents=True)
    for split, frame in splits.items():
        frame.to_parquet(repo / "data" / f"{split}-00000-of-00001.parquet", index=False)
    module = LocalDatasetModuleFactory(str(repo)).get_module()
    builder = get_dataset_builder_class(module, dataset_name=name)(
        cache_dir=str(home / "staging" / "cache"), dataset_name=name, hash=REVISION,
        base_path=module.builder_kwargs["base_path"])
    builder.download_and_prepare()
    target = home / "datasets" / f"{org}___{name}" / "default" / "0.0.0" / REVISION
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)
    shutil.rmtree(home / "staging")
    return target


@pytest.fixture
def hf_home(tmp_path, monkeypatch, no_network):
    pytest.importorskip("datasets")
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    cache_hf_dataset(home, "someorg/tinyprompts", {
        "train": pd.DataFrame({"caption": ["a cat on a mat", "a red car", "a bowl of soup"],
                               "Category": ["animals", "vehicles", "food"], "uid": ["u1", "u2", "u3"],
                               "likes": [3, 0, 12]}),
        "test": pd.DataFrame({"caption": ["a dog"], "Category": ["animals"], "uid": ["t1"], "likes": [1]})})
    return home


def test_a_cached_hf_dataset_loads_offline_with_its_column_mapping(hf_home, monkeypatch):
    import datasets

    import huggingface_hub.constants

    # as on a connected machine: evalkit switches the hub off for its call (and the network is blocked here)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    attempts = []  # datasets falls back to its cache after a failed connection: count the attempts themselves

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    suite = read_prompts("hf:someorg/tinyprompts:train", columns={"prompt": "caption", "id": "uid"})
    assert attempts == []
    assert datasets.config.HF_HUB_OFFLINE is False and "HF_DATASETS_OFFLINE" not in os.environ  # for the call only
    assert [(p.id, p.text, p.category, p.meta) for p in suite.prompts] == [
        ("u1", "a cat on a mat", "animals", (("likes", "3"),)), ("u2", "a red car", "vehicles", (("likes", "0"),)),
        ("u3", "a bowl of soup", "food", (("likes", "12"),))]
    assert suite.format == "hf" and suite.origins["u3"] == (2, "train[2]")
    test = load_prompts("hf:someorg/tinyprompts:test", columns={"prompt": "caption"})
    assert [(p.id, p.text) for p in test] == [(content_id("a dog"), "a dog")]


def test_an_hf_run_records_the_dataset_and_its_folder_reruns_from_config_toml(hf_home, tmp_path):
    run = evalkit.run({**SMALL_RUN, "prompts": "hf:someorg/tinyprompts:train", "prompt_columns": {"prompt": "caption"},
                       "prompt_sample": {"n": 2}, "out": str(tmp_path / "run")})
    record = json.loads((run.dir / "prompt_sample.json").read_text())
    assert (record["source"], record["files"], record["chosen"], record["format"]) == \
        ("hf:someorg/tinyprompts:train", ["someorg/tinyprompts:train"], 2, "hf")
    assert 'prompts = "hf:someorg/tinyprompts:train"' in (run.dir / "config.toml").read_text()  # not a path
    again = evalkit.run(open_run(run.dir))  # the folder's own config.toml: the same prompts, nothing new
    assert again.stats.rendered == 0 and set(again.images.prompt_id) == set(run.images.prompt_id)


@pytest.mark.parametrize("source, columns, fragment", [
    ("hf:someorg/other", {}, "hf dataset someorg/other is not in the local datasets cache ("),
    ("hf:someorg/other:test", {}, "`HF_HOME=<same HF_HOME> python -c \"import datasets; "
                                  "datasets.load_dataset('someorg/other', split='test')\"`"),
    ("hf:someorg/tinyprompts:validation", {"prompt": "caption"}, "has no split 'validation'"),
    ("hf:someorg/tinyprompts", {"prompt": "caption"}, "has splits train, test: name one, e.g. prompts = "
                                                      "\"hf:someorg/tinyprompts:train\""),
    ("hf:someorg/tinyprompts:train", {}, "has no 'prompt' column (columns: caption, Category, uid, likes)"),
    ("hf:someorg/tinyprompts:train", {"prompt": "text"}, "has no column 'text' for prompt_columns.prompt "
                                                         "(columns: caption, Category, uid, likes)"),
])
def test_hf_bad_inputs_are_one_line(hf_home, source, columns, fragment):
    with pytest.raises(EvalkitError) as info:
        load_prompts(source, columns=columns)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_hf_without_the_datasets_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(EvalkitError, match=r"^prompts = 'hf:a/b' needs the datasets library: "
                                           r"pip install 'evalkit\[suites\]'$"):
        load_prompts("hf:a/b")


# -- bad inputs ----------------------------------------------------------------------------------------------------
def _bad_sources(root: Path) -> dict[str, tuple]:
    """name -> (source, prompt_format, columns, fragment)"""
    (root / "empty").mkdir()
    (root / "mixed").mkdir()
    (root / "mixed" / "a.txt").write_text("a cat\n")
    (root / "mixed" / "b.json").write_text('["a dog"]')
    (root / "mixed" / "notes.md").write_text("not prompts")
    (root / "blank").mkdir()
    (root / "blank" / "color_val.txt").write_text("\n\n")
    (root / "notlist.json").write_text('{"prompt": "a cat"}')
    (root / "items.json").write_text('["a cat", 3]')
    (root / "broken.json").write_text('["a cat",')
    (root / "drawbench.csv").write_text("Prompt,Kind\na cat,x\n")
    (root / "geneval.jsonl").write_text('{"tag": "counting", "prompt": "two cats"}\n{"prompt": "a dog"}\n')
    parti = write_parti(root / "parti.tsv")
    return {
        "empty folder": (root / "empty", "auto", None, "holds no .txt or .json prompt files"),
        "mixed folder": (root / "mixed", "auto", None, "holds both .txt and .json files: set prompt_format"),
        "no prompt lines": (root / "blank", "auto", None, "no prompts in"),
        "glob without match": (root / "mixed" / "*_val.txt", "auto", None, "no file matches"),
        "glob matching other files": (root / "mixed" / "*", "auto", None, "matches notes.md, neither a .txt nor"),
        "glob in a missing folder": (root / "nope" / "*.txt", "auto", None, "prompt folder"),
        "folder for a one-file format": (root / "mixed", "csv", None, "prompt_format 'csv' reads one file"),
        "hpdv2 not a list": (root / "notlist.json", "auto", None, "holds a JSON dict, not a list of prompts"),
        "hpdv2 item not a prompt": (root / "items.json", "auto", None, "item [1] is 3, not a prompt"),
        "hpdv2 broken json": (root / "broken.json", "auto", None, "is not valid JSON"),
        "not drawbench": (root / "drawbench.csv", "drawbench", None,
                          "is not in drawbench format: it has no 'prompts' column (columns: Prompt, Kind)"),
        "not partiprompts": (root / "drawbench.csv", "partiprompts", None, "has no 'category' column"),
        "geneval line without tag": (root / "geneval.jsonl", "auto", None, "line 2 of"),
        "missing mapped column": (parti, "auto", {"prompt": "Text"}, "has no column 'Text' for "
                                                                    "prompt_columns.prompt (columns: Prompt, "
                                                                    "Category, Challenge, Note)"),
        "unsupported extension": (root / "p.yaml", "auto", None, "not found"),
    }


def test_bad_sources_are_one_line_errors(tmp_path):
    for name, (source, fmt, columns, fragment) in _bad_sources(tmp_path).items():
        with pytest.raises(EvalkitError) as info:
            load_prompts(source, fmt, columns)
        message = str(info.value)
        assert fragment in message and "\n" not in message, (name, message)


@pytest.mark.parametrize("values, fragment", [
    ({"prompt_format": "parti"}, "unknown prompt_format 'parti': did you mean 'partiprompts'?"),
    ({"prompt_sample": {"n": 0}}, "prompt_sample.n must be a whole number ≥ 1, got 0"),
    ({"prompt_sample": {"by": "category"}}, "prompt_sample needs n"),
    ({"prompt_sample": {"n": 5, "bye": "category"}}, "unknown prompt_sample key 'bye': did you mean 'by'?"),
    ({"prompt_sample": {"n": 5, "by": "category", "allocation": "neyman"}},
     "unknown prompt_sample.allocation 'neyman': use proportional or equal"),
    ({"prompt_sample": {"n": 5, "allocation": "equal"}}, "needs prompt_sample.by"),
    ({"prompt_sample": {"n": 5, "seed": -1}}, "prompt_sample.seed must be a whole number ≥ 0"),
    ({"prompt_sample": [5]}, "prompt_sample must be a table"),
    ({"prompt_columns": {"text": "caption"}}, "unknown prompt_columns role 'text'"),
    ({"prompt_columns": "prompt"}, "prompt_columns must be role=column pairs"),
    ({"prompt_columns": {"prompt": "x"}, "prompt_format": "hpdv2"}, "prompt_columns names columns, but"),
    ({"prompts": "hf:a/b/c"}, "is not a Hugging Face dataset name: write hf:NAME or hf:NAME:SPLIT"),
    ({"prompts": "hf:a/b", "prompt_format": "csv"}, "prompt_format 'csv' reads files, but prompts is 'hf:a/b'"),
    ({"prompt_format": "hf"}, 'prompt_format "hf" needs prompts = "hf:NAME[:SPLIT]"'),
])
def test_bad_config_values_are_one_line_errors(values, fragment):
    with pytest.raises(EvalkitError) as info:
        make_config(values)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_flags_reach_the_config_and_bad_ones_exit_2(tmp_path, evalkit_cli):
    suite = write_parti(tmp_path / "p.tsv")
    base = ["run", "--prompts", str(suite), "--out", str(tmp_path / "run"), "--steps", "1,2", "--seeds", "1",
            "--schedulers", "euler", "--reference-steps", "4", "--no-certify", "--metrics", "ssim", "--no-progress"]
    code, out, err = evalkit_cli([*base, "--prompt-sample", "n=2,by=category,allocation=equal"])
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "prompt_sample.json").read_text())
    assert record["chosen"] == 2 and record["allocation"] == "equal"
    code, out, err = evalkit_cli([*base, "--prompt-sample", "n=2,by=style"])
    assert code == 2 and err.strip().count("\n") == 0 and "prompt_sample.by 'style' is not a column" in err
    code, out, err = evalkit_cli([*base, "--prompt-format", "geneval"])
    assert code == 2 and "p.tsv is not valid JSON" in err
    code, out, err = evalkit_cli([*base, "--prompt-columns", "prompt=Text"])
    assert code == 2 and "has no column 'Text' for prompt_columns.prompt" in err
