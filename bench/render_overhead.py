"""Render-stage overhead, printed as ratios measured in one run (CPU timing here is noisy).

  stage / raw      render-stage wall time / the same batched pipeline calls made directly (goal <= 1.03)
  batched / single images per second with batch_size=8 vs one image per call
  no-op rerun      seconds for a rerun of the finished render stage (renders nothing)

  --model builtin   builtin:mixture: ~1 ms per image-step, so every bit of harness overhead shows
  --model tiny-sd   a random-weight tiny Stable Diffusion built from configs (tests/tiny_models.py):
                    a real diffusers UNet/VAE/text encoder, ~0.05 s per step at 64x64 on this CPU
  --model tiny-flux a random-weight tiny FLUX.1-dev-style FluxPipeline (same file): the raw calls are FluxPipeline
                    calls with the flow solvers' adapters, so the ratio is the harness's cost on a flow model
usage: python bench/render_overhead.py [--model builtin|tiny-sd|tiny-flux] [--prompts 4] [--seeds 2]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


from _common import TINY_FLUX_SWEEP, TINY_SD_SWEEP, bench_args, model_spec, prompt_file

import evalkit
from evalkit.config import load_config
from evalkit.stages.render import CallCounter, SamplerCache, _batches, _call_pipeline
from evalkit.sweep.plan import RenderSettings, plan_jobs, prepare_sweep
from evalkit.sweep.sample import run_prompts

SWEEPS = {
    "builtin": {},  # the default sweep's schedulers and steps
    "tiny-sd": TINY_SD_SWEEP,
    "tiny-flux": TINY_FLUX_SWEEP,
}


def raw_seconds(config, batch_size: int) -> float:
    """The same jobs as the stage renders, through the same pipeline calls, with nothing around them."""
    config, model = prepare_sweep(config)
    jobs = plan_jobs(config, model, run_prompts(config).prompts)  # the prompts the stage renders
    settings = RenderSettings.resolve(config, model)
    counter, samplers = CallCounter(model.denoiser), SamplerCache(model)
    start = time.perf_counter()
    for batch in _batches(jobs, batch_size):
        _call_pipeline(model, batch, settings, counter, samplers.get(batch[0].scheduler))
    counter.close()
    return time.perf_counter() - start


def main() -> None:
    args = bench_args(__doc__, prompts=4, models=tuple(SWEEPS))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = model_spec(args.model, tmp)
        config = load_config(model=model, prompts=prompt_file(tmp, args.prompts), seeds=str(args.seeds),
                             out=str(tmp / "batched"), **SWEEPS[args.model])
        raw = raw_seconds(config, config.batch_size)
        batched = evalkit.render(config)
        noop_start = time.perf_counter()
        rerun = evalkit.render(config)
        noop = time.perf_counter() - noop_start
        single = evalkit.render(config, out=str(tmp / "single"), batch_size=1)
    n = batched.stats.rendered
    print(f"model {args.model}; images rendered: {n} (no-op rerun rendered {rerun.stats.rendered})")
    print(f"stage wall {batched.stats.seconds:.2f} s; pipeline calls inside it {batched.stats.pipeline_seconds:.2f} s; "
          f"same calls made directly {raw:.2f} s")
    stats = batched.stats
    print(f"stage / raw pipeline calls (same run):  {stats.seconds / stats.pipeline_seconds:.3f}  (goal <= 1.03)")
    print(f"  the same without the one-time pipeline load inside the stage ({stats.load_seconds:.2f} s): "
          f"{(stats.seconds - stats.load_seconds) / stats.pipeline_seconds:.3f}; harness time per image "
          f"{(stats.seconds - stats.load_seconds - stats.pipeline_seconds) / n * 1e3:.2f} ms")
    print(f"stage / raw pipeline calls (separate):  {batched.stats.seconds / raw:.3f}")
    print(f"batched (8/call) {n / batched.stats.seconds:.1f} img/s vs single {n / single.stats.seconds:.1f} img/s: "
          f"{single.stats.seconds / batched.stats.seconds:.2f}x")
    print(f"no-op rerun: {noop:.2f} s")


if __name__ == "__main__":
    main()
