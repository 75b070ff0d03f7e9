"""`builtin:mixture-flow`: the exact mixture model under the rectified-flow parametrisation, sampled like FLUX.

Same data and prompt rule as `builtin:mixture`, noised the way flow-matching models are
(x_t = (1 - t) x0 + t eps); the network returns the exact velocity (`flow_velocity`), so every error in
a sampled image is the flow solver's.

How it is sampled
-----------------
`MixtureFlowPipeline.__call__` runs diffusers' FluxPipeline scheduling code line for line: the
3xHxW pixel image is the "latent", packed into 2x2 patches like FLUX's latents ((H/2)(W/2) tokens of 12
values), sigmas = linspace(1, 1/n, n) (None if the scheduler sets `use_flow_sigmas`), mu =
`calculate_shift(token count, base/max seq len, base/max shift)` from the scheduler config, and
`retrieve_timesteps(scheduler, n, sigmas=..., mu=...)`; the network gets timestep / 1000 (= t). Both
functions are looked up in diffusers' FLUX module at call time, so whatever makes a solver sample FLUX
makes it sample this model. The scheduler config is FLUX.1-dev's (dynamic shifting, base/max shift
0.5/1.15 over 256/4096 tokens). With 2x2 pixel patches a 64x64 image has 1024 tokens, the count of a
512x512 FLUX image, so mu = 0.63 and the schedule is shifted by exp(mu) = 1.88 toward high noise.

`ground_truth` solves the probability-flow ODE dx/dt = v(x, t) with DOP853 from t = 1 (the pipeline's
own noise for the seed) to t = 0 directly; it does not depend on the schedule or its shift.

`builtin:mixture-early` is the same pipeline over `variants.EARLY`: a prompt selects whole groups of pictures, so
every prompt's picture is chosen near t = 1 (variants.py says why that model exists).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .flow_velocity import MixtureFlowTransformer, guided_velocity
from .packing import pack, unpack
from .pipeline_io import MixturePipelineOutput, conditioning, pipeline_output
from .prototypes import DEFAULT_SIZE
from .schedule import FLOW_SCHEDULER_CONFIG
from .variants import EARLY, PLAIN, Mixture

VERSION = "1"  # part of the model's identity (and so of every job key): bump when its pixels change


class MixtureFlowPipeline:
    """A FLUX-style text-to-image pipeline over the exact mixture model (pixel space, no VAE, no text encoder)."""

    def __init__(self, scheduler: Any = None, size: int = DEFAULT_SIZE, mixture: Mixture = PLAIN) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if scheduler is None:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_SCHEDULER_CONFIG)
        self.scheduler = scheduler
        self.mixture = mixture
        self.transformer = MixtureFlowTransformer(mixture)
        self.default_size = size

    def to(self, device: Any = None, dtype: Any = None) -> MixtureFlowPipeline:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("builtin:mixture-flow runs on the CPU only")
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        h, w = height or self.default_size, width or self.default_size
        if h % 2 or w % 2:  # as FluxPipeline does for sizes its packing can't take
            warnings.warn(f"builtin:mixture-flow packs 2x2 pixels: {h}x{w} is rounded down to even", stacklevel=3)
        return 2 * (h // 2), 2 * (w // 2)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_inference_steps: int = 28,
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        negative_prompt: str | Sequence[str] | None = None,
    ) -> MixturePipelineOutput:
        from diffusers.pipelines.flux import pipeline_flux
        from diffusers.utils.torch_utils import randn_tensor

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        b = len(prompts)
        h, w = self._size(height, width)
        do_cfg, hidden = conditioning(prompts, negative_prompt, guidance_scale, generator, output_type,
                                      self.mixture.weights)

        # FluxPipeline.prepare_latents: noise drawn as (B, C, H, W), then packed
        latents = pack(randn_tensor((b, 3, h, w), generator=generator, dtype=torch.float32))
        img_ids = pipeline_flux.FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, self.device, latents.dtype)

        # FluxPipeline.__call__, "5. Prepare timesteps", unchanged
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if hasattr(self.scheduler.config, "use_flow_sigmas") and self.scheduler.config.use_flow_sigmas:
            sigmas = None
        image_seq_len = latents.shape[1]
        mu = pipeline_flux.calculate_shift(
            image_seq_len,
            self.scheduler.config.get("base_image_seq_len", 256),
            self.scheduler.config.get("max_image_seq_len", 4096),
            self.scheduler.config.get("base_shift", 0.5),
            self.scheduler.config.get("max_shift", 1.15),
        )
        timesteps, num_inference_steps = pipeline_flux.retrieve_timesteps(
            self.scheduler, num_inference_steps, self.device, sigmas=sigmas, mu=mu)

        # "6. Denoising loop", with classifier-free guidance on the velocity (both halves in one call)
        self.scheduler.set_begin_index(0)
        for t in timesteps:
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            inp, ts = (torch.cat([latents] * 2), torch.cat([timestep] * 2)) if do_cfg else (latents, timestep)
            v = self.transformer(hidden_states=inp, timestep=ts / 1000, encoder_hidden_states=hidden,
                                 img_ids=img_ids)[0]
            if do_cfg:
                v_u, v_c = v.chunk(2)
                v = v_u + guidance_scale * (v_c - v_u)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]

        return pipeline_output(((unpack(latents, h, w).float() + 1) / 2).clamp(0, 1), output_type)

    def ground_truth(
        self,
        prompt: str,
        seed: int,
        guidance_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        rtol: float = 1e-10,
        atol: float = 1e-10,
    ) -> np.ndarray:
        """The image every deterministic flow solver converges to for (prompt, seed): (H, W, 3) float64 in [0, 1].

        The pipeline's initial noise (randn_tensor with Generator().manual_seed(seed)) is x at t = 1;
        dx/dt = v_g(x, t) is solved with DOP853 down to t = 0, where the velocity's exact limit -x
        applies, and x(0) is the image. Independent of the scheduler and its shift. With guidance > 1 and a
        negative prompt that selects other components than the prompt, the guided ODE is stiff: DOP853 then needs
        ~30,000 velocity evaluations at 32x32 (vs ~400 without one) and minutes at 64x64.
        """
        from diffusers.utils.torch_utils import randn_tensor
        from scipy.integrate import solve_ivp

        h, w = self._size(height, width)
        noise = randn_tensor((1, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        v_g = guided_velocity(prompt, guidance_scale, negative_prompt, self.mixture.means(h, w),  # unpacked, like the noise
                              self.mixture.weights)
        sol = solve_ivp(lambda t, x: v_g(x, t), (1.0, 0.0), noise.to(torch.float64).numpy().reshape(-1),
                        method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:  # pragma: no cover - DOP853 on this smooth ODE does not fail
            raise RuntimeError(f"ground-truth ODE solve failed: {sol.message}")
        return np.clip((sol.y[:, -1].reshape(3, h, w).transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def mixture_flow_pipeline(size: int = DEFAULT_SIZE) -> MixtureFlowPipeline:
    """The builtin:mixture-flow pipeline, with FLUX's FlowMatchEulerDiscreteScheduler config as its default."""
    return MixtureFlowPipeline(size=size)


def mixture_early_pipeline(size: int = DEFAULT_SIZE) -> MixtureFlowPipeline:
    """The builtin:mixture-early pipeline: builtin:mixture-flow, a prompt selecting whole groups of pictures."""
    return MixtureFlowPipeline(size=size, mixture=EARLY)
