"""What both exact pipelines share at their edges: a call's checks and guidance input, and its output.

builtin:mixture and builtin:mixture-flow take and return what diffusers pipelines do, so evalkit drives
them like any other pipeline; one place for both keeps the two alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from .components import component_weights


@dataclass
class MixturePipelineOutput:
    """What both exact pipelines return, shaped like diffusers' pipeline outputs (`.images`)."""

    images: Any


def _as_list(value: Any, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what}: got {len(value)} entries for a batch of {n}")
        return list(value)
    return [value] * n


def conditioning(prompts: list[str], negative_prompt: Any, guidance_scale: float, generator: Any,
                 output_type: str, weights: Callable[[str | None], np.ndarray] = component_weights,
                 ) -> tuple[bool, torch.Tensor]:
    """A call's arguments checked as diffusers pipelines check them, then (guided?, the network's
    encoder_hidden_states): component weights per row (`weights` of each prompt), the unconditional half stacked
    first when guiding."""
    if isinstance(generator, (list, tuple)) and len(generator) != len(prompts):
        raise ValueError(f"got {len(generator)} generators for {len(prompts)} prompts")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}")
    negs = _as_list(negative_prompt, len(prompts), "negative_prompt")
    cond = torch.from_numpy(np.stack([weights(p) for p in prompts])).float()
    if guidance_scale <= 1.0:
        return False, cond
    uncond = torch.from_numpy(np.stack([weights(n) for n in negs])).float()
    return True, torch.cat([uncond, cond])


def pipeline_output(images: torch.Tensor, output_type: str) -> MixturePipelineOutput:
    """(B, 3, H, W) images in [0, 1] as the pipeline's output_type asks: "pt", "np" (float HWC) or "pil"."""
    if output_type == "pt":
        return MixturePipelineOutput(images=images)
    arr = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    if output_type == "np":
        return MixturePipelineOutput(images=arr)
    return MixturePipelineOutput(images=[Image.fromarray(np.round(a * 255).astype(np.uint8), "RGB") for a in arr])
