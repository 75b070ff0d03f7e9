"""python:MODULE:FACTORY metric plugins: FACTORY() returns a per-image scorer that declares itself.

The scorer has ``score(images, others) -> one value per image`` (images: uint8 (B, 3, H, W) as stored;
others: the prompts, or for a ``convergence`` metric the high-step reference images, uint8 like images)
and declares ``name`` (becomes the metric's name in every table), ``higher_is_better``, ``kind``
(``convergence``, or an absolute kind: ``alignment``, ``realism``, ``aesthetic``, ...) and ``identity``
(what its values depend on, e.g. a weights hash: part of every cache key). Optional: ``preprocessing``
(text), ``tolerance`` (default min-steps tolerance), ``perfect`` (convergence: the value of an image
against itself). A factory that raises FileNotFoundError has missing weights: the metric is skipped
with the error's text, which should say how to fetch them.

Loaded once per process and registered under its declared name, so tables, the gate and the report
name it like a built-in; a Ray worker rebuilds it from the same python:... string (spec.plugin).
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

from ..errors import EvalkitError
from .base import CONVERGENCE, IMAGE_PROMPT, IMAGE_REFERENCE, METRICS, MetricSpec

PREFIX = "python:"
USAGE = "python:MODULE:FACTORY, e.g. python:mypkg.metrics:aesthetic"
DECLARED = ("name", "higher_is_better", "kind", "identity")


class PluginWeightsMissing(EvalkitError):
    """The plugin's factory could not find its weights: the metric is skipped, the run goes on."""


def is_plugin(name: str) -> bool:
    return name.startswith(PREFIX)


@functools.cache
def plugin_scorer(source: str) -> Any:
    """The scorer FACTORY() returns, built once per process (the driver's and each worker's own)."""
    module_name, sep, factory_name = source[len(PREFIX):].partition(":")
    if not sep or not module_name or not factory_name.isidentifier():
        raise EvalkitError(f"malformed metric plugin {source!r}: use {USAGE}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvalkitError(f"can't import module {module_name!r} for metric {source} ({exc}): install it or add "
                           "its folder to PYTHONPATH") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EvalkitError(f"module {module_name!r} has no callable {factory_name!r}: check the FACTORY part of {USAGE}")
    try:
        scorer = factory()
    except FileNotFoundError as exc:
        raise PluginWeightsMissing(f"{source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's failure is the user's input problem
        raise EvalkitError(f"metric {source} failed while building its scorer: {type(exc).__name__}: {exc}") from None
    missing = [a for a in DECLARED if getattr(scorer, a, None) in (None, "")]
    if missing or not callable(getattr(scorer, "score", None)):
        raise EvalkitError(f"metric {source} returned {type(scorer).__name__}, which must have a score(images, others) "
                           f"method and declare {', '.join(DECLARED)} (missing: {', '.join(missing) or 'score'})")
    return scorer


def load_plugin(source: str) -> MetricSpec:
    """The plugin's spec, registered in METRICS under its declared name (idempotent)."""
    scorer = plugin_scorer(source)
    name, kind = str(scorer.name), str(scorer.kind)
    if name in METRICS.names() and METRICS.get(name).plugin != source:
        raise EvalkitError(f"metric {source} declares the name {name!r}, which {METRICS.get(name).plugin or 'evalkit'} "
                           "already uses: give the plugin's scorer another name")
    spec = MetricSpec(
        name=name,
        inputs=IMAGE_REFERENCE if kind == CONVERGENCE else IMAGE_PROMPT,
        kind=kind,
        higher_is_better=bool(scorer.higher_is_better),
        backbone=f"{source} ({scorer.identity})",
        preprocessing=str(getattr(scorer, "preprocessing", "") or "the plugin's own"),
        build=lambda options: plugin_scorer(source),
        tolerance=getattr(scorer, "tolerance", None),
        perfect=getattr(scorer, "perfect", None),
        plugin=source,
    )
    try:
        return METRICS.add(name, spec)
    except ValueError as exc:
        raise EvalkitError(f"metric {source}: {exc}") from None


def register_plugins(names: tuple[str, ...] | list[str]) -> None:
    """Load every python:... metric of a config, so later stages (gate, report, min-steps) know its name;
    one whose weights are missing is left for the score stage to skip with its reason."""
    for name in names:
        if is_plugin(name):
            try:
                load_plugin(name)
            except PluginWeightsMissing:
                pass
