"""Score-stage throughput / raw backbone forward throughput, per backbone, measured in one run (goal >= 0.8).

  stage   evalkit's score stage on a fresh cache: reads PNGs, runs the metric, writes its caches
  raw     the same backbone built once, fed the same images already decoded in memory, same batch size

Random-weight backbones with the real architectures (bench/_common.py): speed only, no quality.
usage: python bench/score_throughput.py [--prompts 8] [--seeds 2]
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import bench_args, prompt_file, random_backbones

import evalkit
from evalkit.metrics import METRICS
from evalkit.metrics.base import IMAGE_PROMPT, IMAGE_REFERENCE, MetricOptions
from evalkit.stages.score import score_images
from evalkit.stages.workers import load_images
from evalkit.store.tables import with_references
from evalkit.store.folder import RunDir

METRIC_NAMES = ["ssim", "psnr", "lpips", "clip_score", "fid"]  # kid shares fid's Inception features


def raw_seconds(name: str, run, images, config) -> tuple[float, float, int]:
    """(seconds to build the backbone, seconds of forward calls, images fed)."""
    spec = METRICS.get(name)
    options = MetricOptions(device="cpu", batch_size=config.batch_size, backbone=config.backbones.get(name))
    start = time.perf_counter()
    scorer = spec.build(options)
    build = time.perf_counter() - start
    if spec.inputs == IMAGE_REFERENCE:
        pairs = with_references(images, config)
        folder = RunDir(run.dir)
        batches = [(load_images(folder.image_path(k) for k in pairs.key[i:i + options.batch_size]),
                    load_images(folder.image_path(k) for k in pairs.reference_key[i:i + options.batch_size]))
                   for i in range(0, len(pairs), options.batch_size)]
        call = scorer.score
    elif spec.inputs == IMAGE_PROMPT:
        batches = [(load_images(RunDir(run.dir).image_path(k) for k in images.key[i:i + options.batch_size]),
                    list(images.prompt[i:i + options.batch_size])) for i in range(0, len(images), options.batch_size)]
        call = scorer.score
    else:
        batches = [(load_images(RunDir(run.dir).image_path(k) for k in images.key[i:i + options.batch_size]),)
                   for i in range(0, len(images), options.batch_size)]
        call = scorer.features
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            call(*batch)
    return build, time.perf_counter() - start, sum(len(b[0]) for b in batches)


def main() -> None:
    args = bench_args(__doc__, prompts=8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbones = random_backbones(tmp)
        run = evalkit.render({"prompts": prompt_file(tmp, args.prompts), "seeds": args.seeds, "out": str(tmp / "run"),
                              "schedulers": ["euler", "dpmpp_2m_karras"], "steps": [2, 4, 8, 16],
                              "backbones": backbones, "metrics": METRIC_NAMES})
        images = run.images
        print(f"{len(images)} images ({int((images.role == 'sweep').sum())} sweep + references), "
              f"batch size {run.config.batch_size}")
        print("ratio = stage images/s / raw forward images/s (goal >= 0.8); 'steady' leaves out the one-time "
              "backbone load, which the stage pays once per run")
        print(f"{'metric':<12}{'images':>7}{'stage s':>9}{'load s':>8}{'raw s':>8}{'stage/s':>9}{'raw/s':>8}"
              f"{'ratio':>7}{'steady':>8}")
        for name in METRIC_NAMES:
            shutil.rmtree(RunDir(run.dir).cache_dir, ignore_errors=True)
            build, raw, n = raw_seconds(name, run, images, run.config)
            start = time.perf_counter()
            outcome = score_images(RunDir(run.dir), images, run.config, [name])
            stage = time.perf_counter() - start
            count = outcome.computed[name]
            rate = n / raw
            print(f"{name:<12}{count:>7}{stage:>9.2f}{build:>8.2f}{raw:>8.2f}{count / stage:>9.1f}{rate:>8.1f}"
                  f"{count / stage / rate:>7.2f}{count / (stage - build) / rate:>8.2f}"
                  f"{'  (no backbone)' if not METRICS.get(name).backbone.strip() or name in ('ssim', 'psnr') else ''}")


if __name__ == "__main__":
    main()
