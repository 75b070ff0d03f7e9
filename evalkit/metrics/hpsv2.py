"""HPS v2 / v2.1 (Human Preference Score, image+prompt) with open_clip, as the reference computes it.

Reference: github.com/tgxs002/HPSv2, ``hpsv2/img_score.py`` (checked against the ``hpsv2`` 1.2.0 wheel on PyPI)::

    model, _, preprocess_val = create_model_and_transforms('ViT-H-14', 'laion2B-s32B-b79K', precision='amp',
                                                           light_augmentation=True, output_dict=True, ...)
    checkpoint = torch.load(cp); model.load_state_dict(checkpoint['state_dict'])
    tokenizer = get_tokenizer('ViT-H-14')
    outputs = model(preprocess_val(image)[None], tokenizer([prompt]))
    hps = diagonal(outputs['image_features'] @ outputs['text_features'].T)

with ``cp`` = ``HPS_v2.1_compressed.pt`` (``hps_version='v2.1'``) or ``HPS_v2_compressed.pt`` (``'v2.0'``, the
reference's default) from the Hugging Face repo ``xswu/HPSv2`` (``hpsv2/utils.py`` ``hps_version_map``).

Score: ``cos(image_embedding, text_embedding)`` per (image, prompt) pair. The vendored ``CLIP.forward``
(``hpsv2/src/open_clip/model.py``) returns ``encode_image(normalize=True)`` and ``encode_text(normalize=True)``;
``img_score.py`` takes the diagonal of their product: no ``logit_scale``, no factor 100, no clamp (typical values
~0.2-0.35; the HPS benchmark table in the reference README and ``evaluation.py`` report 100x this).

Weights: the HPS checkpoint holds the full model state dict and the reference loads it strictly
(``load_state_dict`` with its default ``strict=True``) over the laion2B-s32B-b79K weights it created the model with, so
those base weights are fully overwritten and never affect the score (buffers outside the state dict, e.g. the text
attention mask, are computed, not loaded). This module therefore builds the architecture with ``pretrained=None`` and
loads the HPS state dict strictly: same parameters, without the 3.9 GB base download. The file is resolved in the
Hugging Face hub cache at call time (``HF_HUB_CACHE`` / ``HF_HOME``, ``models--xswu--HPSv2/snapshots/*/``), never
downloaded; missing, the metric is skipped with ``hf download xswu/HPSv2 HPS_v2.1_compressed.pt``.
``precision='amp'`` keeps fp32 weights and the reference runs the model under ``torch.cuda.amp.autocast`` (fp16 on a
GPU, a no-op on CPU); evalkit computes in fp32 everywhere, i.e. the reference's CPU numbers.

Preprocessing: NOT open_clip's usual resize-shortest + center crop. ``light_augmentation=True`` makes ``preprocess_val``
the vendored ``image_transform(224, is_train=False, resize_longest_max=True)`` =
``Compose([_convert_to_rgb_or_rgba, ToTensor(), ResizeMaxSize(224, fill=0), MaskAwareNormalize(OpenAI mean, std)])``
(``hpsv2/src/open_clip/transform.py``): the image goes to a float tensor in [0, 1] first, then its LONGEST side is
resized to 224 (``F.resize`` on the tensor, bicubic; the new size is ``round(side * 224 / longest)``) and the short side
is padded with 0 (black) to 224, split ``floor`` before / ``ceil`` after; then Normalize with the OpenAI CLIP mean
(0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711) (the laion2B tag sets none, so the
vendored factory uses these defaults). For square images this is a plain bicubic resize to 224 (no crop, no pad).
:class:`ResizeLongestPad` reproduces ``ResizeMaxSize`` with two explicit choices: ``antialias=True`` (torchvision's
default for tensors since 0.17; older torchvision resized tensors without antialiasing) and padding also when the
longest side is already 224 (the reference skips the pad then and its ViT rejects the non-square input).

Text: open_clip's ``SimpleTokenizer`` for the architecture (BPE shipped in the package), context 77, truncated keeping
the end-of-text token: the same as the vendored ``tokenize`` (``[sot] + encode(text) + [eot]``, cut to 77 with the
last token set to eot; ``encode`` cleans and lower-cases like open_clip's default ``clean='lower'``).

Test hook: :data:`ARCHITECTURE` is the open_clip model config the checkpoint is loaded into. It is ``ViT-H-14`` (the
reference's) and nothing in evalkit changes it; tests monkeypatch it to a small config registered with
``open_clip.add_model_config`` so a checkpoint in the official format stays small.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import EvalkitError
from . import published
from .base import IMAGE_PROMPT, PREFERENCE, MetricOptions, MetricSpec, WeightFile, register, require_weights
from .clip import ClipScorer, hf_fetch, hf_weight

NAME = "hpsv2"
ARCHITECTURE = "ViT-H-14"  # the reference's; tests monkeypatch it (see module docstring), nothing else may
HF_REPO = "xswu/HPSv2"
CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}  # hpsv2/utils.py hps_version_map
DEFAULT_VERSION = "v2.1"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESSING = (
    "HPSv2 reference preprocess_val (hpsv2/src/open_clip/transform.py, light_augmentation=True): uint8 (3,H,W) -> PIL "
    "RGB -> ToTensor (/255) -> ResizeMaxSize: longest side -> 224 (round(side*224/longest)), torchvision F.resize on "
    "the float tensor, bicubic, antialias=True -> zero-pad (black) the short side to 224x224, floor before/ceil after "
    "-> Normalize(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)); no center "
    "crop. Per-image, batch-size invariant. Text: open_clip SimpleTokenizer, truncated to 77 tokens (EOT kept). "
    "Score cos(image, text) of L2-normalised embeddings (no logit_scale, no x100), fp32."
)


def parse_version(backbone: str | None) -> str:
    """``MetricOptions.backbone`` -> ``'v2.0'`` or ``'v2.1'`` (``None``: :data:`DEFAULT_VERSION`)."""
    text = (backbone or DEFAULT_VERSION).strip().lower()
    version = text if text.startswith("v") else f"v{text}"
    if version not in CHECKPOINTS:
        raise EvalkitError(f"{NAME} backbone {backbone!r}: expected one of {', '.join(CHECKPOINTS)} "
                           f"(the HPS checkpoint version; default {DEFAULT_VERSION})")
    return version


def weights(options: MetricOptions) -> list[WeightFile]:
    version = parse_version(options.backbone)
    filename = CHECKPOINTS[version]
    return [hf_weight(HF_REPO, (filename,), f"HPS {version} checkpoint {filename}", hf_fetch(HF_REPO, [filename]))]


class ResizeLongestPad(torch.nn.Module):
    """The reference's ``ResizeMaxSize`` on a (3, H, W) float tensor: longest side to ``size`` (bicubic, antialiased),
    then zero-padded to ``size`` x ``size`` (``floor`` of the padding before, ``ceil`` after)."""

    def __init__(self, size: int, fill: float = 0.0):
        super().__init__()
        self.size, self.fill = int(size), fill

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode

        height, width = image.shape[-2:]
        scale = self.size / float(max(height, width))
        if scale != 1.0:
            new_size = [round(height * scale), round(width * scale)]
            image = F.resize(image, new_size, InterpolationMode.BICUBIC, antialias=True)
        pad_h, pad_w = self.size - image.shape[-2], self.size - image.shape[-1]
        if pad_h or pad_w:
            image = F.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=self.fill)
        return image

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, interpolation=bicubic, antialias=True, "
                f"fill={self.fill}, pad=floor/ceil)")


def image_size() -> int:
    """The architecture's input side, from its open_clip config (224 for ViT-H-14), without building the model."""
    import open_clip

    cfg = open_clip.get_model_config(ARCHITECTURE)
    if cfg is None:
        raise EvalkitError(f"{NAME}: open_clip has no model config {ARCHITECTURE!r}")
    size = cfg["vision_cfg"].get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise EvalkitError(f"{NAME}: {ARCHITECTURE} has a non-square input {size}; the reference needs a square")
        size = size[0]
    return int(size)


