"""Scheduler registry: the names people use -> a diffusers class + the kwargs that make it that sampler.

A scheduler is always built with `cls.from_config(model_scheduler_config, **kwargs)`, so the
model's own noise schedule and spacing (e.g. `trailing` for distilled models) are kept and only
the solver changes; the model is never reloaded.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from .errors import EvalkitError
from .registry import Registry


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    display: str
    cls_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # ancestral/SDE: never converges to one image per seed
    family: str = "ddpm"  # "ddpm" (discrete beta schedule) or "flow" (flow matching)
    needs: str = ""  # an extra package, if any
    notes: str = ""

    def load_class(self):
        import diffusers

        try:
            return getattr(diffusers, self.cls_name)
        except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on diffusers version
            raise EvalkitError(f"scheduler {self.name!r} needs diffusers.{self.cls_name}: upgrade diffusers") from exc

    def available(self) -> tuple[bool, str]:
        if self.needs:
            if importlib.util.find_spec(self.needs) is None:  # found, not imported: torchsde imports torch
                return False, f"needs `pip install {self.needs}`"
        return True, ""


SCHEDULERS: Registry[SchedulerSpec] = Registry("scheduler", aliases_of=lambda s: (s.display,))

_KARRAS = {"use_karras_sigmas": True}
_NO_KARRAS = {"use_karras_sigmas": False}
for _spec in [
    SchedulerSpec("euler", "Euler", "EulerDiscreteScheduler", _NO_KARRAS),
    SchedulerSpec("euler_karras", "Euler Karras", "EulerDiscreteScheduler", _KARRAS),
    SchedulerSpec("euler_a", "Euler a", "EulerAncestralDiscreteScheduler", stochastic=True),
    SchedulerSpec("heun", "Heun", "HeunDiscreteScheduler", _NO_KARRAS, notes="2 model calls per step (2N-1 in all)"),
    SchedulerSpec("lms", "LMS", "LMSDiscreteScheduler", _NO_KARRAS),
    SchedulerSpec("dpm2", "DPM2", "KDPM2DiscreteScheduler", _NO_KARRAS, notes="2 model calls per step"),
    SchedulerSpec("dpm2_a", "DPM2 a", "KDPM2AncestralDiscreteScheduler", _NO_KARRAS, stochastic=True),
    SchedulerSpec("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
                  {"algorithm_type": "dpmsolver++", "solver_order": 2, **_NO_KARRAS}),
    SchedulerSpec("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                  {"algorithm_type": "dpmsolver++", "solver_order": 2, **_KARRAS}),
    SchedulerSpec("dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **_KARRAS}, stochastic=True),
    SchedulerSpec("dpmpp_sde_karras", "DPM++ SDE Karras", "DPMSolverSDEScheduler", _KARRAS,
                  stochastic=True, needs="torchsde", notes="2 model calls per step"),
    SchedulerSpec("ddim", "DDIM", "DDIMScheduler"),
    SchedulerSpec("pndm", "PNDM", "PNDMScheduler"),
    SchedulerSpec("unipc", "UniPC", "UniPCMultistepScheduler", _NO_KARRAS),
    SchedulerSpec("unipc_karras", "UniPC Karras", "UniPCMultistepScheduler", _KARRAS),
    SchedulerSpec("lcm", "LCM", "LCMScheduler", notes="for LCM-distilled models; at most 50 steps"),
    SchedulerSpec("flow_euler", "Flow Euler", "FlowMatchEulerDiscreteScheduler", family="flow",
                  notes="flow-matching models (SD3, FLUX)"),
]:
    SCHEDULERS.add(_spec.name, _spec)


def get_scheduler(name: str) -> SchedulerSpec:
    return SCHEDULERS.get(name)


def config_of(scheduler) -> dict[str, Any]:
    """A scheduler instance's config as saved to disk (with `_class_name`, which `.config` lacks)."""
    return {**dict(scheduler.config), "_class_name": type(scheduler).__name__}


def family_of(scheduler_cls_name: str) -> str:
    return "flow" if "FlowMatch" in scheduler_cls_name else "ddpm"


def build_scheduler(spec: SchedulerSpec, base_config: dict[str, Any]):
    """The scheduler `spec` names, on the model's own noise schedule (`base_config`)."""
    ok, why = spec.available()
    if not ok:
        raise EvalkitError(f"scheduler {spec.name!r} is not available: it {why}")
    return spec.load_class().from_config(dict(base_config), **spec.kwargs)


def check_compatible(spec: SchedulerSpec, base_config: dict[str, Any], model: str, steps: list[int]) -> None:
    """Fail before rendering if `model` can't be sampled with `spec` at every count in `steps`.

    Compatibility is by noise-schedule family (a flow-matching model can't use a DDPM-family
    solver and vice versa); then the scheduler itself is asked to lay out every step count,
    which catches limits such as LCM's 50-step cap.
    """
    model_family = family_of(base_config.get("_class_name", ""))
    if spec.family != model_family:
        raise EvalkitError(
            f"scheduler {spec.name!r} ({spec.family}) can't sample {model} ({model_family} model): "
            f"choose {'flow_euler' if model_family == 'flow' else 'a non-flow scheduler such as euler or dpmpp_2m'}"
        )
    scheduler = build_scheduler(spec, base_config)
    for n in sorted(set(steps)):
        try:
            scheduler.set_timesteps(n, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any refusal from the scheduler is a config error
            raise EvalkitError(
                f"scheduler {spec.name!r} refuses {n} steps for {model}: {str(exc).splitlines()[0]}; "
                f"remove {n} from steps or choose another scheduler"
            ) from exc
