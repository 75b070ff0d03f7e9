"""builtin:mixture with a fault injected mid-batch, for the worker-failure tests
(``python:plugins.faulty_mixture:make_pipeline``).

The fault is described by ``$EVALKIT_FAULT_DIR/fault.json``: ``{"at_call": N, "action": "kill" | "raise"}``.
Denoiser calls are counted across every process (Ray workers included) in ``$EVALKIT_FAULT_DIR/calls``
under an flock; the N-th call consumes fault.json and then SIGKILLs its own process or raises. Pixels
are the exact model's: the fault decides only whether the process survives the call.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

import torch

from evalkit.models.exact.pipeline import mixture_pipeline


class FaultyDenoiser(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        _maybe_fault()
        return self.inner(sample, timestep, encoder_hidden_states)


def _maybe_fault() -> None:
    folder = os.environ.get("EVALKIT_FAULT_DIR")
    if not folder or not (Path(folder) / "fault.json").exists():
        return
    with open(Path(folder) / "calls", "a+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        calls = int(counter.read() or 0) + 1
        counter.seek(0)
        counter.truncate()
        counter.write(str(calls))
        spec_file = Path(folder) / "fault.json"
        if not spec_file.exists():
            return
        spec = json.loads(spec_file.read_text())
        if calls < spec["at_call"]:
            return
        spec_file.unlink()  # the fault fires once: a restarted worker renders normally
    if spec["action"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault at denoiser call {calls}")


def make_pipeline():
    pipe = mixture_pipeline()
    pipe.denoiser = FaultyDenoiser(pipe.denoiser)
    pipe.evalkit_identity = "faulty-mixture (the exact model's pixels)"
    return pipe
