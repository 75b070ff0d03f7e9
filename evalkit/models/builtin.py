"""builtin:NAME - exact models that ship with evalkit and need no weights."""
from __future__ import annotations

import importlib

from ..errors import EvalkitError
from .base import LoadOptions, Model

#: name -> (module, its pipeline factory, the scheduler class of its own config): the DDPM-family
#: exact model and its flow-matching twin (loaded lazily: neither is imported until asked for)
BUILTINS = {
    "mixture": ("mixture", "mixture_pipeline", "EulerDiscreteScheduler"),
    "mixture-flow": ("mixture_flow", "mixture_flow_pipeline", "FlowMatchEulerDiscreteScheduler"),
}


def load_builtin(target: str, options: LoadOptions) -> Model:
    if target not in BUILTINS:
        raise EvalkitError(f"unknown built-in model {target!r}: use one of {', '.join('builtin:' + b for b in BUILTINS)}")
    module_name, factory, scheduler_class = BUILTINS[target]
    module = importlib.import_module(f".{module_name}", __package__)
    # The exact models are numpy float64 on the CPU whatever --device says: they need no accelerator.
    return Model(
        spec=f"builtin:{target}",
        identity={"backend": "builtin", "model": target, "version": module.VERSION},
        scheduler_config={"_class_name": scheduler_class, **module.SCHEDULER_CONFIG},
        load_pipeline=getattr(module, factory),
        default_guidance=1.0,
        default_size=64,
    )
