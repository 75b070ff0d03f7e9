"""python: plugins are code evalkit does not own. What they return is checked against the contract (a model's
images: PIL or float (H, W, 3) in [0, 1], one per prompt; a metric's values: one real number or NaN per image),
and what they do (raise, sys.exit) is caught at the call: each break is one line on stderr, exit 2, naming the
plugin, what it returned or raised and the fix; never a traceback, never exit 0; finished work is kept and a
rerun resumes. Ctrl-C keeps meaning Ctrl-C (exit 130)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from expect import one_line_error

from evalkit.errors import EvalkitError
from evalkit.metrics import METRICS
from evalkit.metrics.plugins import plugin_scorer, plugin_values
from evalkit.models.base import OVERSHOOT, check_images, image_pixels
from evalkit.store.folder import RunDir

TESTS = Path(__file__).resolve().parent
MODEL = "python:plugins.broken_models"
METRIC = "python:plugins.hostile_metrics"
PLANNED = 2 * 2 * 2 + 2 * 2  # 2 prompts x 2 seeds x 2 step counts, + a reference per prompt and seed; batches of 2


@pytest.fixture
def fresh_plugins():
    """Each test builds its metric plugins anew (they are built once per process) and leaves no names behind."""
    import plugins.hostile_metrics as hostile

    plugin_scorer.cache_clear()
    hostile.SCORED.clear()
    yield hostile
    plugin_scorer.cache_clear()
    for name in METRICS.names():
        if name.startswith("hostile_"):
            METRICS.remove(name)


def args(prompts: str, out: Path, *extra: str) -> list[str]:
    """The plugins' contracts, on a sweep without reference certification (its check images would be more to
    count here; tests/test_certify.py covers them)."""
    return ["run", "--prompts", prompts, "--out", str(out), "--schedulers", "euler", "--steps", "2,4", "--seeds", "2",
            "--reference-steps", "8", "--metrics", "ssim", "--device", "cpu", "--batch-size", "2", "--no-progress",
            "--no-certify", *extra]


def kept(out: Path) -> int:
    """Images whose PNG and row survived (the table and its journal), each PNG whole."""
    if not out.is_dir():
        return 0
    rows = RunDir(out).read_images()
    for path in rows.path:
        Image.open(out / path).verify()
    return len(rows)


# ------------------------------------------------------------------------------------------ model output


@pytest.mark.parametrize("factory, fragments", [
    ("uint8_pipeline", ["returned uint8 (64, 64, 3) arrays (values 0..255) as images, not float",
                        "return float arrays in [0, 1] (e.g. array / 255) or PIL images"]),
    ("scaled_pipeline", ["returned float32 arrays with values in [0, ", "outside [0, 1]", "divide by 255"]),
    ("signed_pipeline", ["returned float32 arrays with values in [-1, ", "outside [0, 1]",
                         "map them with (x / 2 + 0.5).clip(0, 1)"]),
    ("rgba_pipeline", ["returned float32 (64, 64, 4) arrays as images, not (H, W, 3) RGB",
                       "drop the alpha channel (array[..., :3])"]),
    ("channels_first_pipeline", ["returned float32 (3, 64, 64) arrays as images, not (H, W, 3) RGB",
                                 "put the channels last (array.transpose(1, 2, 0))"]),
    ("float_pil_pipeline", ["returned PIL images of mode F, not 8-bit RGB", "return mode RGB images"]),
    ("short_pipeline", ["returned 1 image(s) for a batch of 2 prompt(s)", "one image per prompt"]),
])
def test_a_model_output_off_the_contract_is_one_line_and_nothing_is_saved(tmp_path, prompts, evalkit_cli, factory,
                                                                          fragments):
    out = tmp_path / "run"
    code, _, err = evalkit_cli(args(prompts, out, "--model", f"{MODEL}:{factory}"))
    one_line_error(code, err, f"error: model {MODEL}:{factory} returned ", *fragments)
    assert kept(out) == 0  # the first batch broke the contract: nothing saturated or garbled reached the folder


def test_a_hair_outside_0_1_is_clipped_and_saved(tmp_path, prompts, evalkit_cli):
    out = tmp_path / "run"
    code, stdout, err = evalkit_cli(args(prompts, out, "--model", f"{MODEL}:overshoot_pipeline"))
    assert code == 0, err
    assert f"rendered {PLANNED} new image(s)" in stdout
    table = RunDir(out).read_images()
    assert (table["flags"] == "").all()
    for path in table.path:
        pixels = np.asarray(Image.open(out / path))
        assert (pixels[0, 0] == 255).all() and (pixels[0, 1] == 0).all() and (pixels[0, 2] == 255).all()


def test_the_tolerance_nan_and_the_checks_one_image_at_a_time():
    rng = np.random.default_rng(0)
    picture = rng.random((8, 8, 3)).astype(np.float32)
    for edge, ok in [(1 + 0.99 * OVERSHOOT, True), (-0.99 * OVERSHOOT, True), (1.0000001, True), (-1e-7, True),
                     (1 + 1.5 * OVERSHOOT, False), (-1.5 * OVERSHOOT, False), (255.0, False), (-1.0, False)]:
        image = picture.copy()
        image[3, 3, 1] = edge
        if ok:
            pixels, non_finite = image_pixels(image, "m")
            assert not non_finite and pixels[3, 3, 1] == (255 if edge > 0.5 else 0)
        else:
            with pytest.raises(EvalkitError, match="outside \\[0, 1\\]"):
                image_pixels(image, "m")
    # NaN/inf are a diverged model, not a contract break: flagged (by the renderer) and zeroed, never refused
    image = picture.copy()
    image[0, 0] = [np.nan, np.inf, -np.inf]
    pixels, non_finite = image_pixels(image, "m")
    assert non_finite and pixels[0, 0].tolist() == [0, 255, 0]
    assert image_pixels(np.full((4, 4, 3), np.nan, dtype=np.float16), "m")[1]
    image[1, 1, 0] = 3.0  # ... but NaN does not excuse values off the scale elsewhere
    with pytest.raises(EvalkitError, match="values in \\[.*, 3\\]"):
        image_pixels(image, "m")
    for bad, fragment in [(np.zeros((8, 8, 3), dtype=bool), "bool (8, 8, 3) arrays"),
                          (np.zeros((8, 8), dtype=np.float32), "give gray images three channels"),
                          (np.zeros((0, 8, 3), dtype=np.float32), "(0, 8, 3) arrays"),
                          (Image.new("RGBA", (8, 8)), "mode RGBA, whose alpha channel evalkit would drop"),
                          (Image.new("I;16", (8, 8)), "mode I;16, not 8-bit RGB")]:
        with pytest.raises(EvalkitError, match=None) as info:
            image_pixels(bad, "python:m:f")
        assert fragment in str(info.value) and "python:m:f" in str(info.value) and "\n" not in str(info.value)
    for mode in ("RGB", "L", "P"):  # 8-bit and opaque: PIL's own conversion keeps the picture
        assert image_pixels(Image.new(mode, (8, 8)), "m")[0].shape == (8, 8, 3)
    # a batch: one (B, H, W, 3) array (diffusers' "np" output) or a list; what .images is when it is not images
    assert len(check_images(np.stack([picture, picture]), "m", 2, 8)) == 2
    for images, fragment in [(None, "returned NoneType as .images"), (picture, "returned ndarray as .images"),
                             ([torch.zeros(8, 8, 3)], "returned Tensor as .images"),
                             ([picture], "returned 1 image(s) for a batch of 2")]:
        with pytest.raises(EvalkitError, match=None) as info:
            check_images(images, "m", 2, 8)
        assert fragment in str(info.value)


# ------------------------------------------------------------------------------------- model code that fails


def test_a_model_raising_mid_sweep_is_one_line_keeps_finished_batches_and_a_rerun_resumes(tmp_path, prompts,
                                                                                          evalkit_cli, monkeypatch):
    out = tmp_path / "run"
    run = args(prompts, out, "--model", f"{MODEL}:raising_midway")
    code, _, err = evalkit_cli(run)
    one_line_error(code, err, f"model {MODEL}:raising_midway raised RuntimeError while rendering a batch (CUDA error: "
                   "an illegal memory access was encountered, at broken_models.py:",
                   "the batches rendered before it are saved", "rerun the same command to resume")
    assert kept(out) == 2  # the first batch
    monkeypatch.setenv("EVALKIT_TEST_HEALED", "1")  # the user fixes the model and reruns the same command
    code, stdout, err = evalkit_cli(run)
    assert code == 0, err
    assert f"rendered {PLANNED - 2} new image(s); {PLANNED} planned" in stdout


def test_a_model_calling_sys_exit_mid_sweep_is_exit_2_not_0_and_keeps_finished_batches(tmp_path, prompts,
                                                                                       evalkit_cli):
    out = tmp_path / "run"
    code, _, err = evalkit_cli(args(prompts, out, "--model", f"{MODEL}:exiting_midway"))
    one_line_error(code, err, f"model {MODEL}:exiting_midway called sys.exit(0) while rendering a batch",
                   "plugin code must raise an exception, not end the process",
                   "evalkit would have exited 0, as if it had succeeded", "rerun the same command to resume")
    assert kept(out) == 2


@pytest.mark.parametrize("flag, source, fragments", [
    ("--model", f"{MODEL}:exiting_factory", ["called sys.exit(0) while building the pipeline",
                                             "as if it had succeeded", "exiting_factory()"]),
    ("--model", "python:sys:exit", ["model python:sys:exit called sys.exit() while building the pipeline"]),
    ("--metrics", f"{METRIC}:exiting_factory", ["called sys.exit(0) while building its scorer"]),
    ("--metrics", "python:sys:exit", ["metric python:sys:exit called sys.exit() while building its scorer"]),
    ("--metrics", f"{METRIC}:exits_in_score", ["called sys.exit(3) while scoring a batch of 2 image(s)",
                                               "rerun the same command to resume"]),
])
def test_plugin_code_calling_sys_exit_is_exit_2_naming_the_plugin(tmp_path, prompts, evalkit_cli, fresh_plugins,
                                                                  flag, source, fragments):
    code, _, err = evalkit_cli(args(prompts, tmp_path / "run", flag, source))
    one_line_error(code, err, f" {source} called sys.exit(", "plugin code must raise an exception, not end the process",
                   *fragments)


@pytest.mark.parametrize("flag, source, fragment", [
    ("--model", "python:builtins:exit", "model python:builtins:exit called sys.exit() while building the pipeline"),
    ("--model", f"{MODEL}:exiting_midway", "called sys.exit(0) while rendering a batch"),  # from the render thread
    ("--metrics", f"{METRIC}:exiting_factory", "called sys.exit(0) while building its scorer"),
])
def test_plugin_sys_exit_never_ends_the_real_process_with_0(tmp_path, prompts, flag, source, fragment):
    """The process's own exit status, as a release pipeline sees it (the in-process fixture catches SystemExit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    done = subprocess.run([sys.executable, "-m", "evalkit", *args(prompts, tmp_path / "run", flag, source)],
                          capture_output=True, text=True, env=env, timeout=600)
    one_line_error(done.returncode, done.stderr, fragment)


