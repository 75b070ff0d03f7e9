"""Pipelines that break the output contract, for the fault tests (``python:plugins.broken_models:FACTORY``).

The ones below the first group (tests/test_plugin_contracts.py) break it in other ways: the wrong scale, dtype,
shape or PIL mode; raising or calling sys.exit mid-sweep (``$EVALKIT_TEST_HEALED`` set: they render normally)
or in the factory. ``overshoot_pipeline`` stays within the tolerance and must be accepted.

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


# ------------------------------------------------------------------------ output on the wrong scale or shape
# (tests/test_plugin_contracts.py: each is one line naming the model, what it returned and the fix)

def uint8_pipeline():
    """0-255 uint8 arrays (PIL's scale) where float [0, 1] is the contract: saved saturated before the check."""
    return _Spoiled(lambda images: [(image * 255).round().astype(np.uint8) for image in images], "uint8")


def scaled_pipeline():
    """Float arrays on the 0-255 scale."""
    return _Spoiled(lambda images: [image * 255 for image in images], "scaled")


def signed_pipeline():
    """A decoder's [-1, 1] output, not mapped to [0, 1]."""
    return _Spoiled(lambda images: [image * 2 - 1 for image in images], "signed")


def rgba_pipeline():
    """(H, W, 4) arrays: an alpha channel."""
    return _Spoiled(lambda images: [np.concatenate([image, np.ones_like(image[..., :1])], axis=-1)
                                    for image in images], "rgba")


def channels_first_pipeline():
    """(3, H, W) arrays, torch's layout."""
    return _Spoiled(lambda images: [image.transpose(2, 0, 1) for image in images], "chw")


def float_pil_pipeline():
    """PIL images of mode F (32-bit float, one band): convert('RGB') would make them black."""
    from PIL import Image

    return _Spoiled(lambda images: [Image.fromarray(image.mean(axis=-1).astype(np.float32), mode="F")
                                    for image in images], "float-pil")


def _overshoot(images):
    """A real pipeline's rounding: a pixel a hair above 1 and one a hair below 0, within the tolerance."""
    for image in images:
        image[0, 0] = np.float32(1.0000001)
        image[0, 1] = np.float32(-1e-7)
        image[0, 2] = 1 + 0.9 / 255
    return images


def overshoot_pipeline():
    return _Spoiled(_overshoot, "overshoot")


# --------------------------------------------------------------------------- plugin code that raises or exits

class _Midway(_Spoiled):
    """Renders its first batch, then fails every later call as `fail` says (the model dies mid-sweep)."""

    def __init__(self, fail, name):
        super().__init__(lambda images: images, name)
        self.fail, self.calls = fail, 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls > 1 and not os.environ.get("EVALKIT_TEST_HEALED"):
            self.fail()
        return super().__call__(**kwargs)


def _cuda_error():
    raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be reported "
                       "asynchronously")


def raising_midway():
    return _Midway(_cuda_error, "raising")


def exiting_midway():
    import sys

    return _Midway(lambda: sys.exit(0), "exiting")


def exiting_factory():
    """A factory that gives up the way scripts do: sys.exit(0), as if it had succeeded."""
    import sys

    sys.exit(0)


def interrupting_factory():
    """Ctrl-C while the model loads."""
    raise KeyboardInterrupt
