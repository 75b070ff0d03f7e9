"""Faults and hostile input: each ends in one line on stderr (exit 2) naming the file and the fix, or in a
gate that fails (exit 1); never a traceback, and nothing already rendered is lost."""
from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from expect import one_line_error

import evalkit
from evalkit.metrics import METRICS
from evalkit.metrics.base import MetricOptions
from evalkit.stages.features import FeatureStore
from evalkit.store.files import read_json, sha256_of
from evalkit.store.folder import RunDir

TESTS = Path(__file__).resolve().parent
SWEEP = {"schedulers": ["euler", "dpmpp_2m"], "steps": [2, 4], "seeds": 2, "reference_steps": 20, "metrics": ["ssim"],
         "device": "cpu"}
NAN_MODEL = "python:plugins.broken_models:nan_pipeline"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a ginger cat sleeping on a wool blanket\nthree red apples on a wooden table\n")
    return str(path)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, prompts) -> Path:
    """A small scored run (16 sweep images + 4 references), copied by each test that spoils it."""
    return evalkit.run({**SWEEP, "prompts": prompts, "out": str(tmp_path_factory.mktemp("scored") / "run")}).dir


@pytest.fixture
def run_copy(scored, tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(scored, folder)
    return folder


def sweep_args(prompts: str, out: Path) -> list[str]:
    """SWEEP as flags (a flag given again later wins)."""
    return ["--prompts", prompts, "--out", str(out), "--schedulers", ",".join(SWEEP["schedulers"]),
            "--steps", ",".join(map(str, SWEEP["steps"])), "--seeds", str(SWEEP["seeds"]),
            "--reference-steps", str(SWEEP["reference_steps"]), "--metrics", "ssim", "--device", "cpu", "--no-progress"]


# ---------------------------------------------------------------------------------------------------- locking


def test_two_runs_half_a_second_apart_the_second_is_refused_and_the_first_completes(tmp_path, prompts):
    """The first run renders until the test lets it go (its model waits on a file), so the second always
    meets a run in progress, with temp files of its batch in the folder."""
    out, hold = tmp_path / "run", tmp_path / "hold"
    hold.touch()
    args = [sys.executable, "-m", "evalkit", "run", *sweep_args(prompts, out), "--batch-size", "2",
            "--model", "python:plugins.broken_models:held_pipeline"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "EVALKIT_HOLD_FILE": str(hold)}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / ".lock").is_file() and (out / ".lock").read_text()):
        time.sleep(0.05)  # imports take seconds on a busy machine: start the second once the first holds the lock
    time.sleep(0.5)
    second = subprocess.run(args, capture_output=True, text=True, env=env)
    hold.unlink()
    out_first, err_first = first.communicate(timeout=600)
    one_line_error(second.returncode, second.stderr, "is in use by another evalkit process", "--out")
    assert first.returncode == 0, err_first
    assert "Traceback" not in err_first and "report:" in out_first
    table = pd.read_parquet(out / "images.parquet")
    assert len(table) == 2 * 2 * 2 * 2 + 2 * 2 + 2 * 2  # sweep, references, their checks
    assert all(sha256_of(out / p) == sha for p, sha in zip(table.path, table.sha256))


# ------------------------------------------------------------------------------------------ corrupt tables


@pytest.mark.parametrize("name, spoil, fragment", [
    ("images.parquet", b"PAR1 not really", "images.parquet is corrupt or not a table"),
    ("jobs.parquet", b"", "jobs.parquet is corrupt or not a table"),
    ("scores.parquet", b"\x00" * 64, "scores.parquet is corrupt or not a table"),
    ("set_scores.parquet", pd.DataFrame({"other": [1]}).to_parquet(), "set_scores.parquet is not an evalkit table"),
    ("summary.json", b'{"warnings": [', "summary.json is corrupt"),
])
def test_a_corrupt_table_or_summary_is_one_line_naming_the_file_and_the_fix(run_copy, evalkit_cli, name, spoil,
                                                                           fragment):
    (run_copy / name).write_bytes(spoil)
    fix = {"images.parquet": "delete it and rerun `evalkit render", "jobs.parquet": "rerun `evalkit render",
           "summary.json": "rescore with `evalkit score"}.get(name, "rescore with `evalkit score")
    for command in (["report", str(run_copy)], ["gate", "--baseline", str(run_copy), "--candidate", str(run_copy)]):
        code, _, err = evalkit_cli(command)
        one_line_error(code, err, fragment, fix)


