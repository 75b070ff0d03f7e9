"""Pipelines that break the output contract, for the fault tests (``python:plugins.broken_models:FACTORY``).

Each wraps builtin:mixture (so NFE is counted and schedulers swap as usual) and spoils only its output:
``nan_pipeline`` returns all-NaN images (what a diverging model in half precision gives), ``short_pipeline``
one image fewer than prompts, ``small_pipeline`` images half the size asked. ``held_pipeline`` returns the
exact model's images, but each call waits while the file ``$EVALKIT_HOLD_FILE`` exists (a run that is
still rendering, for the concurrency test).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from evalkit.models.exact.pipeline import mixture_pipeline


class _Spoiled:
    """Delegates to the exact model's pipeline; `spoil` rewrites its list of float HxWx3 images."""

    def __init__(self, spoil, name: str):
        self.inner, self.spoil = mixture_pipeline(), spoil
        self.evalkit_identity = f"mixture-{name}"

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name == "scheduler":
            self.inner.scheduler = value
        else:
            object.__setattr__(self, name, value)

    def to(self, device):
        self.inner.to(device)
        return self

    def __call__(self, **kwargs):
        kwargs["output_type"] = "np"
        out = self.inner(**kwargs)
        out.images = self.spoil(list(out.images))
        return out


def nan_pipeline():
    return _Spoiled(lambda images: [np.full_like(image, np.nan) for image in images], "nan")


def short_pipeline():
    return _Spoiled(lambda images: images[:-1], "short")


def small_pipeline():
    return _Spoiled(lambda images: [image[::2, ::2] for image in images], "small")


def _hold(images):
    hold, deadline = Path(os.environ["EVALKIT_HOLD_FILE"]), time.time() + 300
    while hold.exists() and time.time() < deadline:
        time.sleep(0.05)
    return images


def held_pipeline():
    return _Spoiled(_hold, "held")
