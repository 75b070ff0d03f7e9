"""Pipeline factories for plugin-loading tests (import as ``plugins.tiny_plugin``;
``tests/conftest.py`` puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

# Also work when loaded by file path or with only the repo root on sys.path.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from tiny_models import build_tiny_sd_pipeline  # noqa: E402


def make_pipeline():
    """A diffusers-style tiny Stable Diffusion pipeline (random weights, seed 0)."""
    return build_tiny_sd_pipeline()


def not_a_pipeline():
    """Returns something that is not a pipeline (for error tests)."""
    return object()


def broken():
    """Raises, like a factory whose model fails to load (for error tests)."""
    raise RuntimeError("boom")