@pytest.mark.parametrize("flag, source, kept_images", [
    ("--model", f"{MODEL}:interrupting_factory", 0),
    ("--metrics", f"{METRIC}:interrupted_in_score", PLANNED),
])
def test_ctrl_c_in_plugin_code_still_means_interrupted(tmp_path, prompts, evalkit_cli, fresh_plugins, flag, source,
                                                       kept_images):
    out = tmp_path / "run"
    code, _, err = evalkit_cli(args(prompts, out, flag, source))
    assert code == 130 and "Traceback" not in err, err
    assert err.startswith(f"interrupted: {kept_images} finished image(s) are kept in {out}"), err


def test_a_model_module_or_factory_raising_names_where(tmp_path, prompts, evalkit_cli):
    code, _, err = evalkit_cli(args(prompts, tmp_path / "run", "--model", "python:plugins.tiny_plugin:broken"))
    one_line_error(code, err, "model python:plugins.tiny_plugin:broken raised RuntimeError while building the pipeline "
                   "(boom, at tiny_plugin.py:", "try `python -c 'import plugins.tiny_plugin; "
                   "plugins.tiny_plugin.broken()'`")


# ------------------------------------------------------------------------------------------ metric values


@pytest.mark.parametrize("factory, fragment", [
    ("short", "returned 1 value(s) (a float32 tensor of shape (1,)) for a batch of 2 image(s)"),
    ("strings", "returned a list of 2 str for a batch of 2 image(s), not numbers"),
    ("bools", "returned a list of 2 bool for a batch of 2 image(s), not numbers"),
    ("matrix", "returned a float32 tensor of shape (2, 2) for a batch of 2 image(s)"),
    ("nones", "returned a list of 2 NoneType for a batch of 2 image(s), not numbers"),
    ("scalar", "returned float for a batch of 2 image(s), not numbers"),
])
def test_metric_values_off_the_contract_are_one_line(tmp_path, prompts, evalkit_cli, fresh_plugins, factory,
                                                     fragment):
    out = tmp_path / "run"
    code, _, err = evalkit_cli(args(prompts, out, "--metrics", f"{METRIC}:{factory}"))
    one_line_error(code, err, f"error: metric {METRIC}:{factory} {fragment}",
                   "score(images, others) must return one real number per image (2 here), in order")
    assert kept(out) == PLANNED  # rendering is untouched by a bad metric


