"""The exact models' shipped scheduler configs, and the DDPM-family model's timestep -> sigma map.

The configs are part of each model's identity (evalkit.models.builtin puts them in `Model.scheduler_config`,
which feeds the job keys), so any change here changes every key: keep them as they are.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch


def _make_scheduler_config() -> dict[str, Any]:
    """builtin:mixture's config, built by Euler itself so it holds every key diffusers fills in."""
    from diffusers import EulerDiscreteScheduler

    euler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=0,
    )
    config = dict(euler.config)
    # EulerDiscreteScheduler has no `set_alpha_to_one` argument (it raises if given one), but
    # DDIM/PNDM read it from the config: True makes their last step land on abar = 1 (sigma = 0).
    config["set_alpha_to_one"] = True
    return config


#: builtin:mixture's own scheduler config (SD-1.5-like betas, `trailing` spacing so that N = 1 works).
#: Build samplers with `evalkit.schedulers.build_scheduler(get_scheduler(name), SCHEDULER_CONFIG)`.
SCHEDULER_CONFIG: dict[str, Any] = _make_scheduler_config()


#: builtin:mixture-flow's scheduler config: FLUX.1-dev's (its shipped `scheduler_config.json`, minus bookkeeping).
FLOW_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


@functools.lru_cache(maxsize=1)
def sigma_table() -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0..999, computed exactly as diffusers' Euler does."""
    from diffusers import EulerDiscreteScheduler

    acp = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod  # float32, as in diffusers
    table = (((1 - acp) / acp) ** 0.5).numpy().astype(np.float64)
    table.setflags(write=False)
    return table


def sigma_of_timestep(timestep: Any) -> np.ndarray:
    """sigma for a (possibly fractional) timestep or array of them: np.interp over arange(1000)."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.detach().to("cpu", torch.float64).numpy()
    else:
        t = np.asarray(timestep, dtype=np.float64)
    table = sigma_table()
    return np.interp(t, np.arange(len(table), dtype=np.float64), table)

