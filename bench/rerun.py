"""A finished sweep, run again: denoiser calls and backbone calls (goal 0 and 0), and wall time.

Runs `evalkit.run` (render, score with every metric, report) twice on the same folder. Denoiser calls are
counted by a forward hook on every model the run loads; backbone calls by counting the metric workers'
score/features calls and backbone loads. Random-weight backbones with the real architectures (_common.py).
usage: python bench/rerun.py [--prompts 4] [--seeds 2]
"""
from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path


from _common import bench_args, prompt_file, random_backbones

import evalkit
from evalkit.stages.render import Renderer
from evalkit.stages.workers import MetricWorker


CALLS: collections.Counter = collections.Counter()


def count_calls() -> None:
    """Wrap the places where models and backbones run, so every call anywhere in a run is counted."""
    original_init = Renderer.__init__

    def renderer_init(self, model, *args, **kwargs):
        original_init(self, model, *args, **kwargs)
        model.denoiser.register_forward_pre_hook(lambda *_: CALLS.update(["denoiser calls"]))

    Renderer.__init__ = renderer_init
    worker = MetricWorker
    for method in ("__init__", "score", "features"):
        original = getattr(worker, method)

        def wrapped(self, *args, _original=original, _method=method, **kwargs):
            CALLS.update(["backbone loads" if _method == "__init__" else "backbone calls"])
            return _original(self, *args, **kwargs)

        setattr(worker, method, wrapped)


def main() -> None:
    args = bench_args(__doc__, prompts=4)
    count_calls()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {"prompts": prompt_file(tmp, args.prompts), "seeds": args.seeds, "out": str(tmp / "run"),
                  "schedulers": ["euler", "heun", "dpmpp_2m_karras"], "steps": [2, 4, 8, 16],
                  "backbones": random_backbones(tmp)}
        for label in ("first run", "rerun"):
            CALLS.clear()
            start = time.perf_counter()
            result = evalkit.run(config)
            wall = time.perf_counter() - start
            print(f"{label:<10} {wall:7.2f} s  images rendered {result.stats.rendered:>4}  "
                  f"denoiser calls {CALLS['denoiser calls']:>5}  backbone loads {CALLS['backbone loads']:>2}  "
                  f"backbone calls {CALLS['backbone calls']:>4}  metrics computed {sum(result.score.computed.values())}")


if __name__ == "__main__":
    main()
