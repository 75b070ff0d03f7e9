"""Plugins that break the python: contract in ways a user's module can (for the bad-input tests)."""
from __future__ import annotations

import os

from evalkit.models.exact.pipeline import MixturePipeline

if os.environ.get("EVALKIT_TEST_BREAK_AT_IMPORT"):
    raise RuntimeError("CUDA out of memory while loading weights")


class _NotImages(MixturePipeline):
    """Returns latents (tensors) as .images, as a pipeline called with output_type='latent' would."""

    def __call__(self, **kwargs):
        output = super().__call__(**kwargs)
        output.images = [None for _ in output.images]
        return output


def not_images():
    return _NotImages()


class _Interrupting(MixturePipeline):
    """With EVALKIT_TEST_INTERRUPT set: renders its first batch, then the user presses Ctrl-C during the second."""

    calls = 0

    def __call__(self, **kwargs):
        type(self).calls += 1
        if os.environ.get("EVALKIT_TEST_INTERRUPT") and type(self).calls > 1:
            raise KeyboardInterrupt
        return super().__call__(**kwargs)


def interrupting():
    _Interrupting.calls = 0
    return _Interrupting()