def test_an_infinite_metric_value_is_one_line(tmp_path, prompts, evalkit_cli, fresh_plugins):
    code, _, err = evalkit_cli(args(prompts, tmp_path / "run", "--metrics", f"{METRIC}:infinite"))
    one_line_error(code, err, f"metric {METRIC}:infinite returned 1 infinite value(s) for a batch of 2 image(s)",
                   "return finite values, or NaN for an image it can't score")


def brightness(out: Path, path: str) -> float:
    return float(np.asarray(Image.open(out / path), dtype=np.float64).mean() / 255)


@pytest.mark.parametrize("factory", ["column", "numpy_scalars"])
def test_metric_values_in_the_shapes_the_contract_allows_are_scored(tmp_path, prompts, evalkit_cli, fresh_plugins,
                                                                   factory):
    out = tmp_path / "run"
    code, stdout, err = evalkit_cli(args(prompts, out, "--metrics", f"{METRIC}:{factory}"))
    assert code == 0, err
    assert f"scored new images: hostile_{factory} {PLANNED}" in stdout
    scores = pd.read_parquet(out / "scores.parquet").merge(RunDir(out).read_images(), on="key")
    assert len(scores) == PLANNED
    np.testing.assert_allclose(scores.value, [brightness(out, p) for p in scores.path], rtol=1e-5)


