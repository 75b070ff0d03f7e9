"""A deliberately worse builtin:mixture for gate tests (``python:plugins.worse_mixture:make_pipeline``).

The exact denoiser's eps prediction is perturbed by a fixed, deterministic amount, so the candidate's
images drift from the exact model's and a regression gate has something real to catch. The wrapper
stays an ``nn.Module`` on ``.denoiser``, so evalkit still counts NFE with its forward hook.
"""
from __future__ import annotations

import torch

from evalkit.models.exact.pipeline import mixture_pipeline

EPS_SCALE = 1.05


class PerturbedDenoiser(torch.nn.Module):
    """Calls the exact denoiser and scales its eps prediction by EPS_SCALE."""

    def __init__(self, inner: torch.nn.Module, scale: float = EPS_SCALE) -> None:
        super().__init__()
        self.inner = inner
        self.scale = scale

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.inner(sample, timestep, encoder_hidden_states) * self.scale


def make_pipeline():
    pipe = mixture_pipeline()
    pipe.denoiser = PerturbedDenoiser(pipe.denoiser)
    pipe.evalkit_identity = f"worse-mixture-eps-x{EPS_SCALE}"
    return pipe
