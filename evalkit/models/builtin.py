"""builtin:NAME - exact models that ship with evalkit and need no weights."""
from __future__ import annotations

from ..errors import EvalkitError
from .base import LoadOptions, Model

BUILTINS = ("mixture",)


def load_builtin(target: str, options: LoadOptions) -> Model:
    if target not in BUILTINS:
        raise EvalkitError(f"unknown built-in model {target!r}: use one of {', '.join('builtin:' + b for b in BUILTINS)}")
    from . import mixture

    def load_pipeline():
        pipe = mixture.mixture_pipeline()
        return pipe.to(options.device) if hasattr(pipe, "to") else pipe

    return Model(
        spec=f"builtin:{target}",
        identity={"backend": "builtin", "model": target, "version": getattr(mixture, "VERSION", "1")},
        scheduler_config=dict(mixture.SCHEDULER_CONFIG),
        load_pipeline=load_pipeline,
        default_guidance=1.0,
        default_size=64,
    )