def test_a_nan_metric_value_means_that_image_has_no_value(tmp_path, prompts, evalkit_cli, fresh_plugins):
    out = tmp_path / "run"
    code, stdout, err = evalkit_cli(args(prompts, out, "--metrics", f"{METRIC}:some_nan"))
    assert code == 0, err
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == PLANNED and scores.value.isna().sum() == PLANNED // 2  # the first of each batch of 2
    sets = pd.read_parquet(out / "set_scores.parquet")
    assert (sets.n == 2).all() and sets.value.notna().all()  # 2 of the 4 (prompt, seed) units per column
    # the NaN is cached like any value: a rerun asks the plugin nothing
    fresh_plugins.SCORED.clear()
    code, stdout, err = evalkit_cli(args(prompts, out, "--metrics", f"{METRIC}:some_nan"))
    assert code == 0 and "scored new images: hostile_some_nan 0" in stdout and not fresh_plugins.SCORED


def test_a_metric_raising_is_one_line_keeps_cached_scores_and_a_rerun_resumes(tmp_path, prompts, evalkit_cli,
                                                                             fresh_plugins, monkeypatch):
    # the score stage saves its cache when scoring stops early, not only every CHECKPOINT_EVERY batches
    out = tmp_path / "run"
    run = args(prompts, out, "--metrics", f"{METRIC}:fails_after")
    monkeypatch.setenv("EVALKIT_TEST_FAIL_AFTER", "2")
    code, _, err = evalkit_cli(run)
    one_line_error(code, err, f"metric {METRIC}:fails_after raised ValueError while scoring a batch of 2 image(s) "
                   "(expected 77 tokens, got 81, at hostile_metrics.py:", "scores already cached are kept",
                   "rerun the same command to resume")
    assert fresh_plugins.SCORED["hostile_fails_after"] == 4
    monkeypatch.delenv("EVALKIT_TEST_FAIL_AFTER")
    code, stdout, err = evalkit_cli(run)
    assert code == 0, err
    assert f"scored new images: hostile_fails_after {PLANNED - 4}" in stdout  # the 4 cached are not asked again
    assert fresh_plugins.SCORED["hostile_fails_after"] == PLANNED


