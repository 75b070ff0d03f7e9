"""Bad input and interruptions: one line naming the problem and the fix, exit 2, no traceback,
refused before anything renders (or, once rendering started, nothing finished is lost)."""
from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from expect import one_line

from evalkit.config import BACKENDS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "torchmetrics", "open_clip", "lpips", "ray", "plotly", "pandas")


@pytest.fixture
def sweep(tmp_path):
    """A tiny sweep's flags (builtin model, 2 prompts, 1 seed, steps 1-2, SSIM only) and its run folder."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\nthree apples\n")
    out = tmp_path / "run"
    return ["--prompts", str(prompts), "--out", str(out), "--steps", "1,2", "--seeds", "1", "--reference-steps", "3",
            "--schedulers", "euler", "--metrics", "ssim", "--no-progress"], out


def nothing_rendered(out: Path) -> None:
    assert not (out / "config.toml").exists() and not list(out.glob("images/*.png"))


# --------------------------------------------------------------------------------------------- a fast CLI

def _modules_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def _cli(args: list[str]) -> str:
    return f"""
from evalkit.cli import main
sys.argv = ['evalkit', *{args!r}]
try:
    main()
except SystemExit:
    pass
"""


def test_cli_import_loads_no_heavy_module():
    assert _modules_after("import evalkit.cli") == []
    assert _modules_after("import evalkit; evalkit.SweepConfig(); evalkit.EvalkitError") == []


@pytest.mark.parametrize("args", [["--help"], ["schedulers"], ["run", "--device", "gpu"], ["run", "--seeds", "x"],
                                  ["run", "--backend", "slurm"]])
def test_help_listing_and_config_errors_load_no_heavy_module(args):
    assert _modules_after(_cli(args)) == []


def test_config_validates_backends_without_the_executors():
    assert _modules_after("from evalkit.config import make_config; make_config({'backend': 'ray'})\n"
                          "assert 'evalkit.stages.executors' not in sys.modules") == []
    from evalkit.stages.executors import EXECUTORS

    assert EXECUTORS.names() == list(BACKENDS)


def test_lazy_package_still_runs_stages():
    import evalkit
    from evalkit import api

    assert evalkit.run is api.run and evalkit.Run is api.Run and evalkit.score is api.score
    with pytest.raises(AttributeError):
        evalkit.no_such_name  # noqa: B018


# --------------------------------------------------------------------------------------------- config values

@pytest.mark.parametrize("flags, fragments", [
    (["--seeds", "0,9223372036854775808"], ["seed 9223372036854775808 is too large", "2**63-1"]),
    (["--seeds", "18446744073709551616"], ["too many", "list the seeds"]),
    (["--size", "100000"], ["size 100000 px is too large (limit 4096", "--size 512"]),
    (["--device", "gpu"], ["unknown device 'gpu'", "auto, cpu, cuda, cuda:N"]),
    (["--device", "cuda:x"], ["unknown device 'cuda:x'"]),
    (["--dtype", "float64"], ["unknown dtype 'float64'", "float32, float16, bfloat16"]),
    (["--guidance", "nan"], ["guidance must be a finite number"]),
    (["--guidance", "inf"], ["guidance must be a finite number"]),
])
def test_bad_flag_values(flags, fragments, sweep, evalkit_cli):
    args, out = sweep
    one_line(evalkit_cli(["run", *args, *flags]), *fragments)
    nothing_rendered(out)


def test_huge_seed_in_toml(tmp_path, evalkit_cli):
    config = tmp_path / "sweep.toml"
    config.write_text("seeds = [1, 9223372036854775808]\n")
    one_line(evalkit_cli(["run", str(config)]), "seed 9223372036854775808 is too large")


@pytest.mark.parametrize("table, fragments", [
    ("tolerances = { sharpness = 0.05 }", ["unknown metric 'sharpness'"]),
    ("tolerances = { ssim = nan }", ["tolerances.ssim must be a finite number"]),
    ("tolerances = { ssim = inf }", ["tolerances.ssim must be a finite number"]),
])
def test_bad_tolerances(table, fragments, tmp_path, sweep, evalkit_cli):
    args, out = sweep
    config = tmp_path / "sweep.toml"
    config.write_text(table + "\n")
    one_line(evalkit_cli(["run", str(config), *args]), *fragments)
    nothing_rendered(out)
    one_line(evalkit_cli(["min-steps", str(config), "--out", str(out)]), *fragments)


def test_tolerance_flag_nan(sweep, evalkit_cli):
    args, out = sweep
    one_line(evalkit_cli(["min-steps", "--tolerance", "ssim=nan", "--out", str(out)]), "must be a finite number")


def test_cuda_on_a_machine_without_it(sweep, evalkit_cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # CI machines are CPU-only; the other branch is what is tested there
    args, out = sweep
    one_line(evalkit_cli(["run", *args, "--device", "cuda"]), "--device cuda: this machine has no CUDA device",
             "--device auto or cpu")
    nothing_rendered(out)


# --------------------------------------------------------------------------------------------- prompts

def test_unreadable_prompt_file(sweep, monkeypatch, evalkit_cli):
    args, out = sweep
    prompts = Path(args[1])
    read_text = pathlib.Path.read_text

    def denied(self, *a, **k):  # chmod 000 does not stop root, who runs CI: deny it the way the OS would
        if self == prompts:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    one_line(evalkit_cli(["run", *args]), f"can't read prompt file {prompts} (Permission denied)", "chmod a+r")
    nothing_rendered(out)


def test_duplicate_prompts_refused_before_rendering(sweep, evalkit_cli):
    args, out = sweep
    Path(args[1]).write_text("a cat\nthree apples\n\n# again:\na cat\n")
    one_line(evalkit_cli(["run", *args]), "duplicate prompt 'a cat'", "at line 1 and line 5", "keep each prompt once")
    nothing_rendered(out)


# --------------------------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("backbone, fragments", [
    ("clip_score=ViT-B-32", ["clip_score backbone 'ViT-B-32': expected MODEL/PRETRAINED"]),
    ("clip_score=ViT-B-32/no-such-tag", ["unknown open_clip model/pretrained tag", "use ViT-B-32/TAG", "openai"]),
    ("clip_score=NoSuchNet/openai", ["unknown open_clip model 'NoSuchNet'"]),
    ("clip_score=ViT-B-32@/x/weights.txt", ["expected MODEL@/path/to/checkpoint"]),
    ("lpips=resnet", ["lpips: unknown backbone 'resnet'"]),
])
def test_bad_backbone_fails_before_rendering(backbone, fragments, sweep, evalkit_cli):
    args, out = sweep
    one_line(evalkit_cli(["run", *args, "--backbones", backbone]), *fragments)
    nothing_rendered(out)  # and so never saved into config.toml


def test_bad_backbone_in_an_existing_run_folder(sweep, evalkit_cli):
    args, out = sweep
    assert evalkit_cli(["run", *args])[0] == 0
    images = sorted(p.name for p in (out / "images").iterdir())
    config = out / "config.toml"
    config.write_text(config.read_text().replace("backbones = {}", 'backbones = {"clip_score" = "ViT-B-32"}'))
    one_line(evalkit_cli(["score", str(out)]), "clip_score backbone 'ViT-B-32'")
    assert sorted(p.name for p in (out / "images").iterdir()) == images


def _npz(path: Path, mu, sigma) -> str:
    np.savez(path, mu=mu, sigma=sigma)
    return str(path)


def test_bad_fid_references(tmp_path, sweep, evalkit_cli):
    args, out = sweep
    args = [("ssim,fid" if a == "ssim" else a) for a in args]
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("a.png", "b.png"):
        (corrupt / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    nan_mu = np.zeros(2048)
    nan_mu[3] = np.nan
    cases = {
        str(tmp_path / "missing.npz"): ["missing.npz not found", "point fid_reference at an .npz with 2048-d"],
        str(garbage): ["garbage.npz is not an .npz archive", "point fid_reference at"],
        _npz(tmp_path / "dim.npz", np.zeros(64), np.eye(64)): ["statistics of 64-d features", "2048-d"],
        _npz(tmp_path / "nan.npz", nan_mu, np.eye(2048)): ["mu/sigma hold NaN or infinite values"],
        str(corrupt): ["fid_reference image", "a.png is unreadable", "replace or remove it"],
        str(tmp_path / "no-folder"): ["is not a folder or an .npz file"],
    }
    for reference, fragments in cases.items():
        one_line(evalkit_cli(["run", *args, "--fid-reference", reference]), *fragments)
        nothing_rendered(out)


# --------------------------------------------------------------------------------------------- python: plugins

def test_plugin_raising_at_import(sweep, monkeypatch, evalkit_cli):
    args, out = sweep
    monkeypatch.setenv("EVALKIT_TEST_BREAK_AT_IMPORT", "1")
    monkeypatch.delitem(sys.modules, "plugins.bad_plugins", raising=False)
    one_line(evalkit_cli(["run", *args, "--model", "python:plugins.bad_plugins:not_images"]),
             "module 'plugins.bad_plugins'", "raised RuntimeError at import (CUDA out of memory", "fix the module")
    nothing_rendered(out)


def test_plugin_returning_non_images(sweep, monkeypatch, evalkit_cli):
    args, out = sweep
    monkeypatch.delitem(sys.modules, "plugins.bad_plugins", raising=False)
    one_line(evalkit_cli(["run", *args, "--model", "python:plugins.bad_plugins:not_images"]),
             "returned NoneType as .images, not images", "list of PIL.Image")
    assert not list(out.glob("images/*.png"))


# --------------------------------------------------------------------------------------------- run folders

def test_out_on_a_foreign_folder_is_refused(sweep, evalkit_cli):
    args, out = sweep
    out.mkdir()
    (out / "config.toml").write_text("[tool.mine]\nkeep = true\n")
    (out / "report.html").write_text("<p>my page</p>")
    one_line(evalkit_cli(["run", *args]), f"--out {out} is a folder with other files, not an evalkit run folder",
             "new or empty folder")
    assert (out / "config.toml").read_text() == "[tool.mine]\nkeep = true\n"
    assert (out / "report.html").read_text() == "<p>my page</p>" and not (out / "images").exists()


def test_out_on_an_empty_folder_or_an_earlier_run_is_fine(sweep, evalkit_cli):
    args, out = sweep
    out.mkdir()
    assert evalkit_cli(["run", *args])[0] == 0
    code, stdout, _ = evalkit_cli(["run", *args])
    assert code == 0 and "rendered 0 new image(s)" in stdout


def test_ctrl_c_keeps_finished_images_and_says_how_to_resume(sweep, monkeypatch, evalkit_cli):
    args, out = sweep
    monkeypatch.delitem(sys.modules, "plugins.bad_plugins", raising=False)
    run = ["run", *args, "--model", "python:plugins.bad_plugins:interrupting", "--batch-size", "1"]
    monkeypatch.setenv("EVALKIT_TEST_INTERRUPT", "1")
    code, _, err = evalkit_cli(run)
    assert code == 130 and "Traceback" not in err
    kept = sorted(p.name for p in (out / "images").glob("*.png"))
    assert len(kept) == 1
    assert f"interrupted: 1 finished image(s) are kept in {out}" in err and "rerun the same command to resume" in err
    monkeypatch.delenv("EVALKIT_TEST_INTERRUPT")  # the user reruns the same command
    code, stdout, _ = evalkit_cli(run)
    # 2 prompts x (2 steps + reference + its check), less the kept one
    assert code == 0 and "rendered 7 new image(s); 8 planned" in stdout
    assert set(kept) <= {p.name for p in (out / "images").glob("*.png")}


# --------------------------------------------------------------------------------------------- gate outputs

@pytest.mark.parametrize("flag", ["--junit", "--markdown"])
def test_gate_output_files_are_bad_input_not_a_failed_gate(flag, tmp_path, evalkit_cli):
    runs = [str(tmp_path / name) for name in ("a", "b")]  # checked before the runs are even read
    base = ["gate", "--baseline", runs[0], "--candidate", runs[1]]
    one_line(evalkit_cli([*base, flag, "/nonexistent/x.out"]), f"{flag} /nonexistent/x.out: folder /nonexistent "
             "does not exist")
    one_line(evalkit_cli([*base, flag, str(tmp_path)]), f"{flag} {tmp_path} is a folder: pass a file path, e.g. "
             f"{tmp_path / ('gate.xml' if flag == '--junit' else 'gate.md')}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line(evalkit_cli([*base, flag, str(blocker / "x.out")]), f"folder {blocker} is a file, not a folder")


# --------------------------------------------------------------------------------------------- paths are resolved once

def test_a_tilde_in_any_path_is_the_home_folder(sweep, tmp_path, monkeypatch, evalkit_cli):
    """`--out=~/x` (no shell expansion), `out`/`prompts`/`fid_reference` in a config: `~` is the home folder,
    never a folder literally named `~` in the working directory."""
    args, _ = sweep
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    at = args.index("--out")
    code, out, err = evalkit_cli(["run", *args[:at], *args[at + 2:], "--out=~/runs/a"])
    assert code == 0, err
    assert (tmp_path / "home" / "runs" / "a" / "summary.json").is_file() and not (tmp_path / "~").exists()
    (tmp_path / "home" / "p.txt").write_text("a cat\n")
    (tmp_path / "sweep.toml").write_text('prompts = "~/p.txt"\nout = "~/runs/b"\nfid_reference = "~/refs"\n'
                                         'metrics = ["ssim", "fid"]\n')
    one_line(evalkit_cli(["run", str(tmp_path / "sweep.toml")]), f"fid_reference {tmp_path / 'home' / 'refs'} is not")
    (tmp_path / "sweep.toml").write_text('prompts = "~/p.txt"\nout = "~/runs/b"\nsteps = [1]\nseeds = 1\n'
                                         'reference_steps = 3\nschedulers = ["euler"]\nmetrics = ["ssim"]\n')
    code, _, err = evalkit_cli(["run", "~/../sweep.toml"])  # the config argument too
    assert code == 0, err
    assert (tmp_path / "home" / "runs" / "b" / "summary.json").is_file() and not (tmp_path / "~").exists()
    code, out, err = evalkit_cli(["recommend", "~/runs/b", "--max-nfe", "10"])  # and a run folder argument
    assert code == 0 and "recommend: euler at 1 steps" in out, err


# --------------------------------------------------------------------------------------------- checked up front

@pytest.mark.parametrize("metrics", ["cmmd", "kid", "fid", "ssim,cmmd"])
def test_every_set_metric_checks_its_target_before_rendering(metrics, tmp_path, sweep, evalkit_cli):
    args, out = sweep
    args = [(metrics if a == "ssim" else a) for a in args]
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(evalkit_cli(["run", *args, "--fid-reference", str(tmp_path / "missing")]), "is not a folder or an .npz")
    one_line(evalkit_cli(["run", *args, "--fid-reference", str(empty)]), "holds 0 image(s)")
    nothing_rendered(out)


@pytest.mark.parametrize("metrics, refused", [("kid", "kid compares image sets"), ("cmmd", "cmmd compares"),
                                              ("fid,kid,cmmd", "kid and cmmd compare image sets")])
def test_named_metrics_that_need_images_refuse_statistics(metrics, refused, tmp_path, sweep, evalkit_cli):
    args, out = sweep
    args = [(metrics if a == "ssim" else a) for a in args]
    stats = _npz(tmp_path / "stats.npz", np.zeros(2048), np.eye(2048))
    one_line(evalkit_cli(["run", *args, "--fid-reference", stats]), refused, "holds statistics",
             "point fid_reference at a folder of real images")
    nothing_rendered(out)


@pytest.mark.parametrize("size", ["1", "5"])
def test_a_size_a_metric_cannot_take_is_refused_before_rendering(size, sweep, evalkit_cli):
    args, out = sweep
    one_line(evalkit_cli(["run", *args, "--size", size]), f"size {size} px is too small for ssim",
             "at least 6 px", "--size 6")
    nothing_rendered(out)


def test_lpips_minimum_size_follows_its_backbone(tmp_path, sweep, monkeypatch, evalkit_cli):
    import fake_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake_weights.write_alexnet(tmp_path / "torch")
    fake_weights.write_vgg16(tmp_path / "torch")
    args, out = sweep
    args = [("ssim,lpips" if a == "ssim" else a) for a in args]
    one_line(evalkit_cli(["run", *args, "--size", "24"]), "too small for lpips", "at least 31 px")
    one_line(evalkit_cli(["run", *args, "--size", "12", "--backbones", "lpips=vgg"]), "at least 16 px")
    nothing_rendered(out)


def test_counts_too_large_to_plan_are_refused(sweep, evalkit_cli):
    args, out = sweep  # flags given twice: the last one wins
    one_line(evalkit_cli(["run", *args, "--seeds", "4000000000"]), "seeds = 4000000000 is too many",
             "at most 1,000,000")
    # 2 prompts x 999,999 seeds x (2 schedulers x 6 counts + 1 reference scheduler + its check)
    one_line(evalkit_cli(["run", *args, "--seeds", "999999", "--schedulers", "euler,ddim", "--steps", "1,2,3,4,5,6",
                          "--reference-steps", "10"]),
             "plans 27,999,972 images", "more than 10,000,000", "use fewer seeds")
    nothing_rendered(out)


def test_compare_out_in_an_unusable_place_is_bad_input(tmp_path, evalkit_cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]  # checked before the runs are read
    one_line(evalkit_cli(["compare", *runs, "--out", str(blocker / "c.html")]), f"folder {blocker} is a file")
    one_line(evalkit_cli(["compare", *runs, "--out", str(tmp_path)]), "should be an .html file")
    folder = tmp_path / "x.html"
    folder.mkdir()
    one_line(evalkit_cli(["compare", *runs, "--out", str(folder)]), f"--out {folder} is a folder")


@pytest.mark.parametrize("args, fragments", [
    (["run", "--no-such-flag"], ["No such option: --no-such-flag", "see `evalkit run --help`"]),
    (["gate"], ["Missing option '--candidate'", "see `evalkit gate --help`"]),
    (["run", "--batch-size", "x"], ["Invalid value for '--batch-size'", "see `evalkit run --help`"]),
    (["no-such-command"], ["No such command 'no-such-command'", "see `evalkit --help`"]),
])
def test_usage_errors_are_one_line(args, fragments, evalkit_cli):
    one_line(evalkit_cli(args), *fragments)


def test_a_size_the_model_cannot_take_is_refused_before_rendering(tiny_sd_dir, tmp_path, sweep, evalkit_cli, capsys):
    from tiny_models import save_tiny_flow

    flux = save_tiny_flow(tmp_path / "flux", "flux-dev")
    capsys.readouterr()  # the save's progress bars
    args, out = sweep  # flags given twice: the last one wins
    one_line(evalkit_cli(["run", *args, "--model", "builtin:mixture-flow", "--schedulers", "flow_euler",
                          "--size", "33"]), "size 33 px can't be rendered by builtin:mixture-flow",
             "multiples of 2 (it packs 2x2 pixels", "--size 32")
    one_line(evalkit_cli(["run", *args, "--model", f"diffusers:{tiny_sd_dir}", "--size", "33"]),
             "multiples of 2 (its VAE downsamples 2x)", "--size 32")
    one_line(evalkit_cli(["run", *args, "--model", f"diffusers:{flux}", "--schedulers", "flow_euler",
                          "--size", "40"]), "multiples of 16 (its VAE downsamples 8x and FLUX packs 2x2 latents)",
             "--size 32")
    nothing_rendered(out)