def preprocess(size: int):
    """The reference ``preprocess_val``, for PIL RGB images (what ClipScorer._preprocess hands it)."""
    from torchvision.transforms import Compose, Normalize, ToTensor

    return Compose([ToTensor(), ResizeLongestPad(size), Normalize(mean=OPENAI_MEAN, std=OPENAI_STD)])


def embedding_id(options: MetricOptions) -> str:
    """What identifies HPS image embeddings: checkpoint version, architecture and preprocessing."""
    version = parse_version(options.backbone)
    return (f"HPSv2 image embeddings, L2-normalised\n{version} {HF_REPO}/{CHECKPOINTS[version]} on open_clip "
            f"{ARCHITECTURE}\n{preprocess(image_size())!r}")


class HpsScorer(ClipScorer):
    """ClipScorer's image/text embedding and caching with HPS's score: the cosine, not 100x it."""

    name = NAME
    scale = 1.0  # the cosine itself: the reference's score, no logit scale, no x100


def load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """The reference's ``model.load_state_dict(torch.load(cp)['state_dict'])`` (strict), read weights-only."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvalkitError(f"{NAME}: cannot read {path} as a weights-only torch checkpoint: {first}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise EvalkitError(f"{NAME}: {path} has no 'state_dict' (the official HPS checkpoint format)")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EvalkitError(f"{NAME}: {path} does not fit open_clip {ARCHITECTURE}: {len(result.missing_keys)} missing "
                           f"keys (e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
                           f"(e.g. {result.unexpected_keys[:3]})")


def build(options: MetricOptions) -> HpsScorer:
    """Architecture with no pretrained weights + the HPS state dict, from the local cache only."""
    version = parse_version(options.backbone)
    files = weights(options)
    require_weights(files, NAME)
    import open_clip

    model = open_clip.create_model(ARCHITECTURE, pretrained=None, device="cpu")
    try:
        load_checkpoint(model, files[0].path())
    except RuntimeError as error:  # a tensor of the wrong shape: load_state_dict's message is multi-line
        raise EvalkitError(f"{NAME}: {files[0].path()} does not fit open_clip {ARCHITECTURE}: "
                           f"{str(error).strip().splitlines()[-1].strip()}") from None
    model = model.to(options.device).eval()
    return HpsScorer(model, preprocess(image_size()), open_clip.get_tokenizer(ARCHITECTURE),
                     backbone=f"{ARCHITECTURE} + {HF_REPO}/{CHECKPOINTS[version]} ({version})",
                     batch_size=options.batch_size, device=options.device)


HPSV2 = register(MetricSpec(
    name=NAME,
    inputs=IMAGE_PROMPT,
    kind=PREFERENCE,  # a learned human-preference score (base.PREFERENCE)
    higher_is_better=True,
    tolerance=published.HPSV2.tolerance(),
    meaning=published.HPSV2.meaning(),
    backbone=f"open_clip {ARCHITECTURE} + {HF_REPO}/{CHECKPOINTS[DEFAULT_VERSION]} ({DEFAULT_VERSION}; v2.0 selectable)",
    preprocessing=PREPROCESSING,
    build=build,
    weights=weights,
    embeddings=embedding_id,
))
