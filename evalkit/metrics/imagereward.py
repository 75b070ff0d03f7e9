"""ImageReward v1.0 (image+prompt human-preference reward) on transformers' BLIP classes, as the reference computes it.

Reference: github.com/THUDM/ImageReward, ``ImageReward/ImageReward.py`` and ``ImageReward/models/BLIP/`` (checked
against the ``image-reward`` 1.5 wheel on PyPI; the training code, ``train/src/ImageReward.py``, builds the same
modules)::

    model = ImageReward(med_config)          # BLIP_Pretrain(image_size=224, vit='large') + MLP(768)
    model.load_state_dict(torch.load('ImageReward.pt'), strict=False)
    text_input = model.blip.tokenizer(prompt, padding='max_length', truncation=True, max_length=35)
    image_embeds = model.blip.visual_encoder(model.preprocess(pil_image)[None])
    text_output = model.blip.text_encoder(text_input.input_ids, attention_mask=text_input.attention_mask,
                                          encoder_hidden_states=image_embeds, encoder_attention_mask=ones)
    reward = (model.mlp(text_output.last_hidden_state[:, 0, :]) - 0.16717362830052426) / 1.0333394966054072

Architecture and how transformers carries it (each point checked against the reference source):

* Image encoder: BLIP's timm-style ``VisionTransformer`` from ``create_vit('large', 224)``: patch 16, width 1024,
  depth 24, 16 heads, MLP ratio 4, fused ``qkv`` with bias, pre-norm blocks, exact GELU, LayerNorm eps 1e-6, a class
  token and learned positions for 197 tokens, a final LayerNorm; its output is all 197 tokens. transformers'
  ``BlipVisionModel`` is the same computation (same fused qkv layout ``(B, N, 3, heads, head_dim)``, scale
  ``head_dim ** -0.5``, ``last_hidden_state`` after ``post_layernorm``) with ``layer_norm_eps=1e-6``; drop path and
  dropouts are inactive in eval. Keys: ``blip.visual_encoder.{cls_token, pos_embed, patch_embed.proj, blocks.i.norm1,
  blocks.i.attn.qkv, blocks.i.attn.proj, blocks.i.norm2, blocks.i.mlp.fc1/fc2, norm}`` ->
  ``embeddings.{class_embedding, position_embedding, patch_embedding}, encoder.layers.i.{layer_norm1, self_attn.qkv,
  self_attn.projection, layer_norm2, mlp.fc1/fc2}, post_layernorm``.
* Text encoder: BLIP's ``med.py`` ``BertModel(add_pooling_layer=False)`` from ``med_config.json``, with
  ``encoder_width`` overwritten by the vision width (1024: the JSON's own ``encoder_width`` is ignored). Embeddings are
  word + absolute position (no token types) -> LayerNorm; every layer is self-attention, cross-attention to the image
  tokens, feed-forward, each post-LN. It runs in ``mode='multimodal'`` with ``is_decoder=False``: a bidirectional
  padding mask, the image mask all ones. transformers' ``BlipTextModel`` is adapted from this very file: its
  config's ``is_decoder=True`` only creates the ``crossattention`` modules (called when ``encoder_hidden_states`` is
  given); the forward's ``is_decoder=False`` (the default) keeps the mask bidirectional. Its padding mask adds the
  dtype minimum where the reference adds -10000: both are exactly 0 after the softmax in float32. Keys:
  ``blip.text_encoder.X`` -> ``X`` unchanged; the reference's persistent ``embeddings.position_ids`` buffer
  (``arange``) is checked and dropped (transformers computes it).
* The input is the tokenizer's ``input_ids`` as they are (``[CLS] ... [SEP] [PAD]...``): ImageReward does not replace
  the first token by ``[ENC]`` (BLIP's ITM head does; ImageReward's ``score`` and ``inference_rank`` do not).
* Head: ``mlp.layers`` = Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout,
  Linear(64, 16), Linear(16, 1): no activations (they are commented out in the reference). Keys ``mlp.layers.N`` ->
  the same indices of :class:`RewardHead`. Score ``(mlp(text[:, 0]) - MEAN) / STD``. The reference hard-codes the
  input width 768, the text encoder's ``hidden_size`` in med_config.json; this module takes that ``hidden_size``
  (equal for the real config; a tiny test config stays consistent).
* ``blip.vision_proj`` and ``blip.text_proj`` are in the checkpoint (BLIP_Pretrain has them) but the score never uses
  them: they are checked to be there and ignored. Any other key, or a key the model lacks, is an error (the reference
  loads with ``strict=False``, which would silently keep random weights).

Preprocessing (``ImageReward._transform(224)``, NOT a plain resize to 224x224): each uint8 (3, H, W) image becomes a PIL
RGB image, then torchvision ``Resize(224, BICUBIC)`` on the PIL image (shortest side -> 224, long side
``int(224 * long / short)``, PIL bicubic), ``CenterCrop(224)`` (``top = int(round((h - 224) / 2))``), ``ToTensor``
(/255), ``Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))``.

Text: BLIP's ``init_tokenizer()``: ``BertTokenizer.from_pretrained('bert-base-uncased')`` plus the special tokens
``[DEC]`` (bos) and ``[ENC]`` (ids 30522 and 30523, hence ``vocab_size`` 30524 in med_config.json), padding to
``max_length`` 35, truncation to 35 tokens (``[SEP]`` kept). Truncated prompts are counted and warned about once per
call that saw new ones; never an error. The tokenizer files are read from the hub cache (``bert-base-uncased``:
vocab.txt and tokenizer_config.json; transformers 5 reads the repo's tokenizer.json instead of vocab.txt when it is
cached too: the same vocabulary).

Weights: ``ImageReward.pt`` (a plain state dict, read weights-only) and ``med_config.json`` from the hub cache of
``THUDM/ImageReward`` (``$HF_HUB_CACHE``, or ``$HF_HOME/hub``; resolved at call time, ``refs/main``); nothing is ever
downloaded. Computed in float32 (the reference's CPU numbers).

Test hook: :data:`VISION` is the image encoder's shape (``create_vit('large', 224)``'s; it is not in med_config.json).
Nothing in evalkit changes it; tests monkeypatch it to a small ViT so a checkpoint in the official format stays small.
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from .clip import hf_fetch, hf_weight

NAME = "imagereward"
HF_REPO = "THUDM/ImageReward"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
TOKENIZER_REPO = "bert-base-uncased"  # BLIP's init_tokenizer(); the hub cache keeps it as models--bert-base-uncased
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json")
MAX_LENGTH = 35
MEAN = 0.16717362830052426
STD = 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# create_vit('large', 224) in ImageReward/models/BLIP/blip.py: the test hook (module docstring)
VISION = {"image_size": 224, "patch_size": 16, "width": 1024, "depth": 24, "heads": 16, "mlp_ratio": 4.0}
VISION_LAYER_NORM_EPS = 1e-6  # VisionTransformer: partial(nn.LayerNorm, eps=1e-6)
UNUSED_KEYS = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias")
POSITION_IDS = "blip.text_encoder.embeddings.position_ids"

BACKBONE = (f"{HF_REPO}/{CHECKPOINT} (ImageReward v1.0: BLIP ViT-L/16 224 image encoder + BERT-base text encoder "
            f"with cross-attention, {MED_CONFIG} + MLP head) on transformers BlipVisionModel/BlipTextModel + "
            f"{TOKENIZER_REPO} tokenizer")
PREPROCESSING = (
    "ImageReward reference _transform(224): uint8 (3,H,W) -> PIL RGB -> torchvision Resize(224, bicubic) on the PIL "
    "image: shortest side -> 224 (long side int(224*long/short), PIL bicubic) -> CenterCrop(224) "
    "(top=int(round((h-224)/2))) -> ToTensor (/255) -> Normalize(mean=(0.48145466, 0.4578275, 0.40821073), "
    "std=(0.26862954, 0.26130258, 0.27577711)). Per-image. Text: bert-base-uncased BertTokenizer + [DEC]/[ENC] special "
    "tokens, padding max_length 35, truncation to 35 tokens. Score (mlp(text_encoder(ids, image tokens)[:, 0]) - "
    "0.16717362830052426) / 1.0333394966054072, fp32."
)


def _parse_backbone(options: MetricOptions) -> None:
    if options.backbone not in (None, "", HF_REPO, "ImageReward-v1.0"):
        raise EvalkitError(f"{NAME} backbone {options.backbone!r}: ImageReward has one backbone "
                           f"({HF_REPO}, ImageReward-v1.0); remove {NAME} from backbones")


def weights(options: MetricOptions) -> list[WeightFile]:
    """ImageReward.pt and med_config.json (THUDM/ImageReward), the bert-base-uncased tokenizer files."""
    _parse_backbone(options)
    model_fetch = hf_fetch(HF_REPO, (CHECKPOINT, MED_CONFIG))
    tokenizer_fetch = hf_fetch(TOKENIZER_REPO, TOKENIZER_FILES)
    return [
        hf_weight(HF_REPO, (CHECKPOINT,), f"ImageReward v1.0 weights {CHECKPOINT}", model_fetch),
        hf_weight(HF_REPO, (MED_CONFIG,), f"ImageReward text encoder config {MED_CONFIG}", model_fetch),
        *(hf_weight(TOKENIZER_REPO, (name,), f"{TOKENIZER_REPO} tokenizer file {name}", tokenizer_fetch)
          for name in TOKENIZER_FILES),
    ]


# -- the model -----------------------------------------------------------------------------------------------------
class RewardHead(nn.Sequential):
    """The reference ``MLP(768).layers``: five Linear layers, dropouts between the first four, no activations."""

    def __init__(self, width: int = 768):
        super().__init__(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def vision_config() -> Any:
    from transformers import BlipVisionConfig

    v = VISION
    return BlipVisionConfig(hidden_size=v["width"], intermediate_size=int(v["width"] * v["mlp_ratio"]),
                            num_hidden_layers=v["depth"], num_attention_heads=v["heads"], image_size=v["image_size"],
                            patch_size=v["patch_size"], hidden_act="gelu", layer_norm_eps=VISION_LAYER_NORM_EPS,
                            attention_dropout=0.0)


def read_med_config(path: Path) -> dict:
    try:
        med = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise EvalkitError(f"{NAME}: cannot read {path} as JSON: {error}") from None
    if not isinstance(med, dict):
        raise EvalkitError(f"{NAME}: {path} is not a JSON object (a BERT config)")
    return med


def text_config(med: dict, path: Path | str = MED_CONFIG) -> Any:
    """BlipTextConfig from med_config.json, ``encoder_width`` set to the vision width as BLIP_Pretrain does."""
    from transformers import BlipTextConfig

    if not med.get("add_cross_attention", False):
        raise EvalkitError(f"{NAME}: {path} has no add_cross_attention: the ImageReward text encoder needs it")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise EvalkitError(f"{NAME}: {path} position_embedding_type {med['position_embedding_type']!r}: "
                           "only 'absolute' is supported (the ImageReward config's)")
    try:
        return BlipTextConfig(
            vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]),
            encoder_hidden_size=int(VISION["width"]), intermediate_size=int(med["intermediate_size"]),
            num_hidden_layers=int(med["num_hidden_layers"]), num_attention_heads=int(med["num_attention_heads"]),
            max_position_embeddings=int(med["max_position_embeddings"]), hidden_act=med.get("hidden_act", "gelu"),
            layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)),
            hidden_dropout_prob=float(med.get("hidden_dropout_prob", 0.1)),
            attention_probs_dropout_prob=float(med.get("attention_probs_dropout_prob", 0.1)),
            pad_token_id=int(med.get("pad_token_id", 0)),
            is_decoder=True,  # only creates the crossattention modules; forward(is_decoder=False) keeps the mask bidirectional
            attn_implementation="eager")  # BlipText's attention adds an additive float mask: never a boolean one
    except KeyError as error:
        raise EvalkitError(f"{NAME}: {path} lacks {error.args[0]!r} (a BERT config)") from None


class ImageRewardModel(nn.Module):
    """BLIP image encoder + cross-attention text encoder + reward head; ``forward`` is the reference's reward."""

    def __init__(self, med: dict, med_path: Path | str = MED_CONFIG):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        self.vision = BlipVisionModel(vision_config())
        self.text = BlipTextModel(text_config(med, med_path), add_pooling_layer=False)
        self.mlp = RewardHead(int(med["hidden_size"]))  # MLP(768): the real config's hidden_size

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_atts, is_decoder=False).last_hidden_state
        rewards = self.mlp(text[:, 0, :].float())
        return ((rewards - MEAN) / STD)[:, 0]


