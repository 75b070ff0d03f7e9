"""python:MODULE:FACTORY - in-house models: FACTORY() returns a diffusers-style pipeline.

The plugin's code (its import, FACTORY, the pipeline's calls) runs under the plugin guard
(`evalkit.plugins.plugin_code`, shared with metric plugins); what its pipeline returns is checked with
every backend's output (`base.check_images`).
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Any

from ..errors import EvalkitError
from ..plugins import fix_factory, plugin_code, plugin_factory
from .base import LoadOptions, Model, find_denoiser, scheduler_config_of

USAGE = "python:MODULE:FACTORY, e.g. python:mypkg.models:make_pipeline"


def load_python(target: str, options: LoadOptions) -> Model:
    module_name, sep, factory_name = target.partition(":")
    if not sep or not module_name or not factory_name.isidentifier() or ":" in factory_name:
        raise EvalkitError(f"malformed model spec 'python:{target}': use {USAGE}")
    spec = f"python:{target}"
    module, factory = plugin_factory(spec, "model", USAGE)
    with plugin_code(spec, f"model {spec}", "while building the pipeline", fix_factory(spec)):
        pipe = factory()
        scheduler = getattr(pipe, "scheduler", None)
        if not callable(pipe) or scheduler is None or not hasattr(type(scheduler), "from_config"):
            raise EvalkitError(
                f"{spec} returned {type(pipe).__name__}, not a diffusers-style pipeline: "
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
        spec=spec,
        identity=identity,
        scheduler_config=scheduler_config_of(scheduler),
        load_pipeline=lambda: CheckedPipeline(pipe, target),
        output_type="pil",
    )


class CheckedPipeline:
    """The plugin's pipeline (attributes read and set through, so samplers swap and NFE hooks work), whose
    calls run under the plugin guard: a model that raises (or calls sys.exit) mid-sweep is one line naming it
    and the exception, and the batches rendered before it are kept. What it returns is checked, as every
    backend's output is, by the renderer (`base.check_images`)."""

    def __init__(self, pipe: Any, target: str):
        object.__setattr__(self, "_pipe", pipe)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pipe, name, value)

    def __call__(self, **kwargs: Any) -> Any:
        source = f"python:{self._target}"
        with plugin_code(source, f"model {source}", "while rendering a batch",
                         "the batches rendered before it are saved: fix the model, then rerun the same command "
                         "to resume"):
            return self._pipe(**kwargs)
