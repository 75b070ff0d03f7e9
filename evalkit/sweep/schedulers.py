"""Scheduler registry: the names people use -> a diffusers class + the kwargs that make it that sampler.

A scheduler is always built with `cls.from_config(model_scheduler_config, **kwargs)`, so the
model's own noise schedule and spacing (e.g. `trailing` for distilled models) are kept and only
the solver changes; the model is never reloaded.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from ..errors import EvalkitError
from ..registry import Registry


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    display: str
    cls_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # ancestral/SDE: never converges to one image per seed
    family: str = "ddpm"  # "ddpm" (discrete beta schedule), "flow" (flow matching) or "any" (native)
    needs: str = ""  # an extra package, if any
    notes: str = ""
    adapter: str = ""  # a sweep/flow.py class that runs `cls_name` on the model's shipped flow schedule

    def load_class(self):
        import diffusers

        if self.adapter:
            from .flow import ADAPTERS

            return ADAPTERS[self.adapter]
        try:
            return getattr(diffusers, self.cls_name)
        except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on diffusers version
            raise EvalkitError(f"scheduler {self.name!r} needs diffusers.{self.cls_name}: upgrade diffusers") from exc

    def available(self) -> tuple[bool, str]:
        if self.needs:
            if importlib.util.find_spec(self.needs) is None:  # found, not imported: torchsde imports torch
                return False, f"needs `pip install {self.needs}`"
        return True, ""


# flow solvers share display names with their DDPM counterparts ("DPM++ 2M"): "Flow DPM++ 2M" finds them
SCHEDULERS: Registry[SchedulerSpec] = Registry(
    "scheduler", aliases_of=lambda s: (f"Flow {s.display}",) if s.family == "flow" else (s.display,))

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
    SchedulerSpec("native", "Native", "", family="any",
                  notes="the model's scheduler exactly as shipped (any class; LCM/TCD/turbo spacing kept)"),
]:
    SCHEDULERS.add(_spec.name, _spec)

# Flow matching (SD3, FLUX, ...): each solver on the model's own shifted schedule (evalkit/flow.py)
_PLAIN = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_FLOW_EULER = {**_PLAIN, "stochastic_sampling": False}
_FLOW_DPM = {"algorithm_type": "dpmsolver++", "solver_order": 2, "prediction_type": "flow_prediction",
             "use_flow_sigmas": False, **_PLAIN}  # flow sigmas laid out by the adapter (see flow.py)
_FLOW_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": False, **_PLAIN}
for _spec in [
    SchedulerSpec("flow_euler", "Euler", "FlowMatchEulerDiscreteScheduler", _FLOW_EULER),
    SchedulerSpec("flow_euler_karras", "Euler Karras", "FlowMatchEulerDiscreteScheduler",
                  {**_FLOW_EULER, "use_karras_sigmas": True}, notes="Karras spacing over the shifted sigma range"),
    SchedulerSpec("flow_euler_exponential", "Euler Exponential", "FlowMatchEulerDiscreteScheduler",
                  {**_FLOW_EULER, "use_exponential_sigmas": True},
                  notes="log-uniform spacing over the shifted sigma range"),
    SchedulerSpec("flow_heun", "Heun", "FlowMatchHeunDiscreteScheduler", adapter="FlowHeun",
                  notes="2 model calls per step (2N-1 in all)"),
    SchedulerSpec("flow_dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler", _FLOW_DPM,
                  adapter="FlowDPMSolverMultistep"),
    SchedulerSpec("flow_dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                  {**_FLOW_DPM, "use_karras_sigmas": True}, adapter="FlowDPMSolverMultistep",
                  notes="Karras spacing over the shifted sigma range"),
    SchedulerSpec("flow_unipc", "UniPC", "UniPCMultistepScheduler", _FLOW_UNIPC, adapter="FlowUniPCMultistep"),
    SchedulerSpec("flow_euler_stochastic", "Euler Stochastic", "FlowMatchEulerDiscreteScheduler",
                  {**_PLAIN, "stochastic_sampling": True}, stochastic=True, adapter="FlowEulerStochastic",
                  notes="re-noises the predicted image to each next sigma"),
    SchedulerSpec("flow_lcm", "LCM", "FlowMatchLCMScheduler", stochastic=True, adapter="FlowLCM",
                  notes="for LCM-distilled flow models"),
]:
    SCHEDULERS.add(_spec.name, dataclasses.replace(_spec, family="flow"))

@dataclass(frozen=True)
class FamilyDefaults:
    """What a sweep runs when it names no schedulers / no reference scheduler, for one model family."""

    schedulers: tuple[str, ...]
    reference: str  # a high-order deterministic solver, rendered at reference_steps for every prompt+seed
    # what certifies a reference (stages/certify.py): the first of these that is not the reference's own solver,
    # at the same step count, from the same noise
    checks: tuple[str, ...] = ()


# References and checks, measured against the exact ODE solutions of builtin:mixture, builtin:mixture-flow and
# builtin:mixture-early (every prompt picks its picture near t = 1) on 128-192 prompt+seeds each: bench/README.md
# ("Reference solvers"), reproduced by bench/reference_solvers.py. DDPM: dpmpp_2m_karras is right on every unit
# from 50 steps on (worst max error 2.6e-4 at 50, 1.1e-4 at 200): Karras spacing's coarse high-noise steps do no
# harm there. Its check is unipc_karras, another solver on that spacing (1.7e-4 at 200), because the uniformly
# spaced solvers are first order at the end (dpmpp_2m: worst mean error 3.7e-3 at 200 steps; against the reference,
# 0.014 at 50 steps and 0.026 at 20): as a check they would flag right references at the 20-50 reference steps
# distilled models use. Flow: Karras spacing (flow_dpmpp_2m_karras, the reference
# before this table) takes its largest steps near t = 1, where a model picks its picture, and drew another picture
# on 3 of 128 units of builtin:mixture-flow at 200 steps (1 at 400) and 7 of 192 of builtin:mixture-early; the
# solvers on the pipeline's own (uniform, shifted) sigmas were right on every unit: flow_unipc at 200 the most
# accurate (worst 6.9e-4), flow_dpmpp_2m at 200 (1.7e-3), a different solver, its check.
FAMILY_DEFAULTS = {
    "ddpm": FamilyDefaults(("euler", "euler_a", "heun", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "unipc"),
                           reference="dpmpp_2m_karras", checks=("unipc_karras", "dpmpp_2m_karras")),
    "flow": FamilyDefaults(("flow_euler", "flow_euler_karras", "flow_heun", "flow_dpmpp_2m", "flow_unipc",
                            "flow_euler_stochastic"), reference="flow_unipc", checks=("flow_dpmpp_2m", "flow_unipc")),
}


def get_scheduler(name: str) -> SchedulerSpec:
    return SCHEDULERS.get(name)


def family_of(base_config: dict[str, Any]) -> str:
    """A model's noise-schedule family, from its scheduler config."""
    flow = "FlowMatch" in base_config.get("_class_name", "") or base_config.get("use_flow_sigmas") \
        or base_config.get("prediction_type") == "flow_prediction"
    return "flow" if flow else "ddpm"


