"""builtin:mixture-flow's exact velocity: E[eps - x0 | x_t] in closed form, and the network that returns it.

Same data as `builtin:mixture` (the Gaussian mixture around 20 prototype images, same prompt ->
components rule), but noised the way flow-matching models are: x_t = (1 - t) x0 + t eps, t in [0, 1],
and the network predicts the velocity v = dx_t/dt = eps - x0.

Closed form
-----------
x_t / (1 - t) = x0 + (t / (1 - t)) eps is the variance-exploding problem at sigma = t / (1 - t), so the
exact posterior mean is E[x0 | x_t] = D(x_t / (1 - t), t / (1 - t)) with `denoiser.denoise`, and
E[v | x_t] = E[eps | x_t] - E[x0 | x_t] = (x_t - E[x0 | x_t]) / t. The two ends are exact limits:
at t = 1, x_1 is pure noise, so E[x0 | x_1] is the prior mean sum_k w_k mu_k; at t = 0, x_0 is the
data, so E[x0 | x_0] = x_0, E[eps | x_0] = 0 and v = -x_0. The velocity field is smooth on [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .components import component_weights
from .denoiser import denoise
from .prototypes import K
from .variants import PLAIN, Mixture


def posterior_mean(x: np.ndarray, t: float, weights: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """E[x0 | x_t = x] for one flattened image (any fixed order of coordinates shared by x and mu)."""
    if t >= 1.0:
        return weights @ mu
    if t <= 0.0:
        return x
    return denoise(x / (1.0 - t), t / (1.0 - t), weights, mu)


def velocity(x: np.ndarray, t: float, weights: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """E[eps - x0 | x_t = x], the exact flow-matching target; -x at t = 0 (the limit)."""
    if t <= 0.0:
        return -x
    return (x - posterior_mean(x, t, weights, mu)) / t


def guided_velocity(prompt: str, guidance_scale: float = 1.0, negative_prompt: str | None = None,
                    mu: np.ndarray | None = None,
                    weights: Callable[[str | None], np.ndarray] = component_weights) -> Callable[[np.ndarray, float], np.ndarray]:
    """v_g(x, t) = v_u + g (v_c - v_u) for one flattened image (plain v_c at g <= 1, as the pipeline does);
    `weights` gives a prompt's weights over the rows of `mu`."""
    w_c, w_u = weights(prompt), weights(negative_prompt)

    def v_g(x: np.ndarray, t: float) -> np.ndarray:
        v_c = velocity(x, t, w_c, mu)
        if guidance_scale <= 1.0:
            return v_c
        v_u = velocity(x, t, w_u, mu)
        return v_u + guidance_scale * (v_c - v_u)

    return v_g


class MixtureFlowTransformer(torch.nn.Module):
    """Velocity network of the exact mixture; one forward call = one model evaluation.

    Called like FLUX's transformer: `hidden_states` (B, L, 12) packed x_t, `timestep` (B,) = t in [0, 1]
    (the pipeline's timestep / 1000), `encoder_hidden_states` (B, K) component weights, `img_ids` (L, 3)
    token positions (which give the image size). Returns a tuple whose first item is the velocity, in
    float64 row by row, so batch size never changes a result. `mixture` says which components there are.
    """

    def __init__(self, mixture: Mixture = PLAIN) -> None:
        super().__init__()
        self.mixture = mixture
        self.num_components = K

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                img_ids: torch.Tensor) -> tuple[torch.Tensor]:
        b = hidden_states.shape[0]
        rows, cols = (int(img_ids[:, i].max()) + 1 for i in (1, 2))
        mu = self.mixture.packed(2 * rows, 2 * cols)
        ts = np.broadcast_to(np.atleast_1d(timestep.detach().to("cpu", torch.float64).numpy()), (b,))
        weights = encoder_hidden_states.detach().to("cpu", torch.float64).numpy().reshape(b, K)
        x = hidden_states.detach().to("cpu", torch.float64).numpy().reshape(b, -1)
        v = np.stack([velocity(x[i], float(ts[i]), weights[i], mu) for i in range(b)])
        return (torch.from_numpy(v.reshape(hidden_states.shape)).to(hidden_states.device, hidden_states.dtype),)
