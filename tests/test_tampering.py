"""A hostile tester's run folder: integrity that trusts no path from a table, and tables or a summary with the right
names but the wrong types. Every reader (report, gate, recommend, compare) answers one line on stderr naming the
file and the fix (exit 2, never a traceback); where recovery is documented (render renders a missing, changed or
foreign image again) the same command recovers, with the very bytes the image had."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from expect import one_line

import evalkit
from evalkit.store.folder import RunDir

SWEEP = {"schedulers": ["euler", "dpmpp_2m_karras"], "steps": [2, 4], "seeds": 2, "reference_steps": 10,
         "metrics": ["ssim"], "size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a ginger cat sleeping on a wool blanket\nthree red apples on a wooden table\n")
    return str(path)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, prompts) -> Path:
    """A tiny sweep, scored (4 columns x 4 prompt+seed units + 4 references + their 4 checks); copied by each test that spoils it."""
    return evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path_factory.mktemp("scored") / "run")}).dir


@pytest.fixture
def run_copy(scored, tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(scored, folder)
    return folder


def readers(folder: Path, baseline: Path, tmp_path: Path) -> list[list[str]]:
    """Every command that reads a scored run folder (through ScoredRun)."""
    return [["report", str(folder)], ["gate", "--baseline", str(baseline), "--candidate", str(folder)],
            ["recommend", str(folder)], ["compare", str(baseline), str(folder), "--out", str(tmp_path / "c.html")]]


def every_reader_refuses(evalkit_cli, folder: Path, baseline: Path, tmp_path: Path, *fragments: str) -> None:
    for command in readers(folder, baseline, tmp_path):
        one_line(evalkit_cli(command), *fragments)


def images(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "images.parquet")


def png(folder: Path, key: str) -> Path:
    return folder / "images" / f"{key}.png"


def intact(folder: Path) -> bool:
    """Every row of images.parquet hashes to its sha256, each checked at images/<key>.png."""
    table = images(folder)
    return all(png(folder, k).is_file() and hashlib.sha256(png(folder, k).read_bytes()).hexdigest() == sha
               for k, sha in zip(table.key, table.sha256))


def rerun(folder: Path) -> list[str]:
    """`evalkit run` on the folder's own config.toml, with nothing else given."""
    return ["run", str(folder / "config.toml"), "--no-progress"]


# ------------------------------------------------------------------------------ class A: paths come from keys


def test_a_row_whose_path_leaves_images_is_refused_and_its_image_rendered_again(run_copy, scored, tmp_path,
                                                                             evalkit_cli):
    """The row of one image names ../elsewhere.png (an intact copy of its PNG) while images/<key>.png was replaced
    by another image: the replacement used to go unnoticed (the hash was checked on the file the row named)."""
    table = images(run_copy)
    victim, other = table[table.role == "sweep"].iloc[0], table[table.role == "sweep"].iloc[1]
    original = png(run_copy, victim.key).read_bytes()
    (tmp_path / "elsewhere.png").write_bytes(original)
    table.loc[table.key == victim.key, "path"] = "../elsewhere.png"
    table.to_parquet(run_copy / "images.parquet", index=False)
    png(run_copy, victim.key).write_bytes(png(run_copy, other.key).read_bytes())
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, f"{run_copy / 'images.parquet'}: the row of image "
                         f"{victim.key} names '../elsewhere.png', not images/{victim.key}.png",
                         f"re-render with `evalkit render {run_copy}`")
    code, out, err = evalkit_cli(rerun(run_copy))
    assert code == 0, err
    assert "rendered 1 new image(s)" in out and "scored new images: ssim 0" in out  # same bytes: cached scores hold
    assert png(run_copy, victim.key).read_bytes() == original and intact(run_copy)
    assert images(run_copy).set_index("key").loc[victim.key, "path"] == f"images/{victim.key}.png"
    assert evalkit_cli(["report", str(run_copy)])[0] == 0


