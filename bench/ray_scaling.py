"""Render stage: local vs Ray on 1 worker vs Ray on 2 workers, on this machine, in one run.

Prints wall times of the render stage (Ray's start-up is printed apart: a cluster is started once per
session), their ratios, and the overhead Ray adds per job (per image and per batch = one Ray task),
from Ray 1 worker vs local: same work, one replica, so the difference is Ray's.
  --model builtin   builtin:mixture: milliseconds per image, so overheads show (the worst case)
  --model tiny-sd   a random-weight tiny Stable Diffusion built from configs (tests/tiny_models.py):
                    a real diffusers UNet/VAE/CLIP text encoder, ~0.05 s per step at 64x64 on this CPU
usage: python bench/ray_scaling.py [--model builtin|tiny-sd] [--prompts 8] [--seeds 2]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


from _common import TINY_SD_SWEEP, bench_args, model_spec, prompt_file

import evalkit
from evalkit.stages.executors import RayExecutor

SWEEPS = {
    "builtin": dict(schedulers=["euler", "heun", "dpmpp_2m_karras"], steps=[4, 8, 16, 32], reference_steps=50),
    "tiny-sd": TINY_SD_SWEEP,
}


def main() -> None:
    args = bench_args(__doc__, prompts=8, models=tuple(SWEEPS))
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = model_spec(args.model, tmp)
        base = {**SWEEPS[args.model], "model": model, "prompts": prompt_file(tmp, args.prompts), "seeds": args.seeds}
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        runs = {"local": evalkit.render({**base, "out": str(tmp / "local")})}
        pools = {}
        for workers in (1, 2):
            start = time.perf_counter()
            RayExecutor(workers=workers).start()  # the warm pool the stage then uses (started once per session)
            pools[workers] = time.perf_counter() - start
            runs[f"ray x{workers}"] = evalkit.render({**base, "out": str(tmp / f"ray{workers}"), "backend": "ray",
                                                      "workers": workers})
        ray.shutdown()
        shas = {label: run.images.sha256.tolist() for label, run in runs.items()}
    n = runs["local"].stats.rendered
    batches = -(-n // runs["local"].config.batch_size)  # upper bound: batches never mix (scheduler, steps)
    same = all(s == shas["local"] for s in shas.values())
    print(f"model {model.split(':')[0]}:{args.model}; {n} images, batch size {runs['local'].config.batch_size}; "
          f"identical PNG bytes on all three: {same}")
    print(f"Ray start-up, once per session: ray.init (local 2-CPU instance) {startup:.2f} s; worker pool "
          f"(processes importing torch, diffusers, evalkit) {pools[1]:.2f} s for 1 worker, {pools[2]:.2f} s for 2")
    local = runs["local"].stats.seconds
    for label, run in runs.items():
        stats = run.stats
        print(f"{label:<8} render stage {stats.seconds:7.2f} s  {n / stats.seconds:7.1f} img/s  "
              f"pipeline time summed over workers {stats.pipeline_seconds:7.2f} s  local / this: {local / stats.seconds:.2f}x")
    extra = runs["ray x1"].stats.seconds - local
    print(f"Ray overhead vs local (1 worker, same work): {extra:+.2f} s = {extra / n * 1e3:+.2f} ms per image, "
          f"{extra / batches * 1e3:+.1f} ms per batch (task), including the worker's model load")
    print(f"Ray 2 workers vs 1 worker: {runs['ray x1'].stats.seconds / runs['ray x2'].stats.seconds:.2f}x")


if __name__ == "__main__":
    main()
