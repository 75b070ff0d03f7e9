"""CLIP score (image+prompt alignment) with open_clip.

``clip_score = 100 * cos(image_embedding, text_embedding)`` per (image, prompt) pair, with NO
clamp: this is MLPerf's SDXL convention (open_clip ViT-B/32, OpenAI weights). torchmetrics'
``CLIPScore`` instead reports ``max(100 * cos, 0)`` (clamped at 0, averaged) with ViT-L/14 by
default, so its numbers are not comparable with these. Scores are only comparable within one
backbone and one preprocessing.

Backbone strings (``MetricOptions.backbone``; ``None`` means :data:`DEFAULT_BACKBONE`):

* ``MODEL/PRETRAINED`` — an open_clip built-in model name and pretrained tag, e.g.
  ``ViT-B-32-quickgelu/openai`` (the default) or ``ViT-L-14/openai``. Weights come from the cache that
  open_clip's own loader reads (the Hugging Face hub cache for ``hf_hub`` tags, honouring
  ``HF_HUB_CACHE`` / ``HF_HOME`` at call time); nothing is ever downloaded.
* ``MODEL@/path/to/checkpoint.pt`` (or ``.pth``, ``.bin``, ``.safetensors``) — an open_clip model
  config name (built-in or registered with ``open_clip.add_model_config``) plus a local state
  dict, loaded with ``create_model_and_transforms(MODEL, pretrained=PATH)``. No pretrained-tag
  settings are applied on this path: e.g. OpenAI weights need the ``-quickgelu`` model name
  (``ViT-B-32-quickgelu@/path``) to reproduce the default.

``hf-hub:`` and ``local-dir:`` schemas are rejected (the former goes online).

QuickGELU: OpenAI's CLIP weights were trained with QuickGELU. MLPerf's reference
(``create_model_and_transforms('ViT-B/32', pretrained='openai')`` with open-clip-torch 2.7.0)
got QuickGELU because old open_clip loaded the ``openai`` tag through a special path. Since
open_clip PR #970 (merged Oct 2024, present in 3.3) ``ViT-B-32`` + ``openai`` builds native GELU and only warns "QuickGELU
mismatch", which changes the embeddings. Hence the default is the explicit
``ViT-B-32-quickgelu/openai`` (same weight file, ``timm/vit_base_patch32_clip_224.openai``), and
for any tag whose pretrained config says ``quick_gelu`` this module passes
``force_quick_gelu=True``, so ``ViT-B-32/openai`` builds the same model.

Preprocessing (verified in open_clip 3.3 ``transform.image_transform``, eval branch, for the
OpenAI tags: ``resize_mode='shortest'``, ``interpolation='bicubic'``): each uint8 (3, H, W) image
is converted to a PIL RGB image, then ``Resize(image_size, BICUBIC)`` (torchvision on PIL: the
shortest side to ``image_size``, PIL's antialiased bicubic), ``CenterCrop(image_size)``,
``ToTensor`` (/255) and ``Normalize`` with the OpenAI CLIP mean (0.48145466, 0.4578275,
0.40821073) and std (0.26862954, 0.26130258, 0.27577711). Images are preprocessed one by one,
so results do not depend on the batch size beyond float rounding in the encoder.

Image embeddings are cached by image content in a feature folder named by :func:`embedding_id` (the
backbone and the eval preprocessing open_clip builds for it); CMMD with the same backbone reads the same
folder, so each image goes through the image tower once for both metrics.

Text: open_clip's tokenizer for the model (``SimpleTokenizer``, BPE vocab shipped inside the
package) truncates to the context length (77) keeping the end-of-text token. The scorer counts
distinct prompts that were truncated (``scorer.truncated``) and warns once per call that saw new
truncations; it never errors.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..errors import EvalkitError
from .base import ALIGNMENT, IMAGE_PROMPT, MetricOptions, MetricSpec, WeightFile, hf_home, register

DEFAULT_BACKBONE = "ViT-B-32-quickgelu/openai"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

PREPROCESSING = (
    "open_clip eval preprocess of the backbone (verified in open_clip 3.3 transform.image_transform): "
    "uint8 (3,H,W) -> PIL RGB -> torchvision Resize(shortest side -> image_size, bicubic, PIL antialiased) "
    "-> CenterCrop(image_size) -> ToTensor (/255) -> Normalize(mean=(0.48145466, 0.4578275, 0.40821073), "
    "std=(0.26862954, 0.26130258, 0.27577711)); ViT-B-32: image_size 224. Per-image, batch-size invariant. "
    "Text: open_clip SimpleTokenizer, truncated to 77 tokens (EOT kept). Score 100*cos, no clamp."
)


@dataclass(frozen=True)
class Backbone:
    model: str
    pretrained: str | None = None  # an open_clip pretrained tag
    checkpoint: Path | None = None  # a local state dict

    def __str__(self) -> str:
        return f"{self.model}@{self.checkpoint}" if self.checkpoint else f"{self.model}/{self.pretrained}"


def parse_backbone(backbone: str | None) -> Backbone:
    """``MODEL/PRETRAINED`` or ``MODEL@/path/to/checkpoint.{pt,pth,bin,safetensors}``."""
    text = (backbone or DEFAULT_BACKBONE).strip()
    if text.startswith(("hf-hub:", "local-dir:")):
        raise EvalkitError(f"clip_score backbone {text!r}: hf-hub:/local-dir: schemas are not supported; "
                           "use MODEL/PRETRAINED or MODEL@/path/to/checkpoint")
    if "@" in text:
        model, path = (part.strip() for part in text.split("@", 1))
        checkpoint = Path(path).expanduser()
        if not model or not path or checkpoint.suffix not in CHECKPOINT_SUFFIXES:
            raise EvalkitError(f"clip_score backbone {text!r}: expected MODEL@/path/to/checkpoint"
                               f" with one of {CHECKPOINT_SUFFIXES}")
        return Backbone(model=model, checkpoint=checkpoint)
    if "/" in text:
        model, tag = (part.strip() for part in text.rsplit("/", 1))
        if model and tag:
            return Backbone(model=model, pretrained=tag)
    raise EvalkitError(f"clip_score backbone {text!r}: expected MODEL/PRETRAINED (e.g. {DEFAULT_BACKBONE};"
                       " `python -c \"import open_clip; print(open_clip.list_pretrained())\"` lists them)"
                       " or MODEL@/path/to/checkpoint.pt")


EMBEDDINGS = "open_clip image embeddings, L2-normalised (clip.ClipScorer.image_features)"


def embedding_id(backbone: str | None) -> str:
    """What identifies a backbone's image embeddings: the backbone (model, pretrained tag or checkpoint) and the
    eval transform open_clip builds for it, so a change to either names a new feature folder."""
    parsed = parse_backbone(backbone)
    return f"{EMBEDDINGS}\n{parsed}\n{eval_preprocess(parsed)}"


def eval_preprocess(backbone: Backbone) -> str:
    """repr of the eval transform ``create_model_and_transforms`` returns for the backbone, derived from open_clip's
    configs without loading weights (its factory's order: defaults, then the tag's config, then the model's size)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    from open_clip.utils import to_2tuple

    model_cfg = open_clip.get_model_config(backbone.model.replace("/", "-"))
    if model_cfg is None:
        raise EvalkitError(f"clip_score backbone {backbone}: unknown open_clip model {backbone.model!r}: use a model "
                           "from `python -c \"import open_clip; print(open_clip.list_models())\"`")
    cfg = merge_preprocess_dict(PreprocessCfg(), _pretrained_cfg(backbone) if backbone.pretrained else {})
    cfg["size"] = to_2tuple(model_cfg["vision_cfg"].get("image_size", cfg["size"]))
    return repr(image_transform_v2(PreprocessCfg(**cfg), is_train=False))


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved now (huggingface_hub freezes it at import time)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    return hf_home() / "hub"


def _pretrained_cfg(backbone: Backbone) -> dict:
    import open_clip

    model = backbone.model.replace("/", "-")  # open_clip cleans names the same way
    cfg = open_clip.get_pretrained_cfg(model, backbone.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise EvalkitError(f"clip_score backbone {backbone}: unknown open_clip model/pretrained tag: "
                           f"use {model}/TAG with a TAG from {tags}" if tags else
                           f"clip_score backbone {backbone}: unknown open_clip model {model!r}: use a model from "
                           "`python -c \"import open_clip; print(open_clip.list_pretrained())\"`")
    return cfg


def hf_cached(repo_id: str, filenames: Sequence[str]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # reads the cache only, no network

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_hub_cache()))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def hf_expected(repo_id: str, filename: str) -> Path:
    repo_dir = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / "main"
    revision = ref.read_text().strip() if ref.is_file() else "<revision>"
    return repo_dir / "snapshots" / revision / filename


def hf_fetch(repo_id: str, filenames: Sequence[str]) -> str:
    """The command that puts `filenames` of `repo_id` in the hub cache evalkit reads, on a connected machine."""
    return f"HF_HOME=<same HF_HOME> hf download {repo_id} {' '.join(filenames)}"


def hf_weight(repo_id: str, candidates: Sequence[str], what: str, fetch: str) -> WeightFile:
    """A file of a Hugging Face repo in the hub cache, looked up when asked (the first of `candidates` present)."""
    candidates = tuple(candidates)
    return WeightFile(
        description=(f"{what}: Hugging Face hub cache ($HF_HUB_CACHE or $HF_HOME/hub)/models--"
                     f"{repo_id.replace('/', '--')}/snapshots/<refs/main>/{' or '.join(candidates)}"),
        path=lambda: hf_cached(repo_id, candidates) or hf_expected(repo_id, candidates[0]), fetch=fetch)


def _weight_files(backbone: Backbone) -> list[WeightFile]:
    if backbone.checkpoint is not None:
        path = backbone.checkpoint
        return [WeightFile(description=f"local open_clip checkpoint for {backbone.model}",
                           path=lambda: path, fetch=f"put the {backbone.model} state dict at {path}")]
    cfg = _pretrained_cfg(backbone)
    model = backbone.model.replace("/", "-")
    python_fetch = (f"python -c \"import open_clip; open_clip.create_model_and_transforms("
                    f"'{model}', pretrained='{backbone.pretrained}')\"")
    if cfg.get("hf_hub"):
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        # Same split as open_clip.pretrained.download_pretrained: 'org/repo/' -> default filename.
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        # open_clip.pretrained.download_pretrained_from_hf tries the safetensors alternative first.
        if filename == HF_WEIGHTS_NAME:
            candidates = [HF_SAFE_WEIGHTS_NAME, filename]
        elif filename.endswith((".bin", ".pth")):
            candidates = [filename[:-4] + ".safetensors", filename]
        else:
            candidates = [filename]

        def path(repo_id=repo_id, candidates=tuple(candidates), filename=filename) -> Path:
            return hf_cached(repo_id, candidates) or hf_expected(repo_id, filename)

        alternatives = " or ".join(candidates)
        return [WeightFile(
            description=(f"open_clip {model}/{backbone.pretrained} weights: Hugging Face hub cache "
                         f"($HF_HUB_CACHE or $HF_HOME/hub)/models--{repo_id.replace('/', '--')}/snapshots/"
                         f"<revision>/{alternatives} (open_clip's loader reads the first present)"),
            path=path,
            fetch=f"{hf_fetch(repo_id, [filename])}   # or: {python_fetch}",
        )]
    url = cfg.get("url", "")
    # open_clip.pretrained.download_pretrained_from_url: cache_dir defaults to ~/.cache/clip.
    filename = os.path.basename(url)
    return [WeightFile(description=f"open_clip {model}/{backbone.pretrained} weights (URL cache ~/.cache/clip)",
                       path=lambda: Path("~/.cache/clip").expanduser() / filename,
                       fetch=f"{python_fetch}   # or: curl -L -o ~/.cache/clip/{filename} {url}")]


def weights(options: MetricOptions) -> list[WeightFile]:
    return _weight_files(parse_backbone(options.backbone))


_LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _cache_only_hf_downloads():
    """Make open_clip's hf_hub_download read the local cache only (no HEAD/revision check)."""
    import open_clip.pretrained as pretrained

    with _LOAD_LOCK:
        original = pretrained.hf_hub_download
        if original is not None:
            pretrained.hf_hub_download = partial(original, local_files_only=True)
        try:
            yield
        finally:
            pretrained.hf_hub_download = original


class ClipScorer:
    """Scores (image, prompt) pairs; caches text embeddings per prompt. `name`: the metric its messages name (a
    subclass that scores another way, e.g. hpsv2's, sets its own)."""

    name = "clip_score"
    scale = 100.0  # clip_score = 100 * cos (hpsv2's is the cosine itself)

    def __init__(self, model: torch.nn.Module, preprocess: Any, tokenizer: Any, *, backbone: str,
                 batch_size: int = 16, device: str = "cpu"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.context_length = int(getattr(tokenizer, "context_length", None)
                                  or getattr(model, "context_length", None) or 77)
        self.truncated = 0  # distinct prompts truncated to the context length
        self.truncated_prompts: list[str] = []
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def preprocessing(self) -> str:
        return f"{self.preprocess!r}"

    # -- images ---------------------------------------------------------------------------
    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"{self.name} expects uint8 images (B, 3, H, W); got {images.dtype} {tuple(images.shape)}")
        arrays = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        return torch.stack([self.preprocess(Image.fromarray(a)) for a in arrays])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the shared feature folder stores per image (see `embedding_id`)."""
        return self.image_features(images)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D), float32 on CPU."""
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            pixels = self._preprocess(images[start:start + self.batch_size]).to(self.device)
            out.append(torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, 0)
        return torch.cat(out)

    # -- text -----------------------------------------------------------------------------
    def _token_count(self, prompt: str) -> int:
        """Tokens the prompt needs including start/end tokens, before truncation."""
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # open_clip SimpleTokenizer
            return len(tok.encode(prompt)) + 2  # exactly what SimpleTokenizer.__call__ builds
        hf = getattr(tok, "tokenizer", None)
        if hf is not None:  # open_clip HFTokenizer / SigLipTokenizer wrap a transformers tokenizer
            clean = getattr(tok, "clean_fn", lambda s: s)
            return len(hf(clean(prompt), truncation=False)["input_ids"])
        # Fallback: tokenize with a roomier context and compare with the real one.
        short = tok([prompt], context_length=self.context_length)[0]
        long = tok([prompt], context_length=self.context_length * 8)[0]
        if torch.equal(long[: self.context_length], short) and not long[self.context_length:].any():
            return int((short != 0).sum())
        return self.context_length + 1

    def _note_truncation(self, prompts: Sequence[str]) -> None:
        newly = [p for p in prompts if self._token_count(p) > self.context_length]
        if newly:
            self.truncated += len(newly)
            self.truncated_prompts.extend(newly)
            warnings.warn(f"{self.name}: {len(newly)} prompt(s) longer than the text encoder's "
                          f"{self.context_length}-token context were truncated", stacklevel=3)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D), float32 on CPU; cached per prompt."""
        prompts = list(prompts)
        new = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if new:
            self._note_truncation(new)
            for start in range(0, len(new), self.batch_size):
                chunk = new[start:start + self.batch_size]
                tokens = self.tokenizer(chunk, context_length=self.context_length).to(self.device)
                feats = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
                self._text_cache.update(zip(chunk, feats))
        if not prompts:
            return torch.zeros(0, 0)
        return torch.stack([self._text_cache[p] for p in prompts])

    # -- score ----------------------------------------------------------------------------
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``100 * cos(image, prompt)`` per pair, shape (B,), float32, unclamped."""
        return self.score_embeddings(self.image_features(images), prompts)

    def score_embeddings(self, embeddings: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The same score from L2-normalised image embeddings (`image_features`, e.g. read from the feature cache)."""
        if len(prompts) != embeddings.shape[0]:
            raise ValueError(f"{self.name}: {embeddings.shape[0]} images but {len(prompts)} prompts")
        if not prompts:
            return torch.zeros(0)
        return self.scale * (embeddings.float() * self.text_features(prompts)).sum(dim=-1)


def build(options: MetricOptions) -> ClipScorer:
    """Load model + tokenizer once, from local files only; fail fast if weights are missing."""
    backbone = parse_backbone(options.backbone)
    missing = [w for w in _weight_files(backbone) if not w.found()]
    if missing:
        raise EvalkitError("clip_score: missing weights for backbone " + str(backbone) + ": " + "; ".join(
            f"{w.description} (expected {w.path()}; fetch: {w.fetch})" for w in missing))
    import open_clip

    if backbone.checkpoint is not None:
        model, _, preprocess = open_clip.create_model_and_transforms(
            backbone.model, pretrained=str(backbone.checkpoint), device=options.device)
    else:
        cfg = _pretrained_cfg(backbone)
        cache_dir = str(hf_hub_cache()) if cfg.get("hf_hub") else None
        with _cache_only_hf_downloads():
            model, _, preprocess = open_clip.create_model_and_transforms(
                backbone.model, pretrained=backbone.pretrained, cache_dir=cache_dir, device=options.device,
                # Honour the tag's activation (see module docstring): open_clip >= 2.29 only warns.
                force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    tokenizer = open_clip.get_tokenizer(backbone.model)
    return ClipScorer(model, preprocess, tokenizer, backbone=str(backbone),
                      batch_size=options.batch_size, device=options.device)


CLIP_SCORE = register(MetricSpec(
    name="clip_score",
    inputs=IMAGE_PROMPT,
    kind=ALIGNMENT,
    higher_is_better=True,
    tolerance=0.5,
    meaning="0.5 points of 100 x cos(image, prompt): below the score's run-to-run noise",
    backbone=DEFAULT_BACKBONE,
    preprocessing=PREPROCESSING,
    build=build,
    weights=weights,
    embeddings=lambda options: embedding_id(options.backbone),
))
