"""builtin:NAME - exact models that ship with evalkit and need no weights."""
from __future__ import annotations

import importlib
from typing import NamedTuple

from ..errors import EvalkitError
from .base import LoadOptions, Model


class Builtin(NamedTuple):
    module: str  # its pipeline module in evalkit.models.exact (which holds its VERSION)
    factory: str  # the pipeline factory in that module
    config: str  # its shipped scheduler config in evalkit.models.exact.schedule
    scheduler_class: str  # the scheduler class of that config
    size_multiple: int = 1  # what image sides must be a multiple of (the flow model packs 2x2 pixels, like FLUX)


#: name -> where it lives: the DDPM-family exact model, its flow-matching twin, and the twin whose every picture is
#: chosen near t = 1 (exact/variants.py) (loaded lazily: none is imported until asked for)
BUILTINS = {
    "mixture": Builtin("pipeline", "mixture_pipeline", "SCHEDULER_CONFIG", "EulerDiscreteScheduler"),
    "mixture-flow": Builtin("flow_pipeline", "mixture_flow_pipeline", "FLOW_SCHEDULER_CONFIG",
                            "FlowMatchEulerDiscreteScheduler", size_multiple=2),
    "mixture-early": Builtin("flow_pipeline", "mixture_early_pipeline", "FLOW_SCHEDULER_CONFIG",
                             "FlowMatchEulerDiscreteScheduler", size_multiple=2),
}


def load_builtin(target: str, options: LoadOptions) -> Model:
    if target not in BUILTINS:
        raise EvalkitError(f"unknown built-in model {target!r}: use one of {', '.join('builtin:' + b for b in BUILTINS)}")
    builtin = BUILTINS[target]
    module = importlib.import_module(f".exact.{builtin.module}", __package__)
    schedule = importlib.import_module(".exact.schedule", __package__)
    # The exact models are numpy float64 on the CPU whatever --device says: they need no accelerator.
    return Model(
        spec=f"builtin:{target}",
        identity={"backend": "builtin", "model": target, "version": module.VERSION},
        scheduler_config={"_class_name": builtin.scheduler_class, **getattr(schedule, builtin.config)},
        load_pipeline=getattr(module, builtin.factory),
        default_guidance=1.0,
        default_size=64,
        size_multiple=builtin.size_multiple,
        size_why="it packs 2x2 pixels into a token, as FLUX packs latents" if builtin.size_multiple > 1 else "",
    )
