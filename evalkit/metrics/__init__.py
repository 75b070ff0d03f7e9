"""Metrics registry (`evalkit metrics` lists it). One module per family; each registers its specs in
base.METRICS when imported, which importing this package does."""
from __future__ import annotations

from . import clip, cmmd, fid, heads, hpsv2, imagereward, lpips, pickscore, reference  # noqa: F401  (each module registers its specs)
from .base import METRICS, MetricSpec, register
from .plugins import is_plugin, load_plugin

__all__ = ["METRICS", "metric_spec", "register"]


def metric_spec(name: str) -> MetricSpec:
    """A registered metric, or a python:MODULE:FACTORY plugin (loaded and registered on first use)."""
    return load_plugin(name) if is_plugin(name) else METRICS.get(name)
