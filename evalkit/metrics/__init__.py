"""Metrics registry (`evalkit metrics` lists it). One module per family; each registers its specs."""
from __future__ import annotations

from ..registry import Registry
from .base import MetricSpec

METRICS: Registry[MetricSpec] = Registry("metric")


def register(spec: MetricSpec) -> MetricSpec:
    return METRICS.add(spec.name, spec)


def _register_all() -> None:
    from . import clip, cmmd, fid, lpips, reference  # noqa: F401  (each module registers its specs)


_register_all()
