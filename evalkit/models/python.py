"""python:MODULE:FACTORY - in-house models: FACTORY() returns a diffusers-style pipeline."""
from __future__ import annotations

import hashlib
import importlib
import inspect

from ..errors import EvalkitError
from ..schedulers import config_of
from .base import LoadOptions, Model, find_denoiser

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
        scheduler_config=config_of(scheduler),
        load_pipeline=lambda: pipe,
        output_type="pil",
    )
