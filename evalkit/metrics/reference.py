"""Weight-free convergence metrics to the same-seed high-step reference: SSIM and PSNR (torchmetrics)."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .base import CONVERGENCE, IMAGE_REFERENCE, MetricSpec, register

# Identical images have infinite PSNR; a cap keeps means and intervals finite. 100 dB is an MSE of
# 1e-10 in [0, 1] units, far below one uint8 step (PSNR of a single 1/255 error everywhere: 48 dB).
PSNR_CAP_DB = 100.0
# SSIM's 11-px gaussian window is padded by 5 px on each side (reflect padding), which needs a side of at least 6.
SSIM_MIN_SIZE = 6


def _unit_float(images: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return images.to(dtype) / 255.0


class SSIM:
    def score(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        # float32: its gaussian-window convolutions are ~12x faster on CPU than float64; values agree to ~1e-4 (measured 3.4e-5)
        return structural_similarity_index_measure(
            _unit_float(images, torch.float32), _unit_float(references, torch.float32), data_range=1.0,
            reduction="none",
        ).to(torch.float64)


class PSNR:
    def score(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        value = peak_signal_noise_ratio(
            _unit_float(images), _unit_float(references), data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        return value.clamp(max=PSNR_CAP_DB).to(torch.float64)


register(MetricSpec(
    name="ssim", inputs=IMAGE_REFERENCE, kind=CONVERGENCE, higher_is_better=True, perfect=1.0,
    tolerance=0.05, meaning=("SSIM 0.95 to the reference: the same picture; what differs is fine grain, visible only "
                             "when flipping between the two (the exact model's Euler: 0.95 at 30 steps, 0.97 at 50)"),
    min_size=lambda options: SSIM_MIN_SIZE,
    backbone="none (torchmetrics SSIM: gaussian window 11, sigma 1.5, k1 0.01, k2 0.03)",
    preprocessing="uint8 -> float [0, 1], data_range 1, no resize",
    build=lambda options: SSIM(),
))
register(MetricSpec(
    name="psnr", inputs=IMAGE_REFERENCE, kind=CONVERGENCE, higher_is_better=True, perfect=PSNR_CAP_DB,
    backbone="none (torchmetrics PSNR per image)",
    preprocessing=f"uint8 -> float [0, 1], data_range 1, no resize; capped at {PSNR_CAP_DB:g} dB",
    build=lambda options: PSNR(),
))
