"""Stage 0: config -> RenderJobs (the sweep plus one reference per prompt+seed), each with a content key.

The model family's defaults (schedulers, reference scheduler) are filled in ONCE per command, by
`prepare_sweep`; everything after it (checks, planning, rendering, scoring) takes that resolved config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..config import SweepConfig
from ..errors import EvalkitError
from ..models import LoadOptions, Model, load_model, resolve_device, scheduler_config_of
from .prompts import Prompt
from .schedulers import build_scheduler, check_compatible, family_defaults, get_scheduler

# a job's (and its image's) role: swept, a prompt+seed's reference, or the second solution that certifies it
SWEEP, REFERENCE, CHECK = "sweep", "reference", "check"
# A plan beyond this many images is a typo (a seed count or a step list), not a sweep: planning it alone would
# take gigabytes before the first image renders.
MAX_PLANNED_IMAGES = 10_000_000


@dataclass(frozen=True)
class RenderJob:
    """One image to render. `key` hashes everything that changes its pixels, nothing else."""

    key: str
    prompt_id: str
    prompt: str
    seed: int
    scheduler: str
    steps: int
    role: str
    category: str = ""  # the prompt's (sweep.prompts.Prompt): carried to images.parquet, not part of the key
    challenge: str = ""


@dataclass(frozen=True)
class RenderSettings:
    """What every call of a sweep shares: resolved against the model's defaults."""

    guidance: float | None
    size: int | None
    negative_prompt: str | None
    dtype: str

    @classmethod
    def resolve(cls, config: SweepConfig, model: Model) -> RenderSettings:
        guidance = config.guidance if config.guidance is not None else model.default_guidance
        size = config.size if config.size is not None else model.default_size
        return cls(guidance, size, config.negative_prompt, config.dtype)


def model_options(config: SweepConfig, device: str | None = None) -> LoadOptions:
    """How to load the config's model: `device` None resolves "auto" here (the driver's view)."""
    return LoadOptions(device=device or resolve_device(config.device), dtype=config.dtype,
                       revision=config.revision, variant=config.variant)


def prepare_sweep(config: SweepConfig) -> tuple[SweepConfig, Model]:
    """The model as the driver needs it (identity and scheduler config; the pipeline is lazy), and the config
    with the family's defaults filled in, every scheduler checked against every step count it will get."""
    model = load_model(config.model, model_options(config))
    resolved = resolve_sweep(config, model)
    check_sweep(resolved, model)
    return resolved, model


def resolve_sweep(config: SweepConfig, model: Model) -> SweepConfig:
    """Schedulers, reference and check scheduler the config leaves unset, filled in by the model's family
    (a flow model gets flow solvers): the resolved values are what the run's config.toml records."""
    defaults = family_defaults(model.scheduler_config)
    reference = config.reference_scheduler or defaults.reference
    check = config.check_scheduler or next(c for c in defaults.checks if c != reference)
    return dataclasses.replace(
        config, schedulers=config.schedulers if config.schedulers is not None else defaults.schedulers,
        reference_scheduler=reference,
        check_scheduler=get_scheduler(check).name if config.certify else config.check_scheduler)


def reference_scheduler(config: SweepConfig, scheduler: str) -> str:
    """The scheduler of `scheduler`'s references: its own ("same") or the one common reference scheduler."""
    return scheduler if config.reference_scheduler == "same" else get_scheduler(config.reference_scheduler).name


def check_scheduler(config: SweepConfig, reference: str) -> str | None:
    """The solver whose image (at reference_steps, same noise) certifies `reference`'s (stages/certify.py). None: not
    certified: certification is off, the reference is stochastic (it solves no ODE, so there is no one image to
    agree on), or it is the check solver itself (only with reference_scheduler = "same": it can't certify itself)."""
    if not config.certify or get_scheduler(reference).stochastic or reference == config.check_scheduler:
        return None
    return config.check_scheduler


def check_sweep(config: SweepConfig, model: Model) -> None:
    """The image size fits the model, and every scheduler the sweep names exists and accepts every step count it
    will be given."""
    _require_resolved(config)
    size = RenderSettings.resolve(config, model).size
    if size is not None and size % model.size_multiple:
        fit = max(model.size_multiple, size - size % model.size_multiple)
        raise EvalkitError(f"size {size} px can't be rendered by {model.spec}: sizes must be multiples of "
                           f"{model.size_multiple} ({model.size_why}): use e.g. --size {fit}")
    for name in config.schedulers:
        check_compatible(get_scheduler(name), model.scheduler_config, model.spec, list(config.steps))
    references = {reference_scheduler(config, s) for s in config.schedulers}
    checks = {check_scheduler(config, r) for r in references} - {None}
    for name in references | checks:
        check_compatible(get_scheduler(name), model.scheduler_config, model.spec, [config.reference_steps])
    for name in checks:  # a tie-break renders the check solver at twice reference_steps
        try:
            check_compatible(get_scheduler(name), model.scheduler_config, model.spec, [tiebreak_steps(config)])
        except EvalkitError:
            raise EvalkitError(f"check_scheduler {name!r} refuses {tiebreak_steps(config)} steps, which a tie-break "
                               "between a reference and its check needs (twice reference_steps): choose another "
                               "check_scheduler, lower reference_steps, or pass --no-certify") from None
    if config.certify and get_scheduler(config.check_scheduler).stochastic:
        raise EvalkitError(f"check_scheduler {config.check_scheduler!r} is stochastic: a reference is certified by a "
                           "second solution of the same ODE; choose a deterministic solver (see `evalkit schedulers`)")
    if config.certify and config.reference_scheduler == config.check_scheduler:
        raise EvalkitError(f"check_scheduler {config.check_scheduler!r} is the reference scheduler: a reference can't "
                           "certify itself; choose another solver, or leave check_scheduler unset")


