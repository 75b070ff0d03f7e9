"""Render-stage overhead on builtin:mixture, printed as ratios measured in one run (CPU timing here is noisy).

  stage / raw      render-stage wall time / the same batched pipeline calls made directly (goal <= 1.03)
  batched / single images per second with batch_size=8 vs one image per call
  no-op rerun      seconds for a rerun of the finished render stage (renders nothing)

usage: python bench/render_overhead.py [--prompts 4] [--seeds 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import evalkit
from evalkit.config import load_config
from evalkit.plan import RenderSettings
from evalkit.prompts import load_prompts
from evalkit.render import _batches, _call_pipeline, CallCounter
from evalkit.runner import load_sweep_model
from evalkit.plan import plan_jobs


def raw_seconds(config, batch_size: int) -> float:
    """The same jobs as the stage renders, through the same pipeline calls, with nothing around them."""
    model = load_sweep_model(config)
    jobs = plan_jobs(config, model, load_prompts(config.prompts_path())[: len(PROMPTS)])
    settings = RenderSettings.resolve(config, model)
    counter = CallCounter(model.denoiser)
    start = time.perf_counter()
    for batch in _batches(jobs, batch_size):
        _call_pipeline(model, batch, settings, counter)
    counter.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.txt"
        global PROMPTS
        PROMPTS = [p.text for p in load_prompts(load_config().prompts_path())][: args.prompts]
        prompt_file.write_text("\n".join(PROMPTS) + "\n")
        config = load_config(prompts=str(prompt_file), seeds=str(args.seeds), out=str(Path(tmp) / "batched"))
        raw = raw_seconds(config, config.batch_size)
        batched = evalkit.render(config)
        noop_start = time.perf_counter()
        rerun = evalkit.render(config)
        noop = time.perf_counter() - noop_start
        single = evalkit.render(config, out=str(Path(tmp) / "single"), batch_size=1)
    n = batched.stats.rendered
    print(f"images rendered: {n} (no-op rerun rendered {rerun.stats.rendered})")
    print(f"stage wall {batched.stats.seconds:.2f} s; pipeline calls inside it {batched.stats.pipeline_seconds:.2f} s; "
          f"same calls made directly {raw:.2f} s")
    print(f"stage / raw pipeline calls (same run):  {batched.stats.seconds / batched.stats.pipeline_seconds:.3f}")
    print(f"stage / raw pipeline calls (separate):  {batched.stats.seconds / raw:.3f}")
    print(f"batched (8/call) {n / batched.stats.seconds:.1f} img/s vs single {n / single.stats.seconds:.1f} img/s: "
          f"{single.stats.seconds / batched.stats.seconds:.2f}x")
    print(f"no-op rerun: {noop:.2f} s")


PROMPTS: list[str] = []

if __name__ == "__main__":
    main()
