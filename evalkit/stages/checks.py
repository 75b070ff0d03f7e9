"""What a sweep asks of the score stage, checked before anything renders (and before config.toml records it,
where a bad value would break every later `evalkit score DIR`): metric names and backbones, the target every
set metric compares with, and the image size every scored metric can take."""
from __future__ import annotations

from ..config import SweepConfig
from ..errors import EvalkitError
from ..metrics import METRICS, metric_spec
from ..metrics.base import MetricOptions, MetricSpec
from ..metrics.plugins import PluginWeightsMissing
from ..plugins import is_plugin
from .score import metric_options
from .targets import check_targets


def scorable(config: SweepConfig) -> list[MetricSpec]:
    """The metrics a run of `config` scores: the selected ones (or every registered one) whose weights are
    present (the score stage skips the others, saying how to fetch their weights)."""
    specs = []
    for name in config.metrics or METRICS.names():
        try:
            spec = metric_spec(name)
        except PluginWeightsMissing:
            continue
        if not spec.missing_weights(metric_options(config, spec.name)):
            specs.append(spec)
    return specs


def check_metrics(config: SweepConfig) -> None:
    """Unknown metrics, bad backbones and unusable set-metric targets, before anything renders."""
    for name in [*config.metrics, *config.backbones, *config.tolerances]:
        if not is_plugin(name):  # plugins were loaded (and named) with the config
            METRICS.get(name)
    for name, backbone in config.backbones.items():
        METRICS.get(name).weights(MetricOptions(backbone=backbone))  # parses and resolves the backbone name
    check_targets(config, [METRICS.get(n) for n in config.metrics or METRICS.names() if not is_plugin(n)])


def check_image_size(config: SweepConfig, size: int | None) -> None:
    """Every metric the run will score can take `size` px images (None: the pipeline's own default, unknown
    until it runs)."""
    if size is None:
        return
    for spec in scorable(config):
        need = spec.min_size(metric_options(config, spec.name))
        if size < need:
            raise EvalkitError(f"size {size} px is too small for {spec.name}, which needs images of at least {need} "
                               f"px per side: use --size {need} or larger, or leave {spec.name} out of metrics")
