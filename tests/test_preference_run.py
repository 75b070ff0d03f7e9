"""Issue 20's run: `evalkit run --metrics ssim,lpips,clip_score,hpsv2,pickscore,imagereward,aesthetic` with random
official-format files at the standard cache paths scores every metric, draws their curves and judges minimum steps
with all of them; without the files each preference metric is skipped with its fetch command.

The files are the ones each metric's own test writes and checks against the reference computation
(tests/test_metric_{hpsv2,pickscore,imagereward,aesthetic}.py), in the small architectures their formats allow:
HPS v2.1 as a tiny open_clip state dict (hpsv2.ARCHITECTURE, its test hook), PickScore as a tiny transformers
CLIPModel, ImageReward as a small BLIP (imagereward.VISION, its test hook), the aesthetic head at its real size on a
tiny open_clip model with ViT-L/14's 768-d embeddings (heads.AESTHETIC_CLIP, a local checkpoint), shared with
clip_score. Everything is found through TORCH_HOME / HF_HOME / HF_HUB_CACHE, never the network.

As a script it runs the same metrics on the default sweep (every default scheduler, count and prompt):
    python tests/test_preference_run.py OUT_DIR
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from evalkit.metrics import heads, hpsv2, imagereward
from evalkit.metrics.heads import AESTHETIC_FILE
from evalkit.metrics.published import LEADERBOARDS
from fake_clip import TINY_CLIP, TINY_CLIP_768, backbone_string, register_tiny_clip, save_tiny_clip
from fake_weights import write_alexnet

METRICS = ["ssim", "lpips", "clip_score", "hpsv2", "pickscore", "imagereward", "aesthetic"]
PREFERENCE = ["hpsv2", "pickscore", "imagereward", "aesthetic"]
SMALL_SWEEP = ["--schedulers", "euler,dpmpp_2m", "--steps", "4,12,32", "--seeds", "2"]

pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection fails loudly


def install(root: Path, patch) -> str:
    """Write every metric's files in its official format where its loader looks, point the caches there (`patch`:
    a pytest MonkeyPatch) and return the clip_score backbone aesthetic shares."""
    from test_metric_aesthetic import MLP
    from test_metric_hpsv2 import write_hf_checkpoint
    from test_metric_imagereward import TINY_VISION
    from test_metric_imagereward import build_fake_hub as imagereward_hub
    from test_metric_pickscore import build_fake_hub as pickscore_hub

    import open_clip

    torch_home, hf_home = root / "torch", root / "hf"
    write_alexnet(torch_home)  # lpips' trunk; its linear layers ship in the lpips package
    torch.manual_seed(0)
    (torch_home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(MLP().state_dict(), torch_home / "hub" / "checkpoints" / AESTHETIC_FILE)
    clip_backbone = backbone_string(save_tiny_clip(root / "clip", name=TINY_CLIP_768), TINY_CLIP_768)

    hub = hf_home / "hub"
    register_tiny_clip()
    torch.manual_seed(0)
    write_hf_checkpoint(hub, dict(open_clip.create_model(TINY_CLIP).state_dict()))
    for builder, where in ((pickscore_hub, root / "pickscore"), (imagereward_hub, root / "imagereward")):
        builder(where)
        for repo in (where / "hub").iterdir():  # one hub cache holds every repo, as on a user's machine
            shutil.copytree(repo, hub / repo.name, symlinks=True)

    patch.setenv("TORCH_HOME", str(torch_home))
    patch.setenv("HF_HOME", str(hf_home))
    patch.delenv("HF_HUB_CACHE", raising=False)
    patch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    patch.setattr(hpsv2, "ARCHITECTURE", TINY_CLIP)
    patch.setattr(imagereward, "VISION", dict(TINY_VISION))
    patch.setattr(heads, "AESTHETIC_CLIP", clip_backbone)
    return clip_backbone


def run_args(out: Path, clip_backbone: str, sweep: list[str]) -> list[str]:
    return ["run", "--out", str(out), "--metrics", ",".join(METRICS), "--backbones", f"clip_score={clip_backbone}",
            *sweep]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One small sweep of the default model, scored by all seven metrics: (run folder, exit code)."""
    from evalkit.cli import main

    root = tmp_path_factory.mktemp("preference-run")
    with pytest.MonkeyPatch.context() as patch:
        clip_backbone = install(root / "caches", patch)
        patch.setattr(sys, "argv", ["evalkit", *run_args(root / "run", clip_backbone, SMALL_SWEEP)])
        with pytest.raises(SystemExit) as exit_info:
            main()
    return root / "run", exit_info.value.code