def plan_jobs(config: SweepConfig, model: Model, prompts: list[Prompt]) -> list[RenderJob]:
    """Sweep jobs (prompt x seed x scheduler x steps), references (prompt x seed [x scheduler]), then the checks
    that certify them (prompt x seed [x check scheduler]: a check that is itself a reference is not rendered twice)."""
    _require_resolved(config)
    settings = RenderSettings.resolve(config, model)
    schedulers = [get_scheduler(name).name for name in dict.fromkeys(config.schedulers)]
    refs = dict.fromkeys(reference_scheduler(config, s) for s in schedulers)
    checks = dict.fromkeys(c for r in refs if (c := check_scheduler(config, r)) and c not in refs)
    planned = len(prompts) * len(config.seeds) * (len(schedulers) * len(config.steps) + len(refs) + len(checks))
    if planned > MAX_PLANNED_IMAGES:
        raise EvalkitError(f"this sweep plans {planned:,} images ({len(prompts)} prompts x {len(config.seeds)} seeds x "
                           f"({len(schedulers)} schedulers x {len(config.steps)} step counts + references and checks)), more than "
                           f"{MAX_PLANNED_IMAGES:,}: use fewer seeds, prompts, schedulers or step counts")
    job = _job_maker(model, settings, {*schedulers, *refs, *checks})
    jobs = [job(p, seed, s, n, SWEEP) for s in schedulers for n in config.steps
            for p in prompts for seed in config.seeds]
    jobs += [job(p, seed, r, config.reference_steps, REFERENCE) for r in refs for p in prompts for seed in config.seeds]
    jobs += [job(p, seed, c, config.reference_steps, CHECK) for c in checks for p in prompts for seed in config.seeds]
    return jobs


def tiebreak_steps(config: SweepConfig) -> int:
    """The step count of a tie-break (stages/certify.py): the check solver at twice the reference's steps."""
    return 2 * config.reference_steps


def plan_tiebreaks(config: SweepConfig, model: Model, units: list[tuple[Prompt, int]]) -> list[RenderJob]:
    """Tie-break jobs for (prompt, seed) units whose reference and check disagree: the check solver at
    `tiebreak_steps`, from the same noise (role CHECK)."""
    _require_resolved(config)
    job = _job_maker(model, RenderSettings.resolve(config, model), {config.check_scheduler})
    return [job(prompt, seed, config.check_scheduler, tiebreak_steps(config), CHECK) for prompt, seed in units]


def _job_maker(model: Model, settings: RenderSettings, schedulers: set[str]):
    """job(prompt, seed, scheduler, steps, role) -> RenderJob, for the named schedulers."""
    resolved = {name: _scheduler_config(name, model) for name in schedulers}

    def job(prompt: Prompt, seed: int, scheduler: str, steps: int, role: str) -> RenderJob:
        key = job_key(model.identity, resolved[scheduler], scheduler, steps, seed, prompt.text, settings)
        return RenderJob(key, prompt.id, prompt.text, seed, scheduler, steps, role, prompt.category, prompt.challenge)

    return job


def job_key(model_identity: dict[str, Any], scheduler_config: dict[str, Any], scheduler: str, steps: int,
            seed: int, prompt: str, settings: RenderSettings) -> str:
    payload = {
        "model": model_identity, "scheduler": scheduler, "scheduler_config": scheduler_config,
        "steps": steps, "seed": seed, "prompt": prompt, "negative_prompt": settings.negative_prompt,
        "guidance": settings.guidance, "size": settings.size, "dtype": settings.dtype,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _require_resolved(config: SweepConfig) -> None:
    if config.schedulers is None or config.reference_scheduler is None or (config.certify and not config.check_scheduler):
        raise ValueError("the sweep's family defaults are not filled in: pass the config through resolve_sweep")


def _scheduler_config(name: str, model: Model) -> dict[str, Any]:
    """The sampler's full resolved config, minus diffusers' bookkeeping (`_diffusers_version`,
    `_use_default_values`: the latter is a set in disguise, so its order changes per process)."""
    config = scheduler_config_of(build_scheduler(get_scheduler(name), model.scheduler_config))
    return {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