_VISION_KEYS = [
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]


def model_key(official: str) -> str | None:
    """The :class:`ImageRewardModel` key an official ImageReward.pt key loads into, or None for keys it has no place
    for (the unused projections, position_ids, anything unknown)."""
    if official.startswith("blip.visual_encoder."):
        rest = official[len("blip.visual_encoder."):]
        for pattern, target in _VISION_KEYS:
            if re.fullmatch(pattern, rest):
                return "vision." + re.sub(pattern, target, rest)
        return None
    if official.startswith("blip.text_encoder.") and official != POSITION_IDS:
        return "text." + official[len("blip.text_encoder."):]
    match = re.fullmatch(r"mlp\.layers\.(\d+)\.(weight|bias)", official)
    return f"mlp.{match[1]}.{match[2]}" if match else None


def convert_state_dict(state: dict, model: nn.Module, path: Path | str = CHECKPOINT) -> dict[str, torch.Tensor]:
    """The official state dict renamed to ``model``'s keys, key for key: every model key filled, every official key
    placed or known unused (vision_proj, text_proj, position_ids); otherwise one-line EvalkitError."""
    wanted = set(model.state_dict())
    converted: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if key in UNUSED_KEYS:
            continue
        if key == POSITION_IDS:
            if not torch.equal(value.reshape(-1).long(), torch.arange(value.numel())):
                raise EvalkitError(f"{NAME}: {path}: {POSITION_IDS} is not arange(n); the model computes it")
            continue
        target = model_key(key)
        if target is None or target not in wanted:
            unexpected.append(key)
            continue
        converted[target] = value
    own_position_ids = "text.embeddings.position_ids"  # a persistent buffer in some transformers 4.x: the model's own
    if own_position_ids in wanted:
        converted[own_position_ids] = model.state_dict()[own_position_ids]
    missing = sorted(wanted - set(converted))
    absent = [k for k in UNUSED_KEYS if k not in state]
    if missing or unexpected or absent:
        raise EvalkitError(f"{NAME}: {path} is not an ImageReward v1.0 checkpoint for this architecture: "
                           f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                           f"(e.g. {unexpected[:3]}), absent projections {absent[:2]}")
    return converted