def test_every_metric_is_scored_on_every_column(scored):
    run, code = scored
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_metrics"] == {}
    images = pd.read_parquet(run / "images.parquet")
    sweep = images[images.role == "sweep"]
    assert len(sweep) == 2 * 3 * 12 * 2  # schedulers x counts x default prompts x seeds
    references = images[images.role == "reference"]
    assert len(references) == 12 * 2
    values = pd.read_parquet(run / "scores.parquet")
    for metric in METRICS:
        mine = values[values.metric == metric]
        # every swept image has a value; absolute metrics also score the references (their high-step point)
        expected = set(sweep.key) if metric in ("ssim", "lpips") else set(sweep.key) | set(references.key)
        assert set(mine.key) == expected and len(mine) == len(expected), metric
        assert mine.value.notna().all(), metric
    set_scores = pd.read_parquet(run / "set_scores.parquet")
    swept = {(s, n) for s in ("euler", "dpmpp_2m") for n in (4, 12, 32)}
    reference = set(references[["scheduler", "steps"]].itertuples(index=False, name=None))
    for metric in METRICS:
        columns = set(set_scores[set_scores.metric == metric][["scheduler", "steps"]].itertuples(index=False, name=None))
        assert columns == (swept if metric in ("ssim", "lpips") else swept | reference), metric


def test_preference_metrics_judge_min_steps_with_their_derived_tolerances(scored):
    run, _ = scored
    block = json.loads((run / "summary.json").read_text())["min_steps"]
    for metric in PREFERENCE:
        assert block["tolerances"][metric] == LEADERBOARDS[metric].tolerance()
    for scheduler, answer in block["schedulers"].items():
        assert set(answer["evidence"]) == set(METRICS), scheduler  # every metric's evidence at every count
        for metric in PREFERENCE:
            assert [e["steps"] for e in answer["evidence"][metric]] == [4, 12, 32]
            top = answer["evidence"][metric][-1]  # the plateau: the highest swept count, paired with itself
            assert (top["distance"], top["ci_low"], top["ci_high"], top["pass"]) == (0.0, 0.0, 0.0, True)
    reached = {name: a["min_steps"] for name, a in block["schedulers"].items()}
    assert reached["dpmpp_2m"] is not None  # the rule answers with all seven metrics gating
    assert set(block["schedulers"]["dpmpp_2m"]["quality"]) == set(METRICS)


def test_the_report_draws_each_metrics_curve_and_says_what_its_tolerance_means(scored):
    run, _ = scored
    html = (run / "report.html").read_text()
    for metric in METRICS:
        assert f'"{metric}' in html  # a curve's title / trace names the metric
    for metric in PREFERENCE:
        assert LEADERBOARDS[metric].source.replace("'", "&#x27;") in html


def test_without_the_files_each_preference_metric_is_skipped_with_its_fetch_command(tmp_path, monkeypatch,
                                                                                     evalkit_cli):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    code, out, err = evalkit_cli(["run", "--out", str(tmp_path / "run"), "--metrics", ",".join(["ssim", *PREFERENCE]),
                                  "--schedulers", "euler", "--steps", "2", "--seeds", "1"])
    assert code == 0, err
    skipped = json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_metrics"]
    assert sorted(skipped) == sorted(PREFERENCE)
    fetch = "HF_HOME=<same HF_HOME> hf download"
    assert f"{fetch} xswu/HPSv2 HPS_v2.1_compressed.pt" in skipped["hpsv2"]
    assert f"{fetch} yuvalkirstain/PickScore_v1 config.json model.safetensors" in skipped["pickscore"]
    assert f"{fetch} laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in skipped["pickscore"]
    assert f"{fetch} THUDM/ImageReward ImageReward.pt med_config.json" in skipped["imagereward"]
    assert f"{fetch} bert-base-uncased vocab.txt" in skipped["imagereward"]
    assert "curl -L" in skipped["aesthetic"] and AESTHETIC_FILE in skipped["aesthetic"]
    values = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    assert set(values.metric) == {"ssim"}  # never a number without its weights


if __name__ == "__main__":  # the default sweep, for the closing note: python tests/test_preference_run.py OUT
    from evalkit.cli import main

    out = Path(sys.argv[1]).resolve()
    with pytest.MonkeyPatch.context() as patch:
        backbone = install(out.parent / f"{out.name}-caches", patch)
        patch.setattr(sys, "argv", ["evalkit", *run_args(out, backbone, [])])
        main()
