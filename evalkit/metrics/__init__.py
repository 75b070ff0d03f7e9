"""Metrics registry (`evalkit metrics` lists it). One module per family; each registers its specs."""
from __future__ import annotations

from ..registry import Registry
from .base import MetricSpec

METRICS: Registry[MetricSpec] = Registry("metric")


def register(spec: MetricSpec) -> MetricSpec:
    return METRICS.add(spec.name, spec)


def metric_spec(name: str) -> MetricSpec:
    """A registered metric, or a python:MODULE:FACTORY plugin (loaded and registered on first use)."""
    if name.startswith("python:"):
        from .plugins import load_plugin

        return load_plugin(name)
    return METRICS.get(name)


def _register_all() -> None:
    from . import clip, cmmd, fid, lpips, reference  # noqa: F401  (each module registers its specs)


_register_all()
