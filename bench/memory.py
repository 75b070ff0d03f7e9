"""Driver peak RSS at 100 vs 1000 images on builtin:mixture (goal: ratio <= 1.2), for each backend.

Each size runs `evalkit.run` (render, score ssim+psnr, report) in a fresh Python process that prints its
own peak RSS (getrusage ru_maxrss of the driver alone: Ray workers are other processes).
usage: python bench/memory.py [--backends local,ray]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, prompt_file

SIZES = {  # images = prompts x seeds x (schedulers x steps + 1 reference)
    100: dict(seeds=2, schedulers=["euler", "ddim"], steps=[2, 4]),
    1000: dict(seeds=4, schedulers=["euler", "ddim", "dpmpp_2m", "unipc"], steps=[2, 4, 6, 8, 10, 12]),
}
DRIVER = """
import json, resource, sys, torch
torch.set_num_threads(1)
import evalkit
run = evalkit.run(json.loads(sys.argv[1]))
print(json.dumps({"images": len(run.images), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak(config: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="local,ray")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompt_file(Path(tmp), 10)
        for backend in args.backends.split(","):
            results = {}
            for size, sweep in SIZES.items():
                config = {**sweep, "prompts": prompts, "metrics": ["ssim", "psnr"], "backend": backend,
                          "out": str(Path(tmp) / f"{backend}-{size}")}
                results[size] = peak(config)
                print(f"{backend:<6} {results[size]['images']:>5} images: driver peak RSS "
                      f"{results[size]['peak_rss_mb']:7.1f} MB")
            print(f"{backend:<6} peak RSS 1000 / 100 images: {results[1000]['peak_rss_mb'] / results[100]['peak_rss_mb']:.3f}"
                  f"  (goal <= 1.2)")


if __name__ == "__main__":
    main()
