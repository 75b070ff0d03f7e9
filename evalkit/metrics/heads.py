"""MLP heads on open_clip image embeddings: the built-in `aesthetic` metric (the LAION aesthetic predictor v2), and
the same scorer as a worked metric plugin for heads of that layout.

The LAION "improved aesthetic predictor" (christophschuhmann/improved-aesthetic-predictor) is a stack of
Linear layers (768 -> 1024 -> 128 -> 64 -> 16 -> 1, dropout between, no activations) saved as a state dict
with keys ``layers.{0,2,4,6,7}.{weight,bias}``, applied to L2-normalised CLIP ViT-L/14 image embeddings;
it predicts a 1-10 rating. `ClipHeadScorer` rebuilds any such Linear stack from the checkpoint's own
shapes, so PickScore-style or in-house reward heads on an open_clip backbone plug in the same way.

Built in as ``aesthetic``: the head from $TORCH_HOME/hub/checkpoints/ (where the reference code's users keep it) on
ViT-L/14 OpenAI CLIP from open_clip's cache, the image embedding shared with clip_score and CMMD when they run on
that backbone (one image-tower pass per image). As a plugin (README "Metric plugins"):
``metrics = ["python:evalkit.metrics.heads:laion_aesthetic"]``, or a three-line factory of your own that returns
``ClipHeadScorer(head=..., clip=...)``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from . import clip, published
from .base import IMAGE_PROMPT, PREFERENCE, MetricOptions, MetricSpec, WeightFile, hub_checkpoint, register, require_weights

AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_URL = f"https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/{AESTHETIC_FILE}"
HEAD_INPUT = "L2-normalised image embedding -> Linear stack"
AESTHETIC_CLIP = "ViT-L-14/openai"  # what the head was trained on: L2-normalised ViT-L/14 OpenAI image embeddings
AESTHETIC_FETCH = (f"curl -L --create-dirs -o \"${{TORCH_HOME:-$HOME/.cache/torch}}/hub/checkpoints/{AESTHETIC_FILE}\" "
                   f"'{AESTHETIC_URL}'")


def linear_stack(state: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """The Linear layers of a `layers.N.weight/bias` state dict, in index order (dropout is a no-op at eval)."""
    indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("layers.") and key.endswith(".weight")})
    if not indices:
        raise ValueError("head checkpoint has no layers.N.weight tensors (expected a Linear stack)")
    layers = []
    for i in indices:
        weight = state[f"layers.{i}.weight"]
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
        layer.load_state_dict({"weight": weight, "bias": state[f"layers.{i}.bias"]})
        layers.append(layer)
    return torch.nn.Sequential(*layers).eval()


class ClipHeadScorer:
    """image+prompt plugin: head(normalised CLIP image embedding), one value per image (prompts unused)."""

    higher_is_better = True
    kind = "aesthetic"

    def __init__(self, head: str | Path, clip_backbone: str, name: str = "aesthetic", tolerance: float | None = None,
                 device: str = "cpu", fetch: str = ""):
        head = Path(head).expanduser()
        if not head.is_file():
            raise FileNotFoundError(f"head checkpoint {head} not found (fetch: {fetch or 'put the state dict there'})")
        options = MetricOptions(device=device, backbone=clip_backbone)
        missing = [w for w in clip.weights(options) if not w.found()]
        if missing:
            raise FileNotFoundError("; ".join(f"{w.description} at {w.path()} (fetch: {w.fetch})" for w in missing))
        self.name, self.tolerance = name, tolerance
        self.clip = clip.build(options)
        self.head = linear_stack(torch.load(head, map_location="cpu", weights_only=True)).to(device)
        digest = hashlib.sha256(head.read_bytes()).hexdigest()[:16]
        self.identity = f"{self.clip.backbone} + head sha256 {digest}"
        self.preprocessing = f"open_clip eval preprocess of {clip_backbone}; {HEAD_INPUT}"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.score_embeddings(self.features(images), prompts)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The L2-normalised CLIP image embeddings the head reads (what the shared feature folder stores)."""
        return self.clip.image_features(images)

    @torch.no_grad()
    def score_embeddings(self, embeddings: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.head(embeddings.float().to(next(self.head.parameters()).device)).squeeze(-1).float().cpu()


def laion_aesthetic() -> ClipHeadScorer:
    """LAION aesthetic v2 (linear MSE head on ViT-L/14 OpenAI CLIP), head at $TORCH_HOME/hub/checkpoints/."""
    return ClipHeadScorer(head=hub_checkpoint(AESTHETIC_FILE), clip_backbone=AESTHETIC_CLIP, tolerance=published.AESTHETIC.tolerance(),
                          fetch=AESTHETIC_FETCH)


def _aesthetic_weights(options: MetricOptions) -> list[WeightFile]:
    head = WeightFile(description=f"LAION aesthetic predictor v2 head ({AESTHETIC_FILE})",
                      path=lambda: hub_checkpoint(AESTHETIC_FILE), fetch=AESTHETIC_FETCH)
    return [head, *clip.weights(MetricOptions(backbone=AESTHETIC_CLIP))]


def _build_aesthetic(options: MetricOptions) -> ClipHeadScorer:
    require_weights(_aesthetic_weights(options), "aesthetic")
    return ClipHeadScorer(head=hub_checkpoint(AESTHETIC_FILE), clip_backbone=AESTHETIC_CLIP, device=options.device,
                          fetch=AESTHETIC_FETCH)


AESTHETIC = register(MetricSpec(
    name="aesthetic", inputs=IMAGE_PROMPT, kind=PREFERENCE, higher_is_better=True,
    tolerance=published.AESTHETIC.tolerance(), meaning=published.AESTHETIC.meaning(),
    backbone=f"LAION aesthetic predictor v2 ({AESTHETIC_FILE}) on open_clip {AESTHETIC_CLIP}",
    preprocessing=(f"open_clip eval preprocess of {AESTHETIC_CLIP}: uint8 (3,H,W) -> PIL RGB -> Resize(shortest side "
                   "-> 224, bicubic, PIL antialiased) -> CenterCrop(224) -> ToTensor (/255) -> Normalize(OpenAI CLIP "
                   f"mean/std); {HEAD_INPUT} (768-1024-128-64-16-1, dropout off); prompts unused"),
    build=_build_aesthetic, weights=_aesthetic_weights,
    embeddings=lambda options: clip.embedding_id(AESTHETIC_CLIP),
))
