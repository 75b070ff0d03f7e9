"""python:MODULE:FACTORY metric plugins: FACTORY() returns a per-image scorer that declares itself.

The scorer has ``score(images, others) -> one real number per image``, NaN for one it can't score
(see ``plugin_values``; images: uint8 (B, 3, H, W) as stored;
others: the prompts, or for a ``convergence`` metric the high-step reference images, uint8 like images)
and declares ``name`` (becomes the metric's name in every table), ``higher_is_better``, ``kind``
(``convergence``, or an absolute kind: ``alignment``, ``realism``, ``aesthetic``, ...) and ``identity``
(what its values depend on, e.g. a weights hash: part of every cache key). Optional: ``preprocessing``
(text), ``tolerance`` (default min-steps tolerance) and ``meaning`` (one line: what a difference that size
means), ``perfect`` (convergence: the value of an image
against itself). A factory that raises FileNotFoundError has missing weights: the metric is skipped
with the error's text, which should say how to fetch them.

Loaded once per process and registered under its declared name, so tables, the gate and the report
name it like a built-in; a Ray worker rebuilds it from the same python:... string (spec.plugin).

Plugins are code evalkit does not own, so it trusts neither what they do nor what they return:
``evalkit.plugins.plugin_code`` is the one guard every call into a python: plugin (a model's or a metric's:
import, factory, pipeline call, score) runs under, and ``plugin_values`` the one check of what ``score`` returns.
"""
from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import torch

from ..errors import EvalkitError
from ..plugins import PREFIX, fix_factory, is_plugin, plugin_code, plugin_factory
from .base import CONVERGENCE, IMAGE_PROMPT, IMAGE_REFERENCE, METRICS, MetricSpec

USAGE = "python:MODULE:FACTORY, e.g. python:mypkg.metrics:aesthetic"
DECLARED = ("name", "higher_is_better", "kind", "identity")


class PluginWeightsMissing(EvalkitError):
    """The plugin's factory could not find its weights: the metric is skipped, the run goes on."""


@functools.cache
def plugin_scorer(source: str) -> CheckedScorer:
    """The scorer FACTORY() returns, built once per process (the driver's and each worker's own)."""
    module_name, sep, factory_name = source[len(PREFIX):].partition(":")
    if not sep or not module_name or not factory_name.isidentifier():
        raise EvalkitError(f"malformed metric plugin {source!r}: use {USAGE}")
    _, factory = plugin_factory(source, "metric", USAGE)
    with plugin_code(source, f"metric {source}", "while building its scorer", fix_factory(source)):
        try:
            scorer = factory()
        except FileNotFoundError as exc:
            raise PluginWeightsMissing(f"{source}: {exc}") from None
        missing = [a for a in DECLARED if getattr(scorer, a, None) in (None, "")]
        scores = callable(getattr(scorer, "score", None))
    if missing or not scores:
        raise EvalkitError(f"metric {source} returned {type(scorer).__name__}, which must have a score(images, others) "
                           f"method and declare {', '.join(DECLARED)} (missing: {', '.join(missing) or 'score'})")
    return CheckedScorer(scorer, source)


class CheckedScorer:
    """The plugin's scorer (attributes read through), whose `score` runs under the plugin guard and returns
    values checked by `plugin_values`: what the per-image cache and every table receive, on any worker."""

    def __init__(self, scorer: Any, source: str):
        self.scorer, self.source = scorer, source

    def __getattr__(self, name: str) -> Any:
        if name in ("scorer", "source"):  # not set yet (e.g. while unpickling): don't recurse
            raise AttributeError(name)
        return getattr(self.scorer, name)

    def score(self, images: torch.Tensor, others: Any) -> list[float]:
        with plugin_code(self.source, f"metric {self.source}", f"while scoring a batch of {len(images)} image(s)",
                         "scores already cached are kept: fix the scorer, then rerun the same command to resume"):
            values = self.scorer.score(images, others)
        return plugin_values(values, len(images), self.source)


def plugin_values(values: Any, count: int, source: str) -> list[float]:
    """What a plugin's score() returned for `count` images, as floats: exactly one real number per image (a list,
    tuple or other sequence of numbers, or a (count,) / (count, 1) array or tensor), else one line naming the
    plugin, what it returned and the fix. Without this, a short list lost the last scores to a zip, strings
    were parsed as numbers and bools counted as 0/1.

    NaN is allowed: "this image can't be scored" (no face to rate, no text to read) is a legitimate answer, and
    it is what a broken image already gets. The image then has no value: the cache keeps the NaN (a rerun asks
    nothing again), and means, intervals and gates use the images that have one (their n says how many).
    Infinity is refused: it would make every mean and interval of its column infinite or NaN."""
    array, what = _as_array(values)
    fix = f"score(images, others) must return one real number per image ({count} here), in order, as a list or a " \
          "1-D array/tensor (NaN for an image it can't score)"
    if array is None:
        raise EvalkitError(f"metric {source} returned {what} for a batch of {count} image(s), not numbers: {fix}")
    if array.shape not in ((count,), (count, 1)):
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
            raise EvalkitError(f"metric {source} returned {len(array)} value(s) ({what}) for a batch of {count} "
                               f"image(s): {fix}")
        raise EvalkitError(f"metric {source} returned {what} for a batch of {count} image(s): {fix}")
    infinite = int(np.isinf(array).sum())
    if infinite:
        raise EvalkitError(f"metric {source} returned {infinite} infinite value(s) for a batch of {count} image(s): "
                           "return finite values, or NaN for an image it can't score")
    return array.reshape(-1).tolist()


def _as_array(values: Any) -> tuple[np.ndarray | None, str]:
    """(float64 array, description) of real numbers, or (None, description) of whatever else `values` is."""
    if isinstance(values, torch.Tensor):
        what = f"a {str(values.dtype).removeprefix('torch.')} tensor of shape {tuple(values.shape)}"
        real = not (values.dtype == torch.bool or values.is_complex())
        return (values.detach().cpu().double().numpy() if real else None), what
    if isinstance(values, np.ndarray):
        what = f"a {values.dtype} array of shape {values.shape}"
        return (values.astype(np.float64) if values.dtype.kind in "iuf" else None), what
    if isinstance(values, (str, bytes, Mapping, AbstractSet)) or not hasattr(values, "__iter__"):
        return None, type(values).__name__
    items = list(values)
    kinds = ", ".join(sorted({_kind(v) for v in items})) or "nothing"
    what = f"a {type(values).__name__} of {len(items)} {kinds}"
    if not all(_is_real(v) for v in items):
        return None, what
    return np.array([float(v) for v in items], dtype=np.float64), what


def _is_real(value: Any) -> bool:
    """A real number (not a bool: True would score 1.0), or a one-element real tensor or array."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and value.dtype != torch.bool and not value.is_complex()
    if isinstance(value, np.ndarray):
        return value.size == 1 and value.dtype.kind in "iuf"
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array"
    return type(value).__name__


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
        meaning=str(getattr(scorer, "meaning", "") or ""),
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
