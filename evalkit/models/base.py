"""The one contract every model backend meets.

A backend turns a spec string into a `Model`: a diffusers-style pipeline (callable as
`pipe(prompt=[...], num_inference_steps=N, generator=[...], guidance_scale=g, height=h,
width=w, output_type="pil")` returning `.images`, with a swappable `.scheduler`), the module
whose forward calls are the model evaluations (NFE), and an identity that goes into job keys.
The pipeline is loaded lazily so that planning a finished sweep loads no weights.

What `.images` must hold is checked here too (`check_images`), once, for every backend: one image
per prompt, each a PIL image or a float (H, W, 3) array in [0, 1] (NaN allowed: flagged, not refused),
of the size asked.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import EvalkitError


@dataclass(frozen=True)
class LoadOptions:
    device: str = "cpu"
    dtype: str = "float32"
    revision: str | None = None
    variant: str | None = None


@dataclass
class Model:
    spec: str
    identity: dict[str, Any]  # JSON-able; everything about the model that changes pixels
    scheduler_config: dict[str, Any]  # the model's own scheduler config; samplers are built from it
    load_pipeline: Callable[[], Any] = field(repr=False)
    default_guidance: float | None = None  # None: leave the pipeline's own default
    default_size: int | None = None  # None: leave the pipeline's own default
    # "np" gives float images, so NaNs can be flagged before quantisation; plugins promise only "pil"
    output_type: str = "np"
    # image sides must be a multiple of this (the VAE's downsampling, latent packing), and `why`; pipelines round
    # or refuse other sizes. 1: any size (or unknown, e.g. a python: plugin)
    size_multiple: int = 1
    size_why: str = ""

    @functools.cached_property
    def pipe(self) -> Any:
        return self.load_pipeline()

    @property
    def denoiser(self) -> torch.nn.Module:
        return find_denoiser(self.pipe)


def scheduler_config_of(scheduler: Any) -> dict[str, Any]:
    """A scheduler instance's config as saved to disk (with `_class_name`, which `.config` lacks): a model's own
    scheduler config, and a sampler's resolved config in job keys."""
    return {**dict(scheduler.config), "_class_name": type(scheduler).__name__}