def test_tables_a_stage_writes_are_rebuilt_by_rerunning_it(run_copy, evalkit_cli):
    before = pd.read_parquet(run_copy / "set_scores.parquet")
    for name in ("jobs.parquet", "scores.parquet", "set_scores.parquet", "summary.json"):
        (run_copy / name).write_bytes(b"garbage")
    code, out, err = evalkit_cli(["score", str(run_copy)])
    assert code == 0, err
    assert "rendered 0 new image(s)" in out
    pd.testing.assert_frame_equal(pd.read_parquet(run_copy / "set_scores.parquet"), before)
    assert evalkit_cli(["report", str(run_copy)])[0] == 0


def test_a_corrupt_images_table_names_its_fix_and_the_fix_works(run_copy, evalkit_cli):
    (run_copy / "images.parquet").write_bytes(b"PAR1 garbage")
    code, _, err = evalkit_cli(["render", str(run_copy)])
    one_line_error(code, err, "images.parquet is corrupt", "delete it and rerun `evalkit render")
    (run_copy / "images.parquet").unlink()
    code, out, err = evalkit_cli(["run", str(run_copy / "config.toml"), "--out", str(run_copy)])
    assert code == 0, err
    assert "rendered 24 new image(s)" in out  # 16 sweep + 4 references + their 4 checks


def test_a_corrupt_cache_file_is_recomputed(run_copy, evalkit_cli):
    scores = pd.read_parquet(run_copy / "scores.parquet")
    [cache] = RunDir(run_copy).scores_cache_dir.glob("ssim-*[0-9a-f].json")
    cache.write_bytes(b'{"abc": ')
    code, out, err = evalkit_cli(["score", str(run_copy)])
    assert code == 0, err
    assert "scored new images: ssim 16" in out  # every entry computed again
    pd.testing.assert_frame_equal(pd.read_parquet(run_copy / "scores.parquet"), scores)


def test_torn_or_foreign_journal_lines_are_dropped_and_their_images_rendered_again(run_copy, evalkit_cli):
    table = pd.read_parquet(run_copy / "images.parquet")
    victim = table.iloc[3]
    (run_copy / "images.parquet").write_bytes(table.drop(index=3).to_parquet(index=False))
    with open(run_copy / "images.journal", "wb") as journal:
        journal.write(b'{"key": "torn mid-app')
        journal.write(b"\n[1, 2, 3]\n" + b'{"key": "x", "path": "../../etc/passwd"}\n' + b"\xff\xfe\n")
    code, out, err = evalkit_cli(["run", str(run_copy / "config.toml"), "--out", str(run_copy)])
    assert code == 0, err
    assert "rendered 1 new image(s)" in out  # the row the journal did not hold
    again = pd.read_parquet(run_copy / "images.parquet")
    assert len(again) == len(table) and again.key.is_unique and not (run_copy / "images.journal").exists()
    assert again.set_index("key").loc[victim.key, "sha256"] == victim.sha256  # same seed, same bytes


# --------------------------------------------------------------------------------------------- image integrity


def _other_png(path: Path) -> bytes:
    with Image.open(path) as image:
        flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    flipped.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("spoil", ["truncated", "bit-flipped", "another valid PNG"])
