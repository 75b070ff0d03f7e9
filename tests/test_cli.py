"""The command line: each bad input gives one line naming the problem and the fix, exit 2, no traceback."""
import os
import subprocess
import sys

import pytest


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n")
    return str(path)


def bad_inputs(tmp_path, prompts):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("steps = [1, 2\n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("stepz = [1]\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    base = ["--prompts", prompts, "--out", str(tmp_path / "run"), "--steps", "1,2", "--seeds", "1"]
    return {
        "missing toml": ([str(tmp_path / "nope.toml")], "config file"),
        "invalid toml": ([str(bad_toml)], "is not valid TOML"),
        "unknown key": ([str(unknown_key)], "unknown key 'stepz'"),
        "unknown scheduler": ([*base, "--schedulers", "eulr"], "unknown scheduler 'eulr': did you mean 'euler'?"),
        "incompatible scheduler": ([*base, "--schedulers", "flow_euler"], "can't sample builtin:mixture"),
        "steps zero": ([*base, "--steps", "0,4"], "steps must be positive integers, got '0'"),
        "steps not integers": ([*base, "--steps", "2.5"], "steps must be positive integers, got '2.5'"),
        "seeds < 1": ([*base, "--seeds", "0"], "seeds must be at least 1"),
        "empty prompt file": ([*base, "--prompts", str(empty)], "empty prompt file"),
        "missing model folder": ([*base, "--model", str(tmp_path / "no-model")], "model folder"),
        "hub id offline": ([*base, "--model", "nobody/no-such-model"], "is not in the Hugging Face cache"),
        "malformed python spec": ([*base, "--model", "python:just_a_module"], "malformed model spec"),
        "output not writable": ([*base, "--out", str(read_only / "run")], "is not writable"),
    }


CASES = ["missing toml", "invalid toml", "unknown key", "unknown scheduler", "incompatible scheduler", "steps zero",
         "steps not integers", "seeds < 1", "empty prompt file", "missing model folder", "hub id offline",
         "malformed python spec", "output not writable"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, prompts, evalkit_cli):
    if case == "output not writable" and os.geteuid() == 0:
        # root writes anywhere: point --out under a regular file instead, which no one can create
        blocker = tmp_path / "file"
        blocker.write_text("")
        args, fragment = ["--prompts", prompts, "--out", str(blocker / "run")], "is not writable"
    else:
        args, fragment = bad_inputs(tmp_path, prompts)[case]
    code, out, err = evalkit_cli(["run", *args])
    assert code == 2
    assert err.startswith("error: ") and fragment in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_flag_is_a_usage_error(evalkit_cli):
    code, _, err = evalkit_cli(["run", "--stepz", "4"])
    assert code == 2 and "No such option" in err


def test_bad_input_after_a_run_loses_nothing(tmp_path, prompts, evalkit_cli):
    out = tmp_path / "run"
    args = ["run", "--prompts", prompts, "--out", str(out), "--steps", "1,2", "--seeds", "1", "--no-progress"]
    assert evalkit_cli(args)[0] == 0
    before = sorted(p.name for p in (out / "images").iterdir())
    assert evalkit_cli([*args, "--schedulers", "euler,flow_euler"])[0] == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == before
    code, stdout, _ = evalkit_cli(args)
    assert code == 0 and "rendered 0 new image(s)" in stdout


def test_console_script_lists_schedulers_and_reports_errors_without_traceback(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "evalkit", "schedulers"], capture_output=True, text=True)
    assert listing.returncode == 0 and "DPM++ 2M Karras" in listing.stdout and "flow_euler" in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "evalkit", "run", "--steps", "-3"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_score_stage_shows_a_bar_per_metric_for_the_images_it_computes(tmp_path, prompts, evalkit_cli):
    """The score stage can take minutes on real backbones: each metric shows how far it is; a warm rerun shows none."""
    out = tmp_path / "run"
    args = ["run", "--prompts", prompts, "--out", str(out), "--steps", "1,2", "--seeds", "1", "--metrics", "ssim,psnr"]
    code, _, err = evalkit_cli(args)
    assert code == 0
    assert "score ssim" in err and "score psnr" in err, err
    code, _, err = evalkit_cli(args)
    assert code == 0 and "score ssim" not in err and "render" not in err
    code, _, err = evalkit_cli(["score", str(out), "--no-progress"])
    assert code == 0 and err == ""
