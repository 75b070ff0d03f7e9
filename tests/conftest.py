"""Shared test setup: offline Hugging Face, one torch thread, tiny model fixtures.

``tests/`` is put on ``sys.path`` so tests (and code under test that imports plugins
by module path) can ``import tiny_models`` and ``import plugins.tiny_plugin``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

# Must happen before diffusers/transformers/huggingface_hub are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One BLAS thread too, set before numpy loads: the exact models' numpy (a matrix product per denoiser call) ran ~8x
# slower on this 2-core machine with a thread per core fighting torch's and pytest's.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: this machine's CPU timing is steady only at 1 thread (FIELD-NOTES).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A saved tiny Stable Diffusion pipeline (seed 0), written once per session."""
    from tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture
def prompts(tmp_path):
    """Two prompts in a file (test modules that need other prompts define their own `prompts`)."""
    path = tmp_path / "prompts.txt"
    path.write_text("a cat sitting on a mat\nthree apples on a table\n")
    return str(path)


@pytest.fixture
def evalkit_cli(monkeypatch, capsys):
    """Run the `evalkit` entry point in-process: (exit code, stdout, stderr)."""
    from evalkit.cli import main

    def call(args):
        monkeypatch.setattr(sys, "argv", ["evalkit", *args])
        with pytest.raises(SystemExit) as info:
            main()
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return call


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails loudly: loaders that must read caches only (metric weights)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
