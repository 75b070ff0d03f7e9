"""A LAION-aesthetic-style metric plugin on a tiny random-weight open_clip model, for offline tests.

Weights live where a real install keeps them: the tiny CLIP and the head under
$TORCH_HOME/hub/checkpoints/ (written by `write_tiny_aesthetic`), so a Ray worker, which sees the same
TORCH_HOME, rebuilds the same scorer from "python:plugins.aesthetic:tiny_aesthetic"."""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import torch  # noqa: E402
from fake_clip import TINY_CLIP, TINY_CLIP_CONFIG, backbone_string, register_tiny_clip, save_tiny_clip  # noqa: E402

from evalkit.metrics.base import hub_checkpoint  # noqa: E402
from evalkit.metrics.heads import ClipHeadScorer  # noqa: E402

HEAD_FILE = "evalkit-tiny-aesthetic-head.pth"
SOURCE = "python:plugins.aesthetic:tiny_aesthetic"


def write_tiny_aesthetic(seed: int = 0) -> tuple[Path, Path]:
    """The tiny CLIP and a random Linear-stack head (LAION layout: layers.0/2/4/6/7) under TORCH_HOME."""
    clip_file = save_tiny_clip(hub_checkpoint("x").parent, seed=seed)
    torch.manual_seed(seed)
    dims = [TINY_CLIP_CONFIG["embed_dim"], 64, 32, 16, 8, 1]
    state = {}
    for index, (fan_in, fan_out) in zip([0, 2, 4, 6, 7], zip(dims, dims[1:])):
        layer = torch.nn.Linear(fan_in, fan_out)
        state[f"layers.{index}.weight"], state[f"layers.{index}.bias"] = layer.weight.detach(), layer.bias.detach()
    torch.save(state, hub_checkpoint(HEAD_FILE))
    return clip_file, hub_checkpoint(HEAD_FILE)


def tiny_aesthetic() -> ClipHeadScorer:
    register_tiny_clip()
    clip_file = hub_checkpoint(f"{TINY_CLIP}.pt")
    return ClipHeadScorer(head=hub_checkpoint(HEAD_FILE), clip_backbone=backbone_string(clip_file),
                          name="tiny_aesthetic", tolerance=0.5, fetch="tests: write_tiny_aesthetic()")
