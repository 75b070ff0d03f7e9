"""`evalkit min-steps --search adaptive` answers what the exhaustive `evalkit min-steps` answers.

Only through the command line (the in-process `evalkit_cli` fixture) and the files it writes, so these tests don't
depend on how the package is split into modules:

- with a distribution metric scored (CMMD on a tiny random-weight open_clip backbone, or KID on random Inception
  weights) the exhaustive run judges a stochastic sampler (dpmpp_2m_sde_karras) by the distribution rule and a
  deterministic one by both rules; the adaptive search must give the same min_steps and reached for every
  scheduler (it used to gate on per-image metrics only: "not judged (stochastic sampler ...)");
- on a FLUX-style folder (dynamically shifted FlowMatchEulerDiscreteScheduler) the adaptive search must finish
  (it used to die after the search, counting NFE with set_timesteps(n) and no `mu`) and agree as well.

Each sweep is chosen so that, in the exhaustive run, every rule's pass/fail over the swept counts is
fail...fail pass...pass (checked below, from summary.json): a search over the counts can then find exactly the
exhaustive answer, and a disagreement is the search's fault, not the sweep's.
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest

import fake_weights
from fake_clip import backbone_string, save_tiny_clip
from tiny_models import FLOW_IMAGE_SIZE, save_tiny_flow

PROMPTS = "a cat sitting on a mat\nthree apples on a table\n"


def write_sweep(folder: Path, prompts: str, **keys) -> Path:
    """prompts.txt and sweep.toml in `folder` (TOML values written as JSON, which TOML reads the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text(prompts)
    lines = ['prompts = "prompts.txt"']
    for key, value in keys.items():
        if isinstance(value, dict):
            lines.append(f"{key} = {{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def min_steps(evalkit_cli, config: Path, out: Path, search: str = "exhaustive") -> dict:
    """`evalkit min-steps CONFIG --search SEARCH --out OUT`: exit 0, no traceback, its JSON answer per scheduler."""
    args = ["min-steps", str(config), "--search", search, "--out", str(out)]
    died = None
    try:
        code, stdout, stderr = evalkit_cli(args)
    except Exception as exc:  # the entry point re-raises anything that isn't an EvalkitError: a traceback
        died = "".join(traceback.format_exception(exc)[-3:]).rstrip()
    if died is not None:
        pytest.fail(f"`evalkit {' '.join(args)}` died with a traceback:\n{died}", pytrace=False)
    assert code == 0, f"`evalkit {' '.join(args)}` exited {code}: {stderr}"
    assert "Traceback" not in stderr, stderr
    return json.loads(stdout)


def answers(result: dict) -> dict:
    return {name: (entry["min_steps"], entry["reached"]) for name, entry in result.items()}


def assert_same_answers(adaptive: dict, exhaustive: dict) -> None:
    differ = {name: {"exhaustive": answers(exhaustive).get(name), "adaptive": answers(adaptive).get(name),
                     "adaptive why": adaptive.get(name, {}).get("why")}
              for name in sorted(set(exhaustive) | set(adaptive))
              if answers(exhaustive).get(name) != answers(adaptive).get(name)}
    assert not differ, "adaptive search disagrees with the exhaustive sweep (min_steps, reached):\n" + \
        json.dumps(differ, indent=2)


def assert_well_posed(out: Path) -> dict:
    """Every rule that judged, in the exhaustive run, fails then passes over the swept counts (never passes then
    fails again): the answer is findable by a search. Returns summary.json's min_steps block."""
    block = json.loads((out / "summary.json").read_text())["min_steps"]
    for name, entry in block["schedulers"].items():
        sequences = {metric: [e["pass"] for e in evidence] for metric, evidence in entry.get("evidence", {}).items()}
        distribution = entry.get("distribution") or {}
        if distribution.get("evidence"):
            sequences["distribution"] = [e["pass"] for e in distribution["evidence"]]
        for rule, passes in sequences.items():
            assert passes == sorted(passes), f"{name} / {rule}: pass pattern {passes} is not monotone: change the sweep"
    return block


def check_adaptive_matches_exhaustive(evalkit_cli, config: Path, tmp_path: Path, metric: str) -> None:
    exhaustive = min_steps(evalkit_cli, config, tmp_path / "exhaustive")
    block = assert_well_posed(tmp_path / "exhaustive")
    assert block["distribution"]["metric"] == metric  # the distribution rule ran on this metric (not skipped)
    # the stochastic sampler gets a number from the distribution rule
    sde = exhaustive["dpmpp_2m_sde_karras"]
    assert sde["reached"] is True and isinstance(sde["min_steps"], int), sde
    assert block["schedulers"]["dpmpp_2m_sde_karras"]["judged_by"] == ["distribution"]

    adaptive = min_steps(evalkit_cli, config, tmp_path / "adaptive", "adaptive")
    assert set(adaptive) == set(exhaustive)
    assert_same_answers(adaptive, exhaustive)


def test_adaptive_matches_exhaustive_with_cmmd_for_deterministic_and_stochastic_samplers(tmp_path, evalkit_cli):
    """CMMD on a random-weight tiny open_clip (32 px) backbone, 2 prompts x 16 seeds on builtin:mixture at 32 px.
    Exhaustive: dpmpp_2m_karras 4, dpmpp_2m_sde_karras 8 (distribution rule), euler 30, euler_a not reached."""
    backbone = backbone_string(save_tiny_clip(tmp_path / "clip"))
    config = write_sweep(tmp_path / "sweep", PROMPTS, seeds=16, size=32, steps=[1, 2, 4, 8, 15, 30],
                         reference_steps=60, schedulers=["euler", "dpmpp_2m_karras", "dpmpp_2m_sde_karras", "euler_a"],
                         metrics=["ssim", "cmmd"], backbones={"cmmd": backbone})
    check_adaptive_matches_exhaustive(evalkit_cli, config, tmp_path, "cmmd")


def test_adaptive_matches_exhaustive_with_kid_for_deterministic_and_stochastic_samplers(tmp_path, evalkit_cli,
                                                                                        monkeypatch):
    """KID on random Inception weights. Inception runs at 299 px on the CPU (a few images a second at one thread),
    so the sweep is small: 1 prompt x 6 seeds (3 units per seed-half, the rule's minimum), 4 counts, 3 schedulers
    (78 images exhaustive). Exhaustive: dpmpp_2m_karras 15 (the distribution rule, later than SSIM's 4),
    dpmpp_2m_sde_karras 50 (distribution), euler not reached (distribution; SSIM alone would say 50)."""
    home = tmp_path / "torch_home"
    fake_weights.write_inception_fid(home)
    monkeypatch.setenv("TORCH_HOME", str(home))
    config = write_sweep(tmp_path / "sweep", "a cat sitting on a mat\n", seeds=6, size=32, steps=[1, 4, 15, 50],
                         reference_steps=100, schedulers=["euler", "dpmpp_2m_karras", "dpmpp_2m_sde_karras"],
                         metrics=["ssim", "kid"])
    check_adaptive_matches_exhaustive(evalkit_cli, config, tmp_path, "kid")


def test_adaptive_search_on_a_dynamically_shifted_flux_model_finishes_and_matches(tmp_path, evalkit_cli):
    """A tiny FLUX.1-dev-style folder (FlowMatchEulerDiscreteScheduler with use_dynamic_shifting): the search runs
    to the end (exit 0, JSON on stdout, its cost in summary.json) and answers what the exhaustive sweep answers."""
    folder = save_tiny_flow(tmp_path / "flux-dev", "flux-dev")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["use_dynamic_shifting"] is True  # the case under test: `mu` comes from the image size
    config = write_sweep(tmp_path / "sweep", "a red cat\ntwo blue apples\n", model=f"diffusers:{folder}",
                         device="cpu", size=FLOW_IMAGE_SIZE, seeds=2, steps=[1, 2, 4, 8, 16], reference_steps=32,
                         schedulers=["flow_euler", "flow_dpmpp_2m"], metrics=["ssim"])
    exhaustive = min_steps(evalkit_cli, config, tmp_path / "exhaustive")
    assert_well_posed(tmp_path / "exhaustive")
    assert set(exhaustive) == {"flow_euler", "flow_dpmpp_2m"}
    assert all(entry["reached"] for entry in exhaustive.values()), exhaustive

    adaptive = min_steps(evalkit_cli, config, tmp_path / "adaptive", "adaptive")
    assert_same_answers(adaptive, exhaustive)
    cost = json.loads((tmp_path / "adaptive" / "summary.json").read_text())["min_steps"]["cost"]
    assert 0 < cost["sweep_nfe"] <= cost["exhaustive_sweep_nfe"]
