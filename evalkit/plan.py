"""Stage 0: config -> RenderJobs (the sweep plus one reference per prompt+seed), each with a content key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .config import SweepConfig
from .models import Model
from .prompts import Prompt
from .schedulers import DEFAULTS, REFERENCE as REFERENCE_SCHEDULERS, build_scheduler, check_compatible, config_of, family_of, get_scheduler
from .store import REFERENCE, SWEEP


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


def resolve_defaults(config: SweepConfig, model: Model) -> SweepConfig:
    """Schedulers and reference scheduler the config leaves unset, filled in by the model's family
    (a flow model gets flow solvers): the resolved values are what the run's config.toml records."""
    family = family_of(model.scheduler_config)
    return dataclasses.replace(
        config, schedulers=config.schedulers if config.schedulers is not None else DEFAULTS[family],
        reference_scheduler=config.reference_scheduler or REFERENCE_SCHEDULERS[family])


def reference_scheduler(config: SweepConfig, scheduler: str) -> str:
    return scheduler if config.reference_scheduler == "same" else get_scheduler(config.reference_scheduler).name


def check_sweep(config: SweepConfig, model: Model) -> None:
    """Every scheduler the sweep names must exist and accept every step count it will be given."""
    config = resolve_defaults(config, model)
    for name in config.schedulers:
        check_compatible(get_scheduler(name), model.scheduler_config, model.spec, list(config.steps))
    for name in {reference_scheduler(config, s) for s in config.schedulers}:
        check_compatible(get_scheduler(name), model.scheduler_config, model.spec, [config.reference_steps])


def plan_jobs(config: SweepConfig, model: Model, prompts: list[Prompt]) -> list[RenderJob]:
    """Sweep jobs (prompt x seed x scheduler x steps) then references (prompt x seed [x scheduler])."""
    config = resolve_defaults(config, model)
    settings = RenderSettings.resolve(config, model)
    schedulers = [get_scheduler(name).name for name in dict.fromkeys(config.schedulers)]
    resolved = {name: _scheduler_config(name, model) for name in
                set(schedulers) | {reference_scheduler(config, s) for s in schedulers}}

    def job(prompt: Prompt, seed: int, scheduler: str, steps: int, role: str) -> RenderJob:
        key = job_key(model.identity, resolved[scheduler], scheduler, steps, seed, prompt.text, settings)
        return RenderJob(key, prompt.id, prompt.text, seed, scheduler, steps, role)

    jobs = [job(p, seed, s, n, SWEEP) for s in schedulers for n in config.steps
            for p in prompts for seed in config.seeds]
    refs = dict.fromkeys(reference_scheduler(config, s) for s in schedulers)
    jobs += [job(p, seed, r, config.reference_steps, REFERENCE) for r in refs for p in prompts for seed in config.seeds]
    return jobs


def job_key(model_identity: dict[str, Any], scheduler_config: dict[str, Any], scheduler: str, steps: int,
            seed: int, prompt: str, settings: RenderSettings) -> str:
    payload = {
        "model": model_identity, "scheduler": scheduler, "scheduler_config": scheduler_config,
        "steps": steps, "seed": seed, "prompt": prompt, "negative_prompt": settings.negative_prompt,
        "guidance": settings.guidance, "size": settings.size, "dtype": settings.dtype,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _scheduler_config(name: str, model: Model) -> dict[str, Any]:
    """The sampler's full resolved config, minus diffusers' bookkeeping (`_diffusers_version`,
    `_use_default_values`: the latter is a set in disguise, so its order changes per process)."""
    config = config_of(build_scheduler(get_scheduler(name), model.scheduler_config))
    return {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
