"""python:MODULE:FACTORY - in-house models: FACTORY() returns a diffusers-style pipeline."""
from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

import numpy as np
from PIL import Image

from ..errors import EvalkitError
from .base import LoadOptions, Model, find_denoiser, scheduler_config_of

USAGE = "python:MODULE:FACTORY, e.g. python:mypkg.models:make_pipeline"


def load_python(target: str, options: LoadOptions) -> Model:
    module_name, sep, factory_name = target.partition(":")
    if not sep or not module_name or not factory_name.isidentifier() or ":" in factory_name:
        raise EvalkitError(f"malformed model spec 'python:{target}': use {USAGE}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvalkitError(
            f"can't import module {module_name!r} for python:{target} ({exc}): install it or add its folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a plugin that breaks at import is the user's input problem
        raise EvalkitError(f"module {module_name!r} for python:{target} raised {type(exc).__name__} at import "
                           f"({_first_line(exc)}): fix the module (try `python -c 'import {module_name}'`)") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EvalkitError(f"module {module_name!r} has no callable {factory_name!r}: check the FACTORY part of {USAGE}")
    try:
        pipe = factory()
    except Exception as exc:  # noqa: BLE001 - a plugin's failure is the user's input problem
        raise EvalkitError(f"python:{target} failed while building the pipeline: {type(exc).__name__}: {exc}") from None
    scheduler = getattr(pipe, "scheduler", None)
    if not callable(pipe) or scheduler is None or not hasattr(type(scheduler), "from_config"):
        raise EvalkitError(
            f"python:{target} returned {type(pipe).__name__}, not a diffusers-style pipeline: "
            "it must be callable and have a .scheduler whose class supports from_config"
        )
    find_denoiser(pipe)  # fail now, not mid-run, if NFE can't be counted
    if hasattr(pipe, "to"):
        pipe = pipe.to(options.device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    try:
        source = inspect.getsource(module).encode()
    except (OSError, TypeError):
        source = module_name.encode()
    identity = {
        "backend": "python",
        "factory": target,
        "source_sha256": hashlib.sha256(source).hexdigest(),
        # a plugin can say what its weights are; without it, the module source stands in
        "model_id": str(getattr(pipe, "evalkit_identity", "")),
        "dtype": options.dtype,
    }
    return Model(
        spec=f"python:{target}",
        identity=identity,
        scheduler_config=scheduler_config_of(scheduler),
        load_pipeline=lambda: CheckedPipeline(pipe, target),
        output_type="pil",
    )


class CheckedPipeline:
    """The plugin's pipeline (attributes read and set through, so samplers swap and NFE hooks work), whose
    output is checked: `.images` must be PIL images, or float (H, W, 3) arrays in [0, 1] (diffusers' "np"
    output, which can carry the NaNs that render flags); anything else is named, not saved."""

    def __init__(self, pipe: Any, target: str):
        object.__setattr__(self, "_pipe", pipe)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pipe, name, value)

    def __call__(self, **kwargs: Any) -> Any:
        output = self._pipe(**kwargs)
        images = getattr(output, "images", None)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)) or not all(_is_image(image) for image in images):
            got = type(images).__name__ if not isinstance(images, (list, tuple)) else \
                ", ".join(sorted({type(image).__name__ for image in images}))
            raise EvalkitError(f"python:{self._target} returned {got} as .images, not images: make the pipeline "
                               "return an object whose .images is a list of PIL.Image (output_type='pil') or of "
                               "float (H, W, 3) arrays in [0, 1]")
        return output


def _is_image(image: Any) -> bool:
    return isinstance(image, Image.Image) or (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