def test_a_changed_png_is_refused_by_report_and_gate_and_rendered_again(run_copy, evalkit_cli, spoil):
    table = pd.read_parquet(run_copy / "images.parquet")
    row = table[table.role == "sweep"].iloc[5]
    path = run_copy / row.path
    data = path.read_bytes()
    spoiled = {"truncated": data[: len(data) // 2],
               "bit-flipped": data[:200] + bytes([data[200] ^ 0x10]) + data[201:],
               "another valid PNG": _other_png(path)}[spoil]
    path.write_bytes(spoiled)
    for command in (["report", str(run_copy)], ["gate", "--baseline", str(run_copy), "--candidate", str(run_copy)]):
        code, _, err = evalkit_cli(command)
        one_line_error(code, err, "no longer match the sha256 in images.parquet", str(path),
                       f"re-render them with `evalkit render {run_copy}`")
    code, out, err = evalkit_cli(["score", str(run_copy)])  # renders what is missing or changed first
    assert code == 0, err
    assert "rendered 1 new image(s)" in out and "re-rendered 1 image(s) whose PNG no longer matched its sha256" in out
    assert path.read_bytes() == data and "scored new images: ssim 0" in out  # the same bytes: cached scores hold
    assert evalkit_cli(["report", str(run_copy)])[0] == 0


# ---------------------------------------------------------------------------------------------- broken images


def test_a_model_returning_nan_fails_the_gate_on_the_broken_images_rule(scored, tmp_path, prompts, evalkit_cli):
    code, out, err = evalkit_cli(["run", *sweep_args(prompts, tmp_path / "nan"), "--model", NAN_MODEL])
    assert code == 0, err
    assert "warning: 24 broken image(s) (non-finite or blank output)" in out  # the checks too
    set_scores = pd.read_parquet(tmp_path / "nan" / "set_scores.parquet")
    assert set_scores.value.isna().all() and (set_scores.n == 0).all() and (set_scores.broken == 4).all()
    assert (set_scores["flags"] == "broken-images").all()
    assert pd.read_parquet(tmp_path / "nan" / "scores.parquet").value.isna().all()  # never scored against each other
    page = (tmp_path / "nan" / "report.html").read_text()
    assert '<dt>broken images</dt><dd><b class="broken">24</b> non-finite or blank' in page
    summary = read_json(tmp_path / "nan" / "summary.json", "")
    assert all(not entry["reached"] and "broken (non-finite or blank) images" in entry["why"]
               for entry in summary["min_steps"]["schedulers"].values())

    code, out, err = evalkit_cli(["gate", "--baseline", str(scored), "--candidate", str(tmp_path / "nan"),
                                  "--junit", str(tmp_path / "j.xml")])
    assert code == 1, err
    failed = [line for line in out.splitlines() if "  FAIL  " in line]
    assert any(line.startswith("broken_images euler ") and "8 of 8 image(s) non-finite or blank" in line
               for line in failed)
    assert any(line.startswith("broken_images references ") for line in failed)
    # relaxed explicitly, the broken-images rule passes (the regressions still fail: nothing was scored)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[broken_images]]\nmax_broken = 100\n[[regression]]\nmetric = "ssim"\nmax_drop = 1.0\n')
    code, out, _ = evalkit_cli(["gate", "--baseline", str(scored), "--candidate", str(tmp_path / "nan"),
                                "--rules", str(rules)])
    lines = out.splitlines()
    assert code == 1 and any(line.startswith("broken_images euler ") and "  PASS  " in line for line in lines)
    assert all("broken_images" not in line for line in lines if "  FAIL  " in line)


def test_a_guidance_that_overflows_gives_broken_images_and_a_failing_gate(scored, tmp_path, prompts, evalkit_cli):
    # 1e308 is a finite, valid guidance whose product with the model's output overflows (as --guidance inf does)
    code, out, err = evalkit_cli(["run", *sweep_args(prompts, tmp_path / "huge"), "--guidance", "1e308"])
    assert code == 0, err
    flags = pd.read_parquet(tmp_path / "huge" / "images.parquet")["flags"]
    assert (flags == "nan,blank").all()
    rules = tmp_path / "rules.toml"  # the same guidance is required for a comparison: gate on bands + broken rule
    rules.write_text('[[band]]\nmetric = "ssim"\nscheduler = "*"\nsteps = "*"\nlo = 0.0\nhi = 1.0\n')
    code, out, err = evalkit_cli(["gate", "--candidate", str(tmp_path / "huge"), "--rules", str(rules),
                                  "--thresholds-only"])
    assert code == 1, err
    assert any(line.startswith("broken_images dpmpp_2m ") and "  FAIL  " in line for line in out.splitlines())


def test_a_gate_that_would_compare_nothing_is_refused(tmp_path, prompts, evalkit_cli):
    """Every swept scheduler stochastic: "*" regressions skip their convergence columns, min steps never reached."""
    for name in ("base", "cand"):
        code, _, err = evalkit_cli(["run", *sweep_args(prompts, tmp_path / name), "--schedulers", "euler_a,dpm2_a"])
        assert code == 0, err
    code, out, err = evalkit_cli(["gate", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "cand")])
    one_line_error(code, err, "the gate compared nothing", "gate them on fid/kid or clip_score")


