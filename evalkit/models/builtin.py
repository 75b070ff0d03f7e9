"""builtin:NAME - exact models that ship with evalkit and need no weights."""
from __future__ import annotations

from ..errors import EvalkitError
from .base import LoadOptions, Model

BUILTINS = ("mixture",)


def load_builtin(target: str, options: LoadOptions) -> Model:
    if target not in BUILTINS:
        raise EvalkitError(f"unknown built-in model {target!r}: use one of {', '.join('builtin:' + b for b in BUILTINS)}")
    from . import mixture

    # The exact model is numpy float64 on the CPU whatever --device says: it needs no accelerator.
    return Model(
        spec=f"builtin:{target}",
        identity={"backend": "builtin", "model": target, "version": mixture.VERSION},
        scheduler_config={"_class_name": "EulerDiscreteScheduler", **mixture.SCHEDULER_CONFIG},
        load_pipeline=mixture.mixture_pipeline,
        default_guidance=1.0,
        default_size=64,
    )
