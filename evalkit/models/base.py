"""The one contract every model backend meets.

A backend turns a spec string into a `Model`: a diffusers-style pipeline (callable as
`pipe(prompt=[...], num_inference_steps=N, generator=[...], guidance_scale=g, height=h,
width=w, output_type="pil")` returning `.images`, with a swappable `.scheduler`), the module
whose forward calls are the model evaluations (NFE), and an identity that goes into job keys.
The pipeline is loaded lazily so that planning a finished sweep loads no weights.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

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