@pytest.mark.parametrize("factory, fragment", [
    ("short_pipeline", "returned 1 image(s) for a batch of 2 prompt(s)"),
    ("small_pipeline", "returned a 32x32 image where 64x64 was asked"),
])
def test_a_plugin_breaking_the_output_contract_is_one_line(tmp_path, prompts, evalkit_cli, factory, fragment):
    code, _, err = evalkit_cli(["run", *sweep_args(prompts, tmp_path / "run"), "--batch-size", "2", "--size", "64",
                                "--model", f"python:plugins.broken_models:{factory}"])
    one_line_error(code, err, fragment, f"python:plugins.broken_models:{factory}")


# ------------------------------------------------------------------------------------- disk full, read-only


def _finished(folder: Path) -> dict[str, str]:
    """key -> sha256 of every image the folder's table (and journal) records, each checked on disk."""
    rows = RunDir(folder).read_images()
    assert all(sha256_of(folder / p) == sha for p, sha in zip(rows.path, rows.sha256))
    return dict(zip(rows.key, rows.sha256))


def test_disk_full_mid_run_is_one_line_and_a_rerun_keeps_what_was_written(tmp_path, prompts, evalkit_cli, monkeypatch):
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(1)
        if len(calls) >= 12:  # config, prompts + their sample record, jobs, then two batches of two PNGs + their
            # journal lines, then full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    out = tmp_path / "run"
    monkeypatch.setattr(os, "write", write)
    code, _, err = evalkit_cli(["run", *sweep_args(prompts, out), "--batch-size", "2"])
    monkeypatch.setattr(os, "write", real_write)
    one_line_error(code, err, "No space left on device", "free disk space, then rerun the same command")
    kept = _finished(out)
    assert len(kept) == 4
    code, out_text, err = evalkit_cli(["run", *sweep_args(prompts, out), "--batch-size", "2"])
    assert code == 0, err
    assert "rendered 20 new image(s); 24 planned" in out_text
    assert kept.items() <= _finished(out).items()


def test_a_run_folder_made_read_only_mid_run_is_one_line_and_loses_nothing(tmp_path, prompts, evalkit_cli,
                                                                            monkeypatch):
    out = tmp_path / "run"
    real_mkstemp, made = tempfile.mkstemp, []

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(out):
            made.append(dir)
            if len(made) == 9:  # config, prompts + their sample record, jobs, two batches of two PNGs; then the
                for folder in (out / "images", out):  # folder goes read-only
                    folder.chmod(0o555)
            if len(made) >= 9 and os.geteuid() == 0:  # root writes anywhere: fail as the OS would for a user
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, _, err = evalkit_cli(["run", *sweep_args(prompts, out), "--batch-size", "2"])
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    for folder in (out / "images", out):
        folder.chmod(0o755)
    one_line_error(code, err, "Permission denied", "writable, then rerun the same command")
    kept = _finished(out)
    assert len(kept) == 4
    code, out_text, err = evalkit_cli(["run", *sweep_args(prompts, out), "--batch-size", "2"])
    assert code == 0, err
    assert "rendered 20 new image(s)" in out_text and kept.items() <= _finished(out).items()


def test_a_corrupt_feature_cache_entry_is_computed_again(tmp_path):
    """Set-metric features are a cache: a torn or foreign .npy is recomputed, a whole one is reused."""
    class Recorder:  # an executor that records what it is asked to compute
        workers, asked = 1, []

        def map(self, factory, method, items):
            for shas, _ in items:
                self.asked += shas
                yield shas, np.full((len(shas), 4), 7.0)

    files = []
    for i, sha in enumerate(["whole", "torn", "foreign", "missing"]):
        path = tmp_path / f"{sha}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        files.append((sha, path))
    store = FeatureStore(tmp_path / "features")
    (tmp_path / "features").mkdir()
    np.save(store.path("whole"), np.arange(4.0))
    store.path("torn").write_bytes(store.path("whole").read_bytes()[:40])
    np.save(store.path("foreign"), np.array(["not", "features"]))
    recorder = Recorder()
    assert store.compute(METRICS.get("fid"), MetricOptions(batch_size=8), files, recorder) == 3
    assert sorted(recorder.asked) == ["foreign", "missing", "torn"]
    assert store.load(["whole", "torn"]).tolist() == [[0.0, 1.0, 2.0, 3.0], [7.0] * 4]