def family_defaults(base_config: dict[str, Any]) -> FamilyDefaults:
    """The defaults of the family a model's scheduler config belongs to."""
    return FAMILY_DEFAULTS[family_of(base_config)]


def timestep_count(spec: SchedulerSpec, base_config: dict[str, Any], steps: int) -> int:
    """Model evaluations of one image at `steps`: the diffusers loop calls the model once per entry of
    `timesteps`, laid out as the model's pipeline asks for them (FLUX-style schedules need `mu`)."""
    scheduler = build_scheduler(spec, base_config)
    scheduler.set_timesteps(device="cpu", **pipeline_timestep_call(scheduler, steps))
    return len(scheduler.timesteps)


def build_scheduler(spec: SchedulerSpec, base_config: dict[str, Any]):
    """The scheduler `spec` names, on the model's own noise schedule (`base_config`)."""
    ok, why = spec.available()
    if not ok:
        raise EvalkitError(f"scheduler {spec.name!r} is not available: it {why}")
    if spec.family == "any":  # native: the class and config exactly as shipped
        return _class_named(base_config.get("_class_name", "")).from_config(dict(base_config))
    from .flow import quiet_from_config  # keys of the model's own class stay in the config (pipelines read them)

    return quiet_from_config(spec.load_class(), dict(base_config), **spec.kwargs)


def _class_named(name: str):
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise EvalkitError(f"the model's scheduler class {name!r} is not in the installed diffusers: upgrade diffusers")
    return cls


def check_compatible(spec: SchedulerSpec, base_config: dict[str, Any], model: str, steps: list[int]) -> None:
    """Fail before rendering if `model` can't be sampled with `spec` at every count in `steps`.

    Compatibility is by noise-schedule family (a flow-matching model can't use a DDPM-family
    solver and vice versa); then the scheduler itself is asked to lay out every step count,
    which catches limits such as LCM's 50-step cap.
    """
    model_family = family_of(base_config)
    if spec.family not in (model_family, "any"):
        raise EvalkitError(
            f"scheduler {spec.name!r} ({spec.family}) can't sample {model} ({model_family} model): choose "
            f"{'one of ' + ', '.join(FAMILY_DEFAULTS['flow'].schedulers) if model_family == 'flow' else 'a non-flow scheduler such as euler or dpmpp_2m'}"
        )
    scheduler = build_scheduler(spec, base_config)
    for n in sorted(set(steps)):
        try:
            scheduler.set_timesteps(device="cpu", **pipeline_timestep_call(scheduler, n))
        except Exception as exc:  # noqa: BLE001 - any refusal from the scheduler is a config error
            raise EvalkitError(
                f"scheduler {spec.name!r} refuses {n} steps for {model}: {str(exc).splitlines()[0]}; "
                f"remove {n} from steps or choose another scheduler"
            ) from exc


def pipeline_timestep_call(scheduler, steps: int) -> dict[str, Any]:
    """`set_timesteps` kwargs as the model's pipeline would pass them: FLUX-style (dynamically shifted)
    schedules get FluxPipeline's sigmas and `mu`, here at the base sequence length (which step counts a
    scheduler refuses doesn't depend on it); every other scheduler gets the step count alone."""
    from .flow import pipeline_timestep_kwargs

    config = dict(scheduler.config)
    return pipeline_timestep_kwargs(config, steps, config.get("base_image_seq_len", 256))
