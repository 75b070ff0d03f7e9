"""Model registry: a spec string -> a backend that loads a `Model` (see base.py for the contract).

  builtin:NAME              the exact models shipped with evalkit (no weights): mixture, mixture-flow
  diffusers:ID_OR_PATH      any diffusers text-to-image pipeline; a bare hub id or folder works too
  python:MODULE:FACTORY     FACTORY() returns a diffusers-style pipeline (in-house models)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import EvalkitError
from ..registry import Registry
from .base import LoadOptions, Model, check_device, find_denoiser, resolve_device, scheduler_config_of, torch_dtype

__all__ = ["BACKENDS", "LoadOptions", "Model", "check_device", "find_denoiser", "load_model", "resolve_device",
           "scheduler_config_of", "torch_dtype"]


@dataclass(frozen=True)
class Backend:
    name: str
    usage: str
    load: Callable[[str, LoadOptions], Model]


def _load_builtin(target: str, options: LoadOptions) -> Model:
    from .builtin import load_builtin

    return load_builtin(target, options)


def _load_diffusers(target: str, options: LoadOptions) -> Model:
    from .diffusers import load_diffusers

    return load_diffusers(target, options)


def _load_python(target: str, options: LoadOptions) -> Model:
    from .python import load_python

    return load_python(target, options)


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add("builtin", Backend("builtin", "builtin:mixture or builtin:mixture-flow", _load_builtin))
BACKENDS.add("diffusers", Backend("diffusers", "diffusers:ORG/NAME or diffusers:/path/to/folder", _load_diffusers))
BACKENDS.add("python", Backend("python", "python:package.module:factory", _load_python))


def load_model(spec: str, options: LoadOptions = LoadOptions()) -> Model:
    """Resolve `spec` to its backend; a spec with no known prefix is a diffusers hub id or folder."""
    prefix, sep, target = spec.partition(":")
    if sep and prefix in BACKENDS.names():
        backend = BACKENDS.get(prefix)
    else:  # bare hub id / folder (a Windows drive letter also lands here)
        backend, target = BACKENDS.get("diffusers"), spec
    if not target:
        raise EvalkitError(f"model spec {spec!r} names no model: use e.g. {backend.usage}")
    model = backend.load(target, options)
    model.spec = spec
    return model
