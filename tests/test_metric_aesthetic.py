"""The built-in `aesthetic` metric (LAION aesthetic predictor v2) equals the reference computation on the real
architecture: random weights in the official formats at the paths the loaders read (the head's state dict in
$TORCH_HOME/hub/checkpoints/, ViT-L/14 in open_clip's Hugging Face cache), scored by evalkit and by a computation
written here from the reference code (open_clip directly, L2-normalised image embedding, the MLP of the
improved-aesthetic-predictor repository)."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import evalkit
from evalkit.metrics import METRICS
from evalkit.metrics.base import MetricOptions
from evalkit.metrics.heads import AESTHETIC_FILE

REVISION = "0" * 40


class MLP(torch.nn.Module):
    """improved-aesthetic-predictor's MLP (simple_inference.py), as its checkpoint stores it: `layers.N.*`."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random ViT-L/14 (QuickGELU, as OpenAI's) and head, written where open_clip and the head's users keep them."""
    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    clip_model = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    repo = root / "hf" / "hub" / "models--timm--vit_large_patch14_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    torch.save(clip_model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    head = MLP()
    (root / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(head.state_dict(), root / "torch" / "hub" / "checkpoints" / AESTHETIC_FILE)
    return root, snapshot / "open_clip_pytorch_model.bin", head.eval()


def test_aesthetic_equals_the_reference_computation_on_the_real_architecture(weights, monkeypatch):
    root, clip_file, head = weights
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    spec = METRICS.get("aesthetic")
    assert spec.missing_weights(MetricOptions()) == []
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64), dtype=np.uint8))
    ours = spec.build(MetricOptions()).score(images, ["unused"] * 3)

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-L-14", pretrained=str(clip_file),
                                                                 force_quick_gelu=True)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(a)) for a in images.permute(0, 2, 3, 1).numpy()])
        embedding = model.eval().encode_image(pixels).float()
        embedding = embedding / embedding.norm(dim=-1, keepdim=True)  # the reference's `normalized` (L2)
        reference = head(embedding).squeeze(-1)
    assert ours.shape == (3,) and reference.std() > 0
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0), (ours, reference)


def test_aesthetic_shares_clip_scores_image_embeddings_on_vit_l14():
    """One image-tower pass per image when clip_score (or CMMD) runs on the same backbone: one feature folder."""
    aesthetic = METRICS.get("aesthetic").feature_id(MetricOptions())
    assert aesthetic == METRICS.get("clip_score").feature_id(MetricOptions(backbone="ViT-L-14/openai"))


def test_without_the_files_aesthetic_is_skipped_with_the_fetch_command(tmp_path, monkeypatch, prompts):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    run = evalkit.run({"prompts": prompts, "out": str(tmp_path / "run"), "schedulers": ["euler"], "steps": [2],
                       "seeds": 1, "reference_steps": 4, "metrics": ["ssim", "aesthetic"]})
    skipped = json.loads((run.dir / "summary.json").read_text())["skipped_metrics"]
    assert AESTHETIC_FILE in skipped["aesthetic"] and "curl -L" in skipped["aesthetic"]
    assert "vit_large_patch14_clip_224.openai" in skipped["aesthetic"]
    assert "aesthetic" not in set(run.scores.metric)  # never a number without its weights
