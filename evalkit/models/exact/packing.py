"""FLUX's token layout for builtin:mixture-flow: 3xHxW pixel images packed into 2x2 patches.

The flow model's "latent" is the pixel image itself, packed exactly as FluxPipeline packs its latents
((H/2)(W/2) tokens of 12 values), so FLUX's scheduling code sees the token count it expects; the
component means are packed the same way so the network can work on tokens directly.
"""
from __future__ import annotations

import torch



def pack(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, (H/2)(W/2), 12): 2x2 patches as tokens, exactly as FLUX packs its latents."""
    from diffusers import FluxPipeline

    b, c, h, w = images.shape
    return FluxPipeline._pack_latents(images, b, c, h, w)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, (H/2)(W/2), 12) -> (B, 3, H, W): `pack` undone, exactly as FLUX unpacks its latents."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(tokens, height, width, 1)