def test_a_row_pointing_at_another_keys_png_is_refused_and_rendered_again(run_copy, scored, tmp_path, evalkit_cli):
    """A row borrowing another image's path and sha256 (and its PNG copied over its own) is not this image."""
    table = images(run_copy)
    victim, other = table[table.role == "reference"].iloc[0], table[table.role == "sweep"].iloc[3]
    original = png(run_copy, victim.key).read_bytes()
    table.loc[table.key == victim.key, ["path", "sha256"]] = [other.path, other.sha256]
    table.to_parquet(run_copy / "images.parquet", index=False)
    png(run_copy, victim.key).write_bytes(png(run_copy, other.key).read_bytes())
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "images.parquet: the row of image "
                         f"{victim.key} names 'images/{other.key}.png'", "it is not an image of this folder")
    code, out, err = evalkit_cli(["score", str(run_copy), "--no-progress"])
    assert code == 0, err
    assert "rendered 1 new image(s)" in out
    assert png(run_copy, victim.key).read_bytes() == original and intact(run_copy)
    assert evalkit_cli(["gate", "--baseline", str(scored), "--candidate", str(run_copy)])[0] == 0


@pytest.mark.parametrize("role", ["sweep", "reference"])
def test_a_truncated_png_is_rendered_again_by_run_on_the_same_config(run_copy, evalkit_cli, role):
    key = images(run_copy).query("role == @role").key.iloc[1]
    original = png(run_copy, key).read_bytes()
    png(run_copy, key).write_bytes(original[: len(original) // 2])
    one_line(evalkit_cli(["report", str(run_copy)]), "no longer match the sha256 in images.parquet",
                   str(png(run_copy, key)), f"re-render them with `evalkit render {run_copy}`")
    code, out, err = evalkit_cli(rerun(run_copy))
    assert code == 0, err
    assert "re-rendered 1 image(s) whose PNG no longer matched its sha256" in out
    assert png(run_copy, key).read_bytes() == original and intact(run_copy)


def test_a_png_truncated_while_its_row_is_only_in_the_journal(run_copy, scored, tmp_path, evalkit_cli):
    """A killed render leaves its last rows in images.journal: they are checked like the table's."""
    table = images(run_copy)
    table.iloc[:12].to_parquet(run_copy / "images.parquet", index=False)
    with open(run_copy / "images.journal", "w") as journal:
        for row in json.loads(table.iloc[12:].to_json(orient="records")):
            journal.write(json.dumps(row) + "\n")
    key = table.key.iloc[15]
    original = png(run_copy, key).read_bytes()
    png(run_copy, key).write_bytes(original[:100])
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "no longer match the sha256 in images.parquet",
                         str(png(run_copy, key)))
    code, out, err = evalkit_cli(rerun(run_copy))
    assert code == 0, err
    assert "re-rendered 1 image(s)" in out and not (run_copy / "images.journal").exists()
    assert png(run_copy, key).read_bytes() == original and intact(run_copy) and len(images(run_copy)) == len(table)


def test_run_on_a_copied_folders_config_works_on_the_copy(scored, tmp_path, evalkit_cli):
    """config.toml names its own folder (out = "."): `evalkit run COPY/config.toml` used to resume the folder it was
    copied from, leaving the copy's truncated PNG behind with exit 0."""
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(scored, copy)
    key = images(copy).key.iloc[2]
    original = png(copy, key).read_bytes()
    png(copy, key).write_bytes(original[:64])
    before = {p.name: p.stat().st_mtime_ns for p in (scored / "images").iterdir()}
    code, out, err = evalkit_cli(rerun(copy))
    assert code == 0, err
    assert f"run folder: {copy}" in out and "re-rendered 1 image(s)" in out
    assert png(copy, key).read_bytes() == original and intact(copy)
    assert {p.name: p.stat().st_mtime_ns for p in (scored / "images").iterdir()} == before


@pytest.mark.parametrize("role", ["reference", "sweep"])
def test_a_deleted_png_is_one_line_for_readers_and_rendered_again_by_render(run_copy, scored, tmp_path, evalkit_cli,
                                                                          role):
    """Readers used to drop the image silently (and recommend, report and gate answered without it)."""
    key = images(run_copy).query("role == @role").key.iloc[0]
    original = png(run_copy, key).read_bytes()
    png(run_copy, key).unlink()
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "1 image(s) of the current sweep are missing",
                         str(png(run_copy, key)), f"re-render with `evalkit render {run_copy}`",
                         f"rescore with `evalkit score {run_copy}`")
    code, out, err = evalkit_cli(["render", str(run_copy), "--no-progress"])
    assert code == 0, err
    assert "rendered 1 new image(s)" in out and png(run_copy, key).read_bytes() == original
    code, out, err = evalkit_cli(["recommend", str(run_copy)])
    assert code == 0 and out.startswith("recommend: "), err