def resolve_device(device: str) -> str:
    """"auto": cuda if available, else mps, else cpu. Resolved where the model runs (on each Ray worker)."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str) -> None:
    """A device this machine has (the name itself is validated with the config)."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
            raise EvalkitError(f"--device {device}: this machine has {found}: use --device auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise EvalkitError("--device mps: MPS is not available on this machine: use --device auto or cpu")


def find_denoiser(pipe: Any) -> torch.nn.Module:
    """The network a sampler calls once per model evaluation: `unet`, `transformer` or `denoiser`."""
    for name in ("unet", "transformer", "denoiser", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise EvalkitError(
        f"{type(pipe).__name__} has no `unet`, `transformer` or `denoiser` module to count model "
        "evaluations on: expose the denoising network as one of those attributes"
    )


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise EvalkitError(f"unknown dtype {name!r}: use one of {', '.join(TORCH_DTYPES)}") from None


# ----------------------------------------------------------------------------------------------------------
# The output contract
# ----------------------------------------------------------------------------------------------------------

# How far outside [0, 1] a float pixel may stray and still be clipped rather than refused: one 8-bit level.
# A real pipeline's rounding (1.0000001, -1e-7, half-precision arithmetic) is far inside it, and clipping
# within it moves a saved pixel by at most the one level that quantisation moves it anyway. Anything beyond
# is another scale (0-255, a decoder's [-1, 1]) or an unclamped decoder: clipping that would silently
# saturate the picture every metric then scores, so it is refused with the fix.
OVERSHOOT = 1 / 255
IMAGES = "a list of PIL.Image (output_type='pil') or of float (H, W, 3) arrays in [0, 1]"
_PIL_MODES = ("RGB", "RGBX", "L", "P", "1", "CMYK", "YCbCr")  # 8-bit, opaque: convert("RGB") keeps the picture


def check_images(images: Any, spec: str, count: int, size: int | None) -> list[tuple[np.ndarray, bool]]:
    """A pipeline's `.images` for a batch of `count` prompts, checked against the output contract and quantised:
    per image, its uint8 (H, W, 3) pixels and whether any value was NaN or infinite (a diverged model: flagged
    broken by the renderer, not refused). The one check, for every backend, where the renderer receives a batch
    (this process or a Ray worker): a break is one line naming the model, what it returned and the fix."""
    if isinstance(images, np.ndarray) and images.ndim == 4:  # diffusers' "np" output: one (B, H, W, C) array
        images = list(images)
    if not isinstance(images, (list, tuple)) or not all(isinstance(i, (Image.Image, np.ndarray)) for i in images):
        got = ", ".join(sorted({type(i).__name__ for i in images})) if isinstance(images, (list, tuple)) else \
            type(images).__name__
        raise EvalkitError(f"model {spec} returned {got} as .images, not images: make the pipeline return an object "
                           f"whose .images is {IMAGES}")
    if len(images) != count:
        raise EvalkitError(f"model {spec} returned {len(images)} image(s) for a batch of {count} prompt(s): its "
                           "pipeline must return one image per prompt")
    checked = [image_pixels(image, spec) for image in images]
    for pixels, _ in checked:
        if size is not None and pixels.shape[:2] != (size, size):
            raise EvalkitError(f"model {spec} returned a {pixels.shape[1]}x{pixels.shape[0]} image where {size}x{size} "
                               "was asked: its pipeline must honour height and width")
    return checked


def image_pixels(image: Image.Image | np.ndarray, spec: str = "the model") -> tuple[np.ndarray, bool]:
    """One image of the contract -> (uint8 (H, W, 3), had NaN/inf). Float values within OVERSHOOT of [0, 1] are
    clipped; non-finite ones become 0 (NaN, -inf) or 1 (+inf) and are reported, for the renderer to flag."""
    if isinstance(image, Image.Image):
        if image.mode not in _PIL_MODES:
            alpha = "A" in image.getbands()
            raise EvalkitError(
                f"model {spec} returned PIL images of mode {image.mode}"
                + (", whose alpha channel evalkit would drop" if alpha else ", not 8-bit RGB")
                + ": return mode RGB images" + (" (composite or drop the alpha: image.convert('RGB'))" if alpha else
                                                " (or float (H, W, 3) arrays in [0, 1])"))
        return np.asarray(image.convert("RGB")), False
    described = f"{image.dtype} {tuple(image.shape)} arrays"
    if image.dtype.kind != "f":
        values = f" (values {image.min()}..{image.max()})" if image.dtype.kind in "iu" and image.size else ""
        raise EvalkitError(f"model {spec} returned {described}{values} as images, not float: return float arrays in "
                           "[0, 1]" + (" (e.g. array / 255)" if image.dtype.kind in "iu" else "") + " or PIL images")
    if image.ndim != 3 or image.shape[2] != 3 or not image.size:
        raise EvalkitError(f"model {spec} returned {described} as images, not (H, W, 3) RGB: {_shape_fix(image.shape)}")
    array = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(array)
    non_finite = not finite.all()
    if finite.any():
        low, high = float(array[finite].min()), float(array[finite].max())
        if low < -OVERSHOOT or high > 1 + OVERSHOOT:
            raise EvalkitError(f"model {spec} returned {image.dtype} arrays with values in [{low:.4g}, {high:.4g}] as "
                               f"images, outside [0, 1] (by more than {OVERSHOOT:.2g}): {_range_fix(low, high)}")
    if non_finite:
        array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8), non_finite


def _shape_fix(shape: tuple[int, ...]) -> str:
    if len(shape) == 3 and shape[2] == 4:
        return "drop the alpha channel (array[..., :3])"
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        return "put the channels last (array.transpose(1, 2, 0))"
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return "give gray images three channels (np.repeat(array.reshape(h, w, 1), 3, axis=2))"
    return "return one (H, W, 3) array per image"


def _range_fix(low: float, high: float) -> str:
    if low >= -OVERSHOOT and high <= 255 + OVERSHOOT:
        return "they look like 0-255 values: divide by 255"
    if low >= -1 - OVERSHOOT and high <= 1 + OVERSHOOT:
        return "they look like a decoder's [-1, 1]: map them with (x / 2 + 0.5).clip(0, 1), as diffusers does"
    return "scale them into [0, 1] and clip (np.clip(x, 0, 1))"
