"""Flow-matching solvers on the model's own shifted schedule, whatever the pipeline passes to `set_timesteps`.

A flow model's schedule is its shipped `FlowMatchEulerDiscreteScheduler` config (`shift`, or FLUX's dynamic
shift by `mu` from the latent sequence length) applied to the sigmas its pipeline asks for: FluxPipeline calls
`set_timesteps(sigmas=linspace(1, 1/n, n), mu=mu)`, SD3 calls `set_timesteps(n)`. diffusers' other flow
solvers can't take that call: FlowMatchHeun accepts neither `sigmas` nor `mu` and DPMSolverMultistep no
`sigmas` (FluxPipeline's `retrieve_timesteps` raises), and with `use_flow_sigmas=True` FluxPipeline drops
its sigmas while DPM/UniPC lay out their own (different) flow spacing. The adapters below accept exactly the
pipeline's call, let a FlowMatchEuler built from the solver's config (which keeps every shift key) lay out
the schedule the shipped scheduler would, and hand those sigmas to the solver's unchanged `step`.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FlowMatchLCMScheduler,
    UniPCMultistepScheduler,
)

NOISE_STREAM = 0x9E3779B9  # step noise of image `seed` comes from seed + this: never its initial noise's stream


class ShippedFlowSchedule:
    """Mixin: `set_timesteps` takes any pipeline's call and lays out the shipped flow schedule for the solver.

    `use_flow_sigmas` stays False on purpose: the schedule is laid out here, and with it True FluxPipeline
    would withhold its sigmas; `_sigma_to_alpha_sigma_t` gives the flow parametrisation (x = (1-s) x0 + s eps).
    """

    needs_mu = False

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None) -> None:
        schedule = self.flow_schedule()
        schedule.set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)
        # the solver's own set_timesteps resets its state (its schedule is replaced below); UniPC refuses to
        # run without `mu` on a dynamically shifted config, DPM would store exp(mu) in its config: only UniPC gets it
        extra = {"mu": mu} if self.needs_mu and mu is not None else {}
        super().set_timesteps(len(schedule.timesteps), device=device, **extra)
        self.lay_out(schedule.sigmas.cpu(), schedule.timesteps.to(device))

    def flow_schedule(self) -> FlowMatchEulerDiscreteScheduler:
        """The shipped schedule's scheduler, from this solver's config (shift keys and spacing flags kept)."""
        return quiet_from_config(FlowMatchEulerDiscreteScheduler, dict(self.config))

    def lay_out(self, sigmas: torch.Tensor, timesteps: torch.Tensor) -> None:
        self.sigmas, self.timesteps, self.num_inference_steps = sigmas, timesteps, len(timesteps)

    def _sigma_to_alpha_sigma_t(self, sigma):
        return 1 - sigma, sigma


class FlowDPMSolverMultistep(ShippedFlowSchedule, DPMSolverMultistepScheduler):
    """DPM-Solver(++) multistep on the shipped flow schedule (flow_prediction)."""


class FlowUniPCMultistep(ShippedFlowSchedule, UniPCMultistepScheduler):
    """UniPC on the shipped flow schedule (flow_prediction)."""

    needs_mu = True


class FlowHeun(ShippedFlowSchedule, FlowMatchHeunDiscreteScheduler):
    """Heun on the shipped flow schedule: every sigma after the first is visited twice (2N-1 model calls)."""

    def lay_out(self, sigmas: torch.Tensor, timesteps: torch.Tensor) -> None:
        # FlowMatchHeun's own layout (its set_timesteps), applied to the shipped sigmas
        self.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        self.num_inference_steps = len(timesteps)


class SeededNoise:
    """Mixin for stochastic flow samplers: the noise each step adds comes from one generator per image.

    Pipelines call `step` without a generator, so the noise would come from torch's global RNG (an image
    would depend on every call before it). The renderer sets `noise_sampler_seed` (one seed per image, as
    for DPM++ SDE); each `set_timesteps` starts those generators afresh.
    """

    noise_sampler_seed: list[int] | None = None

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None) -> None:
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)
        seeds = self.noise_sampler_seed or []
        self._noise = [torch.Generator("cpu").manual_seed((s + NOISE_STREAM) % 2**32) for s in seeds] or None

    def step(self, model_output, timestep, sample, generator=None, **kwargs):
        noise = getattr(self, "_noise", None)
        if generator is None and noise is not None and len(noise) == sample.shape[0]:
            generator = noise
        return super().step(model_output, timestep, sample, generator=generator, **kwargs)


class FlowEulerStochastic(SeededNoise, FlowMatchEulerDiscreteScheduler):
    """FlowMatchEuler with `stochastic_sampling`: each step re-noises the predicted x0 to the next sigma."""


class FlowLCM(SeededNoise, FlowMatchLCMScheduler):
    """FlowMatchLCM (re-noises each step), with per-image noise."""


ADAPTERS = {cls.__name__: cls for cls in (FlowDPMSolverMultistep, FlowUniPCMultistep, FlowHeun,
                                          FlowEulerStochastic, FlowLCM)}


def quiet_from_config(cls: type, config: dict[str, Any], **kwargs: Any) -> Any:
    """`cls.from_config` without diffusers' warning that another class's keys "will be ignored" (they are
    kept in the config, where pipelines read them: FluxPipeline reads base/max shift and sequence lengths)."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return cls.from_config(config, **kwargs)
    finally:
        diffusers_logging.set_verbosity(verbosity)


@functools.cache
def _calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    return calculate_shift


def pipeline_timestep_kwargs(config: dict[str, Any], steps: int, image_seq_len: int) -> dict[str, Any]:
    """`set_timesteps` kwargs as a flow pipeline passes them for `steps` at `image_seq_len` latent tokens:
    dynamically shifted (FLUX-style) configs get FluxPipeline's sigmas and `mu`; static ones (SD3) only n."""
    if not config.get("use_dynamic_shifting"):
        return {"num_inference_steps": steps}
    mu = _calculate_shift()(image_seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                            config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}
