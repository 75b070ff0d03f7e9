"""Tiny, random-weight diffusers pipelines for offline tests (no hub, no downloads).

``build_tiny_sd_pipeline(seed)`` builds a complete ``StableDiffusionPipeline`` from
configs only; the same seed gives the same weights. ``save_tiny_sd(folder)`` writes it
with ``save_pretrained`` (safetensors) so ``DiffusionPipeline.from_pretrained(folder)``
loads it back with ``HF_HUB_OFFLINE=1``.

Default image: ``TINY_IMAGE_SIZE`` x ``TINY_IMAGE_SIZE`` pixels (unet sample_size 16,
VAE scale factor 2).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

LATENT_SIZE = 16
VAE_SCALE_FACTOR = 2  # 2 ** (len(vae block_out_channels) - 1)
TINY_IMAGE_SIZE = LATENT_SIZE * VAE_SCALE_FACTOR  # 32
CROSS_ATTENTION_DIM = 32
MAX_LENGTH = 77

# Stable Diffusion 1.5's scheduler values, with "trailing" spacing so N=1 starts
# from sigma_max instead of returning noise (see FIELD-NOTES).
SD15_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="trailing",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (256 entries)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer with a byte-level alphabet and no merges (514 tokens).

    Every word is split into single characters, so any UTF-8 text tokenizes; CLIP
    lowercases the text first.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_LENGTH)


def build_tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=CROSS_ATTENTION_DIM,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config).eval()


def build_tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=2,
    ).eval()


def build_tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=TINY_IMAGE_SIZE,
    ).eval()


def build_tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A random-weight Stable Diffusion pipeline; same seed -> same weights."""
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    text_encoder = build_tiny_text_encoder(tokenizer)
    unet = build_tiny_unet()
    vae = build_tiny_vae()
    scheduler = EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it (safetensors) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_sd_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


# --- flow-matching pipelines (FLUX, SD3) --------------------------------------------------------------------
# A 4-block VAE (8x, as the real ones) so FLUX's latent sequence length, hence its `mu`, is the real model's at
# any image size; 32x32 images are 4 packed tokens (FLUX) or 16 patches (SD3): a call costs milliseconds.

FLOW_IMAGE_SIZE = 32
T5_DIM = 32

# As FLUX.1-dev and FLUX.1-schnell ship them (scheduler/scheduler_config.json), and SD3-medium
FLUX_DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                          base_image_seq_len=256, max_image_seq_len=4096)
FLUX_SCHNELL_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                              base_image_seq_len=256, max_image_seq_len=4096)
SD3_SCHEDULER = dict(shift=3.0)


def build_tiny_t5_tokenizer():
    """A T5-side tokenizer with no download: a `tokenizers` WordLevel model over single characters."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [chr(c) for c in range(33, 127)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build_tiny_t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
                      pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


def build_tiny_clip(tokenizer, with_projection: bool = False):
    from transformers import CLIPTextModelWithProjection

    model = build_tiny_text_encoder(tokenizer)
    if not with_projection:
        return model
    return CLIPTextModelWithProjection(model.config).eval()


def build_tiny_flow_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
        norm_num_groups=2, latent_channels=4, sample_size=FLOW_IMAGE_SIZE, shift_factor=0.1, scaling_factor=1.0,
    ).eval()


def build_tiny_flux_pipeline(seed: int = 0, dev: bool = True):
    """A random-weight FLUX pipeline: dev (guidance embedded, dynamic shift) or schnell (no guidance, shift 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = build_tiny_tokenizer(), build_tiny_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=T5_DIM, pooled_projection_dim=CROSS_ATTENTION_DIM, guidance_embeds=dev,
        axes_dims_rope=(2, 2, 4),
    ).eval()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**(FLUX_DEV_SCHEDULER if dev else FLUX_SCHNELL_SCHEDULER)),
        vae=build_tiny_flow_vae(), text_encoder=build_tiny_clip(tokenizer), tokenizer=tokenizer,
        text_encoder_2=build_tiny_t5(tokenizer_2), tokenizer_2=tokenizer_2, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd3_pipeline(seed: int = 0):
    """A random-weight Stable Diffusion 3 pipeline (static shift 3, classifier-free guidance)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tokenizer, tokenizer_3 = build_tiny_tokenizer(), build_tiny_t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=FLOW_IMAGE_SIZE // 8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=T5_DIM, caption_projection_dim=16,
        pooled_projection_dim=2 * CROSS_ATTENTION_DIM, out_channels=4, pos_embed_max_size=64,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER), vae=build_tiny_flow_vae(),
        text_encoder=build_tiny_clip(tokenizer, True), tokenizer=tokenizer,
        text_encoder_2=build_tiny_clip(tokenizer, True), tokenizer_2=build_tiny_tokenizer(),
        text_encoder_3=build_tiny_t5(tokenizer_3), tokenizer_3=tokenizer_3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_flow(folder: str | Path, kind: str = "flux-dev", seed: int = 0) -> Path:
    """Build a tiny "flux-dev", "flux-schnell" or "sd3" pipeline and ``save_pretrained`` it into ``folder``."""
    builders = {"flux-dev": lambda: build_tiny_flux_pipeline(seed, dev=True),
                "flux-schnell": lambda: build_tiny_flux_pipeline(seed, dev=False),
                "sd3": lambda: build_tiny_sd3_pipeline(seed)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    builders[kind]().save_pretrained(folder, safe_serialization=True)
    return folder
