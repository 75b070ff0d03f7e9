"""PickScore v1 (image+prompt human-preference score) with transformers, exactly as its model card loads it.

Model card (huggingface.co/yuvalkirstain/PickScore_v1, "How to Get Started"; the same code is in
github.com/yuvalkirstain/PickScore)::

    processor = AutoProcessor.from_pretrained("laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    model = AutoModel.from_pretrained("yuvalkirstain/PickScore_v1").eval()
    image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
    text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
    image_embs = model.get_image_features(**image_inputs); image_embs /= image_embs.norm(dim=-1, keepdim=True)
    text_embs = model.get_text_features(**text_inputs); text_embs /= text_embs.norm(dim=-1, keepdim=True)
    scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]

so ``pickscore = exp(logit_scale) * cos(image_embedding, text_embedding)`` per (image, prompt) pair, no clamp and
no softmax (the card's softmax over several images of one prompt is a probability, not the score).
``logit_scale`` is a parameter of the checkpoint: its value is read from the loaded model, never assumed.

Kind: ``preference`` (base.PREFERENCE): PickScore predicts which image people prefer for a prompt (alignment and
aesthetics mixed), which is neither pure alignment nor realism.

Preprocessing (the laion repo's preprocessor_config.json: legacy ``CLIPFeatureExtractor``, size 224, crop_size 224,
resample 3 = bicubic, OpenAI CLIP mean/std; read from the cached file, not restated here): each uint8 (3, H, W)
image becomes a PIL RGB image (the card passes PIL images), then transformers' PIL-backend ``CLIPImageProcessor``
resizes the shortest side to 224 with PIL bicubic (long side ``int(224 * long / short)``), center-crops 224x224
(``top = (h - 224) // 2``), rescales by 1/255 and normalises with mean (0.48145466, 0.4578275, 0.40821073), std
(0.26862954, 0.26130258, 0.27577711). The PIL backend is requested explicitly (``backend="pil"``): transformers 5's
``AutoProcessor`` otherwise picks the torchvision backend, whose tensor resize differs from PIL's by a few grey
levels, while the model card's transformers 4.x used the PIL one. Text: the laion repo's CLIP BPE tokenizer
(tokenizer.json), truncated to 77 tokens (end-of-text kept), prompts of a batch padded to the longest (the text
tower's causal mask and end-of-text pooling make the padding inert). Truncated prompts are counted
(``scorer.truncated_prompts``) and warned about once per call that saw new ones; never an error.

Weights: read from the Hugging Face hub cache ($HF_HUB_CACHE, or $HF_HOME/hub; resolved at call time, revision
``refs/main``) and passed to ``from_pretrained`` as local snapshot folders with ``local_files_only=True``: nothing is
ever downloaded. The files listed by :func:`weights` are exactly those the two loaders read (traced with transformers
5.24): PickScore_v1's config.json and model.safetensors (pytorch_model.bin if only that is cached), and the laion
repo's config.json (AutoProcessor reads it to pick CLIPProcessor), preprocessor_config.json, tokenizer_config.json
and tokenizer.json. The laion repo's own model weights are not needed.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import EvalkitError
from . import published
from .base import (
    IMAGE_PROMPT,
    PREFERENCE,
    MetricOptions,
    MetricSpec,
    WeightFile,
    register,
    require_weights,
)
from .clip import hf_cached, hf_fetch, hf_weight

NAME = "pickscore"
MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_LENGTH = 77
MODEL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # transformers reads the first present
PROCESSOR_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
BACKBONE = f"{MODEL_REPO} (transformers CLIPModel, CLIP ViT-H/14 fine-tuned on Pick-a-Pic) + {PROCESSOR_REPO} processor"
PREPROCESSING = (
    "PickScore v1 model card: uint8 (3,H,W) -> PIL RGB -> transformers CLIPImageProcessor, PIL backend, from "
    f"{PROCESSOR_REPO} preprocessor_config.json: resize shortest side -> 224 (PIL bicubic, long side "
    "int(224*long/short)) -> center crop 224x224 (top=(h-224)//2) -> /255 -> Normalize(mean=(0.48145466, 0.4578275, "
    "0.40821073), std=(0.26862954, 0.26130258, 0.27577711)). Per-image. Text: CLIP BPE tokenizer (tokenizer.json), "
    "truncation to 77 tokens, padding to the longest. Score exp(logit_scale) * cos(image_embeds, text_embeds) with "
    "get_image_features/get_text_features L2-normalised; no clamp, no softmax."
)


def _parse_backbone(options: MetricOptions) -> None:
    if options.backbone not in (None, "", MODEL_REPO):
        raise EvalkitError(f"{NAME} backbone {options.backbone!r}: PickScore has one backbone ({MODEL_REPO}); "
                           f"remove {NAME} from backbones")


def weights(options: MetricOptions) -> list[WeightFile]:
    """Every file the two loaders read, each resolved in the hub cache at call time."""
    _parse_backbone(options)
    model_fetch = hf_fetch(MODEL_REPO, ("config.json", MODEL_WEIGHT_FILES[0]))
    processor_fetch = hf_fetch(PROCESSOR_REPO, PROCESSOR_FILES)
    return [
        hf_weight(MODEL_REPO, ("config.json",), f"{MODEL_REPO} model config", model_fetch),
        hf_weight(MODEL_REPO, MODEL_WEIGHT_FILES, f"{MODEL_REPO} weights (transformers reads the first present)",
                  model_fetch),
        *(hf_weight(PROCESSOR_REPO, (name,), f"{PROCESSOR_REPO} processor file {name}", processor_fetch)
          for name in PROCESSOR_FILES),
    ]


def snapshot_dirs() -> tuple[Path, Path]:
    """(PickScore_v1 snapshot, laion processor snapshot) folders in the hub cache, at refs/main."""
    model = hf_cached(MODEL_REPO, ["config.json"])
    processor = hf_cached(PROCESSOR_REPO, ["preprocessor_config.json"])
    if model is None or processor is None:
        require_weights(weights(MetricOptions()), NAME)  # raises, naming what is missing
    return model.parent, processor.parent


def _embedding(output: Any) -> torch.Tensor:
    """get_*_features: a tensor in transformers 4, an output whose pooler_output is the projection in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class PickScorer:
    """Scores (image, prompt) pairs; caches text embeddings per prompt."""

    def __init__(self, model: torch.nn.Module, processor: Any, *, batch_size: int = 16, device: str = "cpu"):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.truncated = 0  # distinct prompts truncated to MAX_LENGTH tokens
        self.truncated_prompts: list[str] = []
        self._text_cache: dict[str, torch.Tensor] = {}

    # -- images ---------------------------------------------------------------------------
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"{NAME} expects uint8 images (B, 3, H, W); got {images.dtype} {tuple(images.shape)}")
        arrays = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        inputs = self.processor(images=[Image.fromarray(a) for a in arrays], return_tensors="pt")
        return inputs["pixel_values"]

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D), float32 on CPU."""
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            pixels = self._pixels(images[start:start + self.batch_size]).to(self.device)
            embeds = _embedding(self.model.get_image_features(pixel_values=pixels)).float()
            out.append((embeds / embeds.norm(dim=-1, keepdim=True)).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    # -- text -----------------------------------------------------------------------------
    def _note_truncation(self, prompts: Sequence[str]) -> None:
        tokenizer = self.processor.tokenizer
        # one token past the context is enough to tell (and keeps transformers from warning about long inputs)
        newly = [p for p in prompts
                 if len(tokenizer(p, truncation=True, max_length=MAX_LENGTH + 1)["input_ids"]) > MAX_LENGTH]
        if newly:
            self.truncated += len(newly)
            self.truncated_prompts.extend(newly)
            warnings.warn(f"{NAME}: {len(newly)} prompt(s) longer than the text encoder's {MAX_LENGTH}-token "
                          "context were truncated", stacklevel=3)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D), float32 on CPU; cached per prompt."""
        prompts = list(prompts)
        new = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if new:
            self._note_truncation(new)
            for start in range(0, len(new), self.batch_size):
                chunk = new[start:start + self.batch_size]
                tokens = self.processor(text=chunk, padding=True, truncation=True, max_length=MAX_LENGTH,
                                        return_tensors="pt")
                embeds = _embedding(self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device))).float()
                self._text_cache.update(zip(chunk, (embeds / embeds.norm(dim=-1, keepdim=True)).cpu()))
        return torch.stack([self._text_cache[p] for p in prompts]) if prompts else torch.zeros(0, 0)

    # -- score ----------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """exp(logit_scale), read from the checkpoint."""
        return float(self.model.logit_scale.detach().float().exp().cpu())

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``exp(logit_scale) * cos(image, prompt)`` per pair, shape (B,), float32."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{NAME}: {images.shape[0]} images but {len(prompts)} prompts")
        if not prompts:
            return torch.zeros(0)
        return self.scale * (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)


def build(options: MetricOptions) -> PickScorer:
    """Load model and processor once, from the local hub cache only; fail fast (one line) if a file is missing."""
    _parse_backbone(options)
    require_weights(weights(options), NAME)
    model_dir, processor_dir = snapshot_dirs()
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(processor_dir), local_files_only=True, backend="pil")
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(options.device)
    return PickScorer(model, processor, batch_size=options.batch_size, device=options.device)


PICKSCORE = register(MetricSpec(
    name=NAME,
    inputs=IMAGE_PROMPT,
    kind=PREFERENCE,
    higher_is_better=True,
    tolerance=published.PICKSCORE.tolerance(),
    meaning=published.PICKSCORE.meaning(),
    backbone=BACKBONE,
    preprocessing=PREPROCESSING,
    build=build,
    weights=weights,
))