def test_a_row_missing_from_images_parquet_is_one_line_for_readers(run_copy, scored, tmp_path, evalkit_cli):
    table = images(run_copy)
    key = table.key.iloc[6]
    table[table.key != key].to_parquet(run_copy / "images.parquet", index=False)
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "1 image(s) of the current sweep are missing",
                         str(png(run_copy, key)))


def test_jobs_naming_a_path_instead_of_a_key_is_one_line(run_copy, scored, tmp_path, evalkit_cli):
    jobs = pd.read_parquet(run_copy / "jobs.parquet")
    jobs.loc[0, "key"] = "../../config"
    jobs.to_parquet(run_copy / "jobs.parquet", index=False)
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "jobs.parquet: column 'key' holds '../../config', "
                         "not an image key", f"rerun `evalkit render {run_copy}` to rewrite it")


def test_a_row_with_an_unknown_role_is_refused_and_rendered_again(run_copy, scored, tmp_path, evalkit_cli):
    table = images(run_copy)
    key = table.key.iloc[0]
    table.loc[0, "role"] = "banana"
    table.to_parquet(run_copy / "images.parquet", index=False)
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, f"the row of image {key} has role 'banana'")
    code, out, err = evalkit_cli(["render", str(run_copy), "--no-progress"])
    assert code == 0 and "rendered 1 new image(s)" in out, err
    assert images(run_copy).set_index("key").loc[key, "role"] == "sweep" and intact(run_copy)


def test_journal_lines_with_the_right_columns_but_wrong_types_are_dropped(run_copy, evalkit_cli):
    """A journal row is trusted only if every value has its column's type (and its path is its key's)."""
    table = images(run_copy)
    keys = list(table.key.iloc[:3])
    rows = json.loads(table.iloc[:3].to_json(orient="records"))
    rows[0]["steps"], rows[1]["sha256"], rows[2]["path"] = "2", 7, f"images/{keys[0]}.png"
    table.iloc[3:].to_parquet(run_copy / "images.parquet", index=False)
    (run_copy / "images.journal").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = evalkit_cli(rerun(run_copy))
    assert code == 0, err
    assert "rendered 3 new image(s)" in out and intact(run_copy)
    again = images(run_copy).set_index("key")
    assert list(again.loc[keys, "sha256"]) == list(table.set_index("key").loc[keys, "sha256"])


# ------------------------------------------------------------------------ config.toml edited after scoring


def test_config_edited_after_scoring_is_refused_until_rescored(run_copy, scored, tmp_path, evalkit_cli):
    config = run_copy / "config.toml"
    config.write_text(config.read_text().replace("steps = [2, 4]", "steps = [2, 3]"))
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path,
                         f"{config} no longer matches the config the run was scored with (steps [2, 3], scored with "
                         "[2, 4])", f"rescore with `evalkit score {run_copy}` (it re-plans from config.toml), or "
                         "restore config.toml")
    code, out, err = evalkit_cli(["score", str(run_copy), "--no-progress"])
    assert code == 0, err
    assert "rendered 8 new image(s)" in out  # 3 steps: 2 schedulers x 2 prompts x 2 seeds
    code, out, err = evalkit_cli(["gate", "--baseline", str(scored), "--candidate", str(run_copy)])
    assert code in (0, 1) and "Traceback" not in err, err  # judged again: only the columns both runs hold


@pytest.mark.parametrize("edit, fragment", [
    (lambda text: text.replace('metrics = ["ssim"]', 'metrics = ["ssim", "psnr"]'), "metrics [\"ssim\", \"psnr\"]"),
    (lambda text: text.replace("reference_steps = 10", "reference_steps = 12"), "reference_steps 12, scored with 10"),
    (lambda text: text.replace("prompts = ", 'prompts = "/elsewhere/p.txt"\n# was '), 'prompts "/elsewhere/p.txt"'),
])
def test_other_config_edits_are_refused(run_copy, scored, tmp_path, evalkit_cli, edit, fragment):
    config = run_copy / "config.toml"
    config.write_text(edit(config.read_text()))
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "config.toml no longer matches", fragment)