def load_model(checkpoint: Path, med_path: Path) -> ImageRewardModel:
    """The reference model with the official weights, key for key, float32, eval mode."""
    med = read_med_config(med_path)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalkitError(f"{NAME}: cannot read {checkpoint} as a weights-only torch checkpoint: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalkitError(f"{NAME}: {checkpoint} is not a state dict of tensors (the official ImageReward.pt format)")
    model = ImageRewardModel(med, med_path)
    converted = convert_state_dict(state, model, checkpoint)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in converted.items()},
                              strict=True)
    except RuntimeError as error:  # a tensor of the wrong shape: load_state_dict's message is multi-line
        raise EvalkitError(f"{NAME}: {checkpoint} does not fit the ImageReward architecture ({med_path}): "
                           f"{str(error).strip().splitlines()[-1].strip()}") from None
    return model.float().eval()


def load_tokenizer(folder: Path) -> Any:
    """BLIP's ``init_tokenizer()`` on the cached bert-base-uncased snapshot folder."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def preprocess(size: int | None = None):
    """The reference ``_transform(224)`` for PIL RGB images (already RGB: its convert('RGB') is a no-op)."""
    from torchvision.transforms import (
        CenterCrop,
        Compose,
        InterpolationMode,
        Normalize,
        Resize,
        ToTensor,
    )

    size = int(size or VISION["image_size"])
    return Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size), ToTensor(),
                    Normalize(CLIP_MEAN, CLIP_STD)])


# -- the scorer ----------------------------------------------------------------------------------------------------
class ImageRewardScorer:
    """Scores (image, prompt) pairs; caches tokenized prompts."""

    def __init__(self, model: ImageRewardModel, tokenizer: Any, *, batch_size: int = 16, device: str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = preprocess()
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.truncated = 0  # distinct prompts truncated to MAX_LENGTH tokens
        self.truncated_prompts: list[str] = []
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"{NAME} expects uint8 images (B, 3, H, W); got {images.dtype} {tuple(images.shape)}")
        arrays = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        return torch.stack([self.transform(Image.fromarray(a)) for a in arrays])

    def _note_truncation(self, prompts: Sequence[str]) -> None:
        newly = [p for p in prompts
                 if len(self.tokenizer(p, truncation=True, max_length=MAX_LENGTH + 1)["input_ids"]) > MAX_LENGTH]
        if newly:
            self.truncated += len(newly)
            self.truncated_prompts.extend(newly)
            warnings.warn(f"{NAME}: {len(newly)} prompt(s) longer than the text encoder's {MAX_LENGTH}-token "
                          "context were truncated", stacklevel=3)

    def tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each (N, 35): the reference's tokenization, cached per prompt."""
        new = list(dict.fromkeys(p for p in prompts if p not in self._tokens))
        if new:
            self._note_truncation(new)
            for prompt in new:
                out = self.tokenizer(prompt, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                     return_tensors="pt")
                self._tokens[prompt] = (out["input_ids"][0], out["attention_mask"][0])
        return (torch.stack([self._tokens[p][0] for p in prompts]),
                torch.stack([self._tokens[p][1] for p in prompts]))

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The ImageReward reward per (image, prompt) pair, shape (B,), float32."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{NAME}: {images.shape[0]} images but {len(prompts)} prompts")
        if not prompts:
            return torch.zeros(0)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            pixels = self._pixels(images[start:start + len(chunk)]).to(self.device)
            ids, mask = self.tokens(chunk)
            out.append(self.model(pixels, ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out)


def build(options: MetricOptions) -> ImageRewardScorer:
    """Load model and tokenizer once, from the local hub cache only; fail fast (one line) if a file is missing."""
    _parse_backbone(options)
    files = weights(options)
    require_weights(files, NAME)
    model = load_model(files[0].path(), files[1].path()).to(options.device)
    tokenizer = load_tokenizer(files[2].path().parent)
    return ImageRewardScorer(model, tokenizer, batch_size=options.batch_size, device=options.device)


IMAGEREWARD = register(MetricSpec(
    name=NAME,
    inputs=IMAGE_PROMPT,
    kind=PREFERENCE,  # a learned human-preference reward (base.PREFERENCE)
    higher_is_better=True,
    tolerance=published.IMAGEREWARD.tolerance(),
    meaning=published.IMAGEREWARD.meaning(),
    backbone=BACKBONE,
    preprocessing=PREPROCESSING,
    build=build,
    weights=weights,
))
