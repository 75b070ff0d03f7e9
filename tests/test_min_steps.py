"""evalkit min-steps (exhaustive and adaptive) and evalkit selftest on the exact model."""
import json

import pytest

from evalkit.minsteps.search import coarse_counts


@pytest.fixture
def config(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat sitting on a mat\nthree apples on a table\n")
    path = tmp_path / "sweep.toml"
    path.write_text('prompts = "prompts.txt"\nseeds = 2\nmetrics = ["ssim"]\n')
    return path


def test_coarse_counts_are_geometric_and_leave_the_largest_for_last():
    assert coarse_counts([1, 2, 3, 4, 6, 8, 10, 15, 20, 25, 30, 40, 50]) == [1, 3, 8, 20]


def test_adaptive_search_finds_the_exhaustive_answer_for_a_fraction_of_the_nfe(config, tmp_path, evalkit_cli):
    code, out, _ = evalkit_cli(["min-steps", str(config), "--out", str(tmp_path / "exhaustive")])
    assert code == 0
    exhaustive = json.loads(out)
    assert exhaustive["dpmpp_2m_karras"]["min_steps"] < exhaustive["euler"]["min_steps"]
    assert exhaustive["euler_a"]["min_steps"] is None and "stochastic" in exhaustive["euler_a"]["why"]

    code, out, err = evalkit_cli(["min-steps", str(config), "--search", "adaptive", "--out", str(tmp_path / "adaptive")])
    assert code == 0
    adaptive = json.loads(out)
    assert {s: e["min_steps"] for s, e in adaptive.items()} == {s: e["min_steps"] for s, e in exhaustive.items()}
    summary = json.loads((tmp_path / "adaptive" / "summary.json").read_text())["min_steps"]
    ratio = summary["cost"]["nfe_ratio"]
    print(f"adaptive / exhaustive sweep NFE: {ratio:.3f}  ({err.strip()})")
    assert ratio <= 0.40
    assert summary["cost"]["images_rendered"] < 2 * 2 * 7 * 13 + 2 * 2


def test_a_tolerance_flag_changes_the_answer(config, tmp_path, evalkit_cli):
    out_dir = str(tmp_path / "run")
    strict = json.loads(evalkit_cli(["min-steps", str(config), "--out", out_dir, "--tolerance", "ssim=0.01"])[1])
    loose = json.loads(evalkit_cli(["min-steps", str(config), "--out", out_dir, "--tolerance", "ssim=0.3"])[1])
    assert loose["dpmpp_2m_karras"]["min_steps"] < strict["dpmpp_2m_karras"]["min_steps"]
    code, _, err = evalkit_cli(["min-steps", str(config), "--out", out_dir, "--search", "sideways"])
    assert code == 2 and "unknown search 'sideways'" in err


def test_selftest_agrees_with_ground_truth(config, tmp_path, evalkit_cli):
    code, out, _ = evalkit_cli(["selftest", str(config), "--out", str(tmp_path / "selftest")])
    print(out)
    assert code == 0 and "selftest passed" in out
    from evalkit.sweep.schedulers import SCHEDULERS

    flow = [s for s in SCHEDULERS if s.family == "flow" and not s.stochastic]
    # the six deterministic schedulers of the default sweep, then every deterministic flow solver, on
    # builtin:mixture-flow and on builtin:mixture-early (weak reference): each run adds its certification row
    assert out.count(" yes") == (6 + 1) + (len(flow) + 1) * 2 and "flow_heun" in out
    assert out.count("certification (flagged vs wrong units)") == 3
