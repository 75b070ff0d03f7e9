"""LPIPS (Zhang et al. 2018): learned perceptual distance of each image to its reference.

Uses the `lpips` package unchanged: ``lpips.LPIPS(net=..., version="0.1")``. Its v0.1 linear-layer
weights ship inside the pip package (``lpips/weights/v0.1/{alex,vgg}.pth``); the trunk is torchvision's
ImageNet AlexNet / VGG16, which lpips builds with ``torchvision.models.alexnet(pretrained=True)`` /
``vgg16(pretrained=True)`` and torchvision reads from ``$TORCH_HOME/hub/checkpoints/`` (downloading only
when the file is missing, which ``build`` refuses to let happen: see ``_require_weights``).

Preprocessing (lpips' contract, checked in lpips/lpips.py): inputs in [-1, 1]; its ``ScalingLayer`` then
applies ``(x - shift) / scale`` with ImageNet-like constants. We map uint8 with ``x / 127.5 - 1`` and
do no resize (the network is fully convolutional and spatially averages each layer's distance).
Feeding [0, 1] instead makes images look more alike than they are.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import EvalkitError
from .base import (CONVERGENCE, IMAGE_REFERENCE, MetricOptions, MetricSpec, WeightFile, hub_checkpoint, register,
                   require_weights)

LPIPS_VERSION = "0.1"
DEFAULT_BACKBONE = "alex"
PREPROCESSING = "uint8 -> float [-1, 1] (x/127.5 - 1), no resize; lpips v0.1 ScalingLayer then (x - shift) / scale"

# lpips' net name -> (torchvision checkpoint file, its download URL); the file name is what
# torch.hub.load_state_dict_from_url derives from the URL torchvision's Weights enum holds.
_TRUNKS: dict[str, tuple[str, str, str]] = {
    "alex": (
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "torchvision AlexNet (IMAGENET1K_V1), LPIPS trunk",
    ),
    "vgg": (
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "torchvision VGG16 (IMAGENET1K_V1), LPIPS trunk",
    ),
}


# The smallest image side each trunk's conv/pool stack takes at all (measured with lpips 0.1.4: AlexNet's
# 11x11 stride-4 stem and three 3x3 stride-2 pools need 31 px, VGG16's four 2x2 pools 16 px).
MIN_SIZE = {"alex": 31, "vgg": 16}


def _backbone(options: MetricOptions) -> str:
    name = options.backbone or DEFAULT_BACKBONE
    name = {"alexnet": "alex", "vgg16": "vgg"}.get(name, name)
    if name not in _TRUNKS:
        raise EvalkitError(f"lpips: unknown backbone {options.backbone!r}; choose one of {sorted(_TRUNKS)}")
    return name


def lpips_weights(options: MetricOptions) -> list[WeightFile]:
    filename, url, description = _TRUNKS[_backbone(options)]
    return [
        WeightFile(
            description=description,
            path=lambda: hub_checkpoint(filename),
            fetch=(
                f"curl -L --create-dirs -o \"${{TORCH_HOME:-$HOME/.cache/torch}}/hub/checkpoints/{filename}\" {url}"
                f"  # or: python -c \"import lpips; lpips.LPIPS(net='{_backbone(options)}')\""
            ),
        )
    ]


def to_lpips_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float32 in [-1, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"lpips scorer expects uint8 images as stored in PNGs, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    return images.to(torch.float32) / 127.5 - 1.0


class LPIPSScorer:
    """image+reference: LPIPS distance per pair (lower = closer to the reference)."""

    def __init__(self, options: MetricOptions):
        import lpips as lpips_pkg

        self.backbone = _backbone(options)
        require_weights(lpips_weights(options), "lpips")
        self.device = torch.device(options.device)
        self.batch_size = max(1, int(options.batch_size))
        # Loaded once, through lpips' own path (pretrained linear layers + torchvision trunk from the hub cache).
        with warnings.catch_warnings():
            # lpips calls torchvision's deprecated ``pretrained=True``; same weights, just noisy.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
            self.model = lpips_pkg.LPIPS(net=self.backbone, version=LPIPS_VERSION, verbose=False)
        self.model.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def score(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        if images.shape != references.shape:
            raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} differ in shape")
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            a = to_lpips_range(images[start : start + self.batch_size]).to(self.device)
            b = to_lpips_range(references[start : start + self.batch_size]).to(self.device)
            out.append(self.model(a, b).reshape(-1).to(torch.float64).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


LPIPS_SPEC = register(
    MetricSpec(
        name="lpips",
        inputs=IMAGE_REFERENCE,
        kind=CONVERGENCE,
        higher_is_better=False,
        perfect=0.0,
        tolerance=0.05,
        meaning="LPIPS 0.05 to the reference: side by side, only small texture differences remain",
        backbone="alex (default; 'vgg' via backbone option): lpips v0.1 linear layers on torchvision ImageNet trunk",
        preprocessing=PREPROCESSING,
        build=LPIPSScorer,
        weights=lpips_weights,
        min_size=lambda options: MIN_SIZE[_backbone(options)],
    )
)
