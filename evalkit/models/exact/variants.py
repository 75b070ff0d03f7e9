"""What a flow model's prompt selects: its components (builtin:mixture-flow), or the whole groups they belong to
(builtin:mixture-early).

Why the groups: a prompt of builtin:mixture-flow that selects one component has one picture to draw, and its ODE
chooses nothing. builtin:mixture-early knows only what kind of picture a prompt asks for (a face, an animal, a
landscape, a word, a count, a texture, an abstract shape): every prompt leaves it 2-4 pictures, and which one a seed
draws is settled near t = 1. The pictures are far apart (|mu_j - mu_k| ~ 60 at 64x64), so the posterior over them
sharpens where (1 - t)|mu_j - mu_k| / t ~ 1, at 1 - t of about 2%: where Karras-spaced schedules take their largest
steps. A solver that steps over the choice bends the wrong way for seeds near a boundary and draws another picture:
the model evalkit's reference certification is checked on (`evalkit selftest`, bench/reference_solvers.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .components import component_weights
from .prototypes import K, prototypes

# The kinds of picture, as runs of prototypes.PROTOTYPES: people, animals, landscapes, words, counts, textures,
# abstract shapes.
GROUPS = ((0, 1), (2, 3, 4), (5, 6, 7), (8, 9, 10), (11, 12, 13, 14), (15, 16, 17), (18, 19))


@dataclass(frozen=True)
class Mixture:
    """The weights a prompt gives the mixture's K components, and their means (plain order or FLUX's tokens)."""

    by_group: bool = False

    def weights(self, prompt: str | None) -> np.ndarray:
        """(K,) weights summing to 1: the prompt's components (`components`), or, by group, every component of a
        group it selects one of, all equal."""
        w = component_weights(prompt)
        if not self.by_group:
            return w
        chosen = np.zeros(K)
        for group in GROUPS:
            if w[list(group)].any():
                chosen[list(group)] = 1.0
        return chosen / chosen.sum()

    def means(self, height: int, width: int) -> np.ndarray:
        """(K, 3*H*W) float64 in [-1, 1], in the unpacked (channel, row, column) order of the noise."""
        return np.ascontiguousarray(prototypes(height, width)).reshape(K, -1)

    def packed(self, height: int, width: int) -> np.ndarray:
        """(K, (H/2)(W/2)*12) float64: the means in FLUX's packed token order (`packing.pack`)."""
        return _packed(height, width)


PLAIN, EARLY = Mixture(), Mixture(by_group=True)


@functools.lru_cache(maxsize=8)
def _packed(height: int, width: int) -> np.ndarray:
    from .packing import pack

    tokens = pack(torch.tensor(prototypes(height, width)))
    tokens = np.ascontiguousarray(tokens.reshape(K, -1).numpy())
    tokens.setflags(write=False)
    return tokens