def test_a_summary_recording_no_config_fields_is_refused(run_copy, scored, tmp_path, evalkit_cli):
    summary = json.loads((run_copy / "summary.json").read_text())
    summary["config"] = {}
    (run_copy / "summary.json").write_text(json.dumps(summary))
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, "config.toml no longer matches the config the run "
                         'was scored with (schedulers ["euler", "dpmpp_2m_karras"], scored with (not recorded)')


def test_a_moved_folder_or_an_execution_setting_changed_still_reads(scored, tmp_path, evalkit_cli):
    """What cannot change a result is not compared: the folder's own place (`out`), batch size, device, backend."""
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(scored, moved)
    config = moved / "config.toml"
    config.write_text(config.read_text().replace("batch_size = 8", "batch_size = 3"))
    code, _, err = evalkit_cli(["gate", "--baseline", str(scored), "--candidate", str(moved)])
    assert code == 0, err
    assert evalkit_cli(["report", str(moved)])[0] == 0


# ---------------------------------------------------------------- class B: right columns, wrong types


def _retype(column: str, how):
    return lambda table: table.assign(**{column: how(table[column])})


RESCORE = "rescore with `evalkit score"
RERENDER = "delete it and rerun `evalkit render"


@pytest.mark.parametrize("name, spoil, fragment, fix", [
    ("images.parquet", _retype("steps", lambda c: c.astype(str)), "column 'steps' holds text ('2') where a whole "
     "number is expected", RERENDER),
    ("images.parquet", _retype("sha256", lambda c: range(len(c))), "column 'sha256' holds a whole number (0) where "
     "text is expected", RERENDER),
    ("images.parquet", _retype("seconds", lambda c: c.astype(str)), "column 'seconds' holds text", RERENDER),
    ("images.parquet", _retype("nfe", lambda c: c + 0.5), "column 'nfe' holds a number (", RERENDER),
    ("jobs.parquet", _retype("key", lambda c: range(len(c))), "column 'key' holds a whole number (0)",
     "rerun `evalkit render"),
    ("scores.parquet", _retype("value", lambda c: c.astype(str)), "column 'value' holds text (", RESCORE),
    ("scores.parquet", _retype("metric", lambda c: [True] * len(c)), "column 'metric' holds a boolean (true)",
     RESCORE),
    ("set_scores.parquet", _retype("steps", lambda c: c.astype(str)), "column 'steps' holds text ('2')", RESCORE),
    ("set_scores.parquet", _retype("value", lambda c: c.astype(str)), "column 'value' holds text", RESCORE),
    ("set_scores.parquet", _retype("n", lambda c: c / 3), "column 'n' holds a number (", RESCORE),
    ("set_scores.parquet", _retype("broken", lambda c: ["x"] * len(c)), "column 'broken' holds text ('x')", RESCORE),
])
def test_a_table_with_a_wrongly_typed_column_is_one_line(run_copy, scored, tmp_path, evalkit_cli, name, spoil,
                                                         fragment, fix):
    spoil(pd.read_parquet(run_copy / name)).to_parquet(run_copy / name, index=False)
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, f"{run_copy / name}: {fragment}", fix)


def test_a_wrongly_typed_images_table_is_one_line_for_render_too_and_its_fix_works(run_copy, evalkit_cli):
    table = images(run_copy)
    table.assign(steps=table.steps.astype(str)).to_parquet(run_copy / "images.parquet", index=False)
    one_line(evalkit_cli(rerun(run_copy)), "images.parquet: column 'steps' holds text ('2')",
                   f"delete it and rerun `evalkit render {run_copy}`")
    (run_copy / "images.parquet").unlink()
    code, out, err = evalkit_cli(["render", str(run_copy), "--no-progress"])
    assert code == 0 and "rendered 24 new image(s)" in out, err
    assert sorted(images(run_copy).sha256) == sorted(table.sha256)  # every image again, byte for byte