def test_a_metric_module_raising_at_import_is_one_line(tmp_path, prompts, evalkit_cli, fresh_plugins, monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_METRIC_BREAK_AT_IMPORT", "1")
    monkeypatch.delitem(sys.modules, "plugins.hostile_metrics")
    out = tmp_path / "run"
    code, _, err = evalkit_cli(args(prompts, out, "--metrics", f"{METRIC}:short"))
    one_line_error(code, err, f"module 'plugins.hostile_metrics' for metric {METRIC}:short raised RuntimeError at "
                   "import (libcudart.so.12: cannot open shared object file", "fix the module")
    assert kept(out) == 0  # before anything renders


@pytest.mark.parametrize("values, expected", [
    (torch.tensor([0.5, 1.0, 2.0]), [0.5, 1.0, 2.0]),
    (torch.tensor([[0.5], [1.0], [2.0]], requires_grad=True), [0.5, 1.0, 2.0]),  # a Linear head's (B, 1)
    (torch.tensor([0.5, 1.0, 2.0], dtype=torch.bfloat16), [0.5, 1.0, 2.0]),
    (np.array([1, 2, 3], dtype=np.int64), [1.0, 2.0, 3.0]),
    ([np.float32(0.5), torch.tensor(1.0), 2], [0.5, 1.0, 2.0]),
    ((x / 2 for x in range(3)), [0.0, 0.5, 1.0]),
    ([float("nan"), 1.0, 2.0], [float("nan"), 1.0, 2.0]),
])
def test_plugin_values_accepts_one_real_number_per_image(values, expected):
    np.testing.assert_array_equal(plugin_values(values, 3, "python:m:f"), expected)


@pytest.mark.parametrize("values, fragment", [
    (torch.tensor([True, False, True]), "a bool tensor of shape (3,)"),
    (torch.tensor([1 + 1j, 2, 3]), "a complex64 tensor of shape (3,)"),
    (np.array(["0.5", "1", "2"]), "a <U3 array of shape (3,)"),
    (np.array([True, False, True]), "a bool array of shape (3,)"),
    ({"a": 1.0, "b": 2.0, "c": 3.0}, "returned dict"),
    ({1.0, 2.0, 3.0}, "returned set"),
    ("0.5 1 2", "returned str"),
    (None, "returned NoneType"),
    ([0.5, torch.tensor([1.0, 2.0]), 3.0], "a list of 3 float, float32 tensor"),
    ([0.5, 1.0], "returned 2 value(s) (a list of 2 float) for a batch of 3 image(s)"),
    (torch.zeros(3, 2), "a float32 tensor of shape (3, 2)"),
    (torch.zeros(1, 3), "a float32 tensor of shape (1, 3)"),
    ([0.5, float("-inf"), 1.0], "returned 1 infinite value(s)"),
])
def test_plugin_values_refuses_the_rest_in_one_line(values, fragment):
    with pytest.raises(EvalkitError, match=None) as info:
        plugin_values(values, 3, "python:m:f")
    message = str(info.value)
    assert message.startswith("metric python:m:f returned ") and fragment in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------- Ray


def test_on_ray_workers_plugin_errors_are_the_same_one_line(tmp_path, prompts, evalkit_cli, fresh_plugins,
                                                            monkeypatch):
    """A worker's plugin error crosses to the driver as the same line (executors._worker_error), and what the
    other in-flight batches finished is saved as locally."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS.parent), str(TESTS)]))  # forwarded to the workers
    already = ray.is_initialized()
    try:
        for extra, fragments, images in [
            (["--model", f"{MODEL}:raising_midway"],
             [(f"model {MODEL}:raising_midway raised RuntimeError while rendering a batch (CUDA error: an illegal "
               "memory access was encountered, at broken_models.py:"), "rerun the same command to resume"], 2),
            (["--model", f"{MODEL}:uint8_pipeline"],
             [f"model {MODEL}:uint8_pipeline returned uint8 (64, 64, 3) arrays (values 0..255)"], 0),
            (["--metrics", f"{METRIC}:short"],
             [f"metric {METRIC}:short returned 1 value(s) (a float32 tensor of shape (1,)) for a batch of 2"], PLANNED),
            (["--metrics", f"{METRIC}:exits_in_score"],
             [f"metric {METRIC}:exits_in_score called sys.exit(3)"], PLANNED),
        ]:
            out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
            code, _, err = evalkit_cli(args(prompts, out, "--backend", "ray", "--workers", "1", *extra))
            assert "Traceback" not in err, err
            one_line_error(code, err.splitlines(keepends=True)[-1], *fragments)  # after Ray's own start-up log
            assert kept(out) == images
    finally:
        if not already and ray.is_initialized():
            ray.shutdown()
