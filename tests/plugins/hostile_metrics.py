"""Metric plugins that break the python: scorer contract (``python:plugins.hostile_metrics:FACTORY``).

Each scores an image by its mean brightness (cheap, no weights) and spoils only what `score` returns or does:
the contract is one finite (or NaN: "can't score this one") real number per image. ``fails_after`` scores
``$EVALKIT_TEST_FAIL_AFTER`` batches, then raises (unset: never); ``SCORED`` counts the images each plugin
scored, so a test can tell what a rerun computed.
"""
from __future__ import annotations

import collections
import os
import sys

import torch

if os.environ.get("EVALKIT_TEST_METRIC_BREAK_AT_IMPORT"):
    raise RuntimeError("libcudart.so.12: cannot open shared object file")

SCORED: collections.Counter = collections.Counter()  # plugin name -> images scored in this process


class _Brightness:
    higher_is_better = True
    kind = "aesthetic"
    identity = "brightness-v1"
    preprocessing = "none"

    def __init__(self, name: str, spoil=None):
        self.name, self.spoil, self.calls = f"hostile_{name}", spoil, 0

    def score(self, images: torch.Tensor, prompts: list[str]):
        self.calls += 1
        SCORED[self.name] += len(images)
        values = images.float().mean(dim=(1, 2, 3)) / 255
        return self.spoil(values) if self.spoil else values


def short():
    """One value too few: a zip downstream used to drop the last image's score, exit 0."""
    return _Brightness("short", lambda v: v[:-1])


def strings():
    return _Brightness("strings", lambda v: [f"{x:.3f}" for x in v.tolist()])


def bools():
    """The right length, no NaN, but truths, not numbers."""
    return _Brightness("bools", lambda v: [bool(x > 0.5) for x in v])


def matrix():
    """A 2-D tensor: two values per image (say, two heads)."""
    return _Brightness("matrix", lambda v: torch.stack([v, 1 - v], dim=1))


def infinite():
    return _Brightness("infinite", lambda v: torch.where(torch.arange(len(v)) == 0, torch.tensor(float("inf")), v))


def nones():
    return _Brightness("nones", lambda v: [None] * len(v))


def scalar():
    """One number for the whole batch."""
    return _Brightness("scalar", lambda v: float(v.mean()))


def column():
    """(B, 1), as a Linear head gives: one value per image, accepted."""
    return _Brightness("column", lambda v: v[:, None])


def some_nan():
    """NaN for the first image of each batch (say, no face found): that image has no value, the others do."""
    return _Brightness("some_nan", lambda v: [float("nan"), *v[1:].tolist()])


def numpy_scalars():
    """A list of numpy float32 scalars and 0-d tensors: numbers, accepted."""
    return _Brightness("numpy_scalars", lambda v: [x.numpy() if i % 2 else torch.tensor(float(x))
                                                   for i, x in enumerate(v)])


class _FailsAfter(_Brightness):
    def score(self, images, prompts):
        limit = os.environ.get("EVALKIT_TEST_FAIL_AFTER")
        if limit is not None and self.calls >= int(limit):
            raise ValueError("expected 77 tokens, got 81\n(a second line of the plugin's message)")
        return super().score(images, prompts)


def fails_after():
    return _FailsAfter("fails_after")


def exits_in_score():
    return _Brightness("exits_in_score", lambda v: sys.exit(3))


def exiting_factory():
    sys.exit(0)


def interrupted_in_score():
    def interrupt(values):
        raise KeyboardInterrupt

    return _Brightness("interrupted", interrupt)