def test_wrongly_typed_scores_are_rebuilt_by_rescoring(run_copy, evalkit_cli):
    before = pd.read_parquet(run_copy / "set_scores.parquet")
    scores = pd.read_parquet(run_copy / "scores.parquet")
    scores.assign(value=scores.value.astype(str)).to_parquet(run_copy / "scores.parquet", index=False)
    before.assign(steps=before.steps.astype(str)).to_parquet(run_copy / "set_scores.parquet", index=False)
    code, out, err = evalkit_cli(["score", str(run_copy), "--no-progress"])
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(run_copy / "set_scores.parquet"), before)
    assert evalkit_cli(["recommend", str(run_copy)])[0] == 0


def _set(path: str, value):
    """A summary.json edit: `path` is dot-separated ("min_steps.schedulers.euler")."""
    def spoil(summary: dict) -> None:
        *parents, last = path.split(".")
        node = summary
        for part in parents:
            node = node[part]
        node[last] = value
    return spoil


@pytest.mark.parametrize("spoil, fragment", [
    (_set("min_steps", "x"), "field 'min_steps' holds text ('x') where an object is expected"),
    (_set("metrics", []), "field 'metrics' holds a list ([]) where an object is expected"),
    (_set("broken_images", 3), "field 'broken_images' holds a whole number (3) where an object is expected"),
    (_set("warnings", "x"), "field 'warnings' holds text ('x') where a list is expected"),
    (_set("warnings", ["fine", 4]), "field 'warnings[1]' holds a whole number (4) where text is expected"),
    (_set("min_steps.schedulers.euler", "x"), "field 'min_steps.schedulers.euler' holds text ('x') where an object"),
    (_set("min_steps.schedulers.dpmpp_2m_karras.min_steps", "4"),
     "field 'min_steps.schedulers.dpmpp_2m_karras.min_steps' holds text ('4') where a whole number or null"),
    (_set("min_steps.schedulers.euler.reached", "no"), "field 'min_steps.schedulers.euler.reached' holds text"),
    (_set("min_steps.tolerances.ssim", None), "field 'min_steps.tolerances.ssim' holds an empty value where a number"),
    (_set("metrics.ssim", "x"), "field 'metrics.ssim' holds text ('x') where an object is expected"),
    (_set("metrics.ssim.higher_is_better", "yes"), "field 'metrics.ssim.higher_is_better' holds text ('yes')"),
    (_set("metrics.ssim.perfect", "1"), "field 'metrics.ssim.perfect' holds text ('1') where a number or null"),
    (_set("skipped_metrics", ["lpips"]), "field 'skipped_metrics' holds a list (['lpips'])"),
    (_set("broken_images", {"euler@2": "many"}), "field 'broken_images.euler@2' holds text ('many')"),
    (_set("render", {"seconds": "slow"}), "field 'render.seconds' holds text ('slow')"),
    (_set("config", "x"), "field 'config' holds text ('x') where the config the run was scored with is expected"),
    (lambda summary: summary.pop("config"), "field 'config' holds nothing where the config the run was scored"),
])
def test_a_summary_field_of_the_wrong_type_is_one_line(run_copy, scored, tmp_path, evalkit_cli, spoil, fragment):
    summary = json.loads((run_copy / "summary.json").read_text())
    spoil(summary)
    (run_copy / "summary.json").write_text(json.dumps(summary))
    every_reader_refuses(evalkit_cli, run_copy, scored, tmp_path, f"{run_copy / 'summary.json'}: {fragment}",
                         f"rescore with `evalkit score {run_copy}`")


def test_a_spoiled_baseline_is_refused_as_well(run_copy, scored, evalkit_cli):
    summary = json.loads((run_copy / "summary.json").read_text())
    summary["min_steps"]["schedulers"]["euler"]["knee"] = {"ssim": "steep"}
    (run_copy / "summary.json").write_text(json.dumps(summary))
    one_line(evalkit_cli(["gate", "--baseline", str(run_copy), "--candidate", str(scored)]),
                   "field 'min_steps.schedulers.euler.knee.ssim' holds text ('steep')")


def test_an_image_file_is_named_by_its_key_alone(run_copy):
    """RunDir.image_path is the one place a PNG is named; what is not a content key never names a file."""
    folder = RunDir(run_copy)
    key = images(run_copy).key.iloc[0]
    assert folder.image_path(key) == run_copy / "images" / f"{key}.png"
    for bad in ("../../etc/passwd", "images/x", "", "ABCDEF0123456789"):
        with pytest.raises(ValueError):
            folder.image_path(bad)
