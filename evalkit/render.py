"""Stage 1: render the jobs that have no image yet, in batches, counting NFE and seconds per image.

Each finished batch is durable before the next starts: PNGs are written atomically, then the
images table is rewritten atomically with their rows. A run killed at any point therefore loses
at most the batch in flight, and a rerun renders exactly the jobs whose rows are missing.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .models import Model
from .plan import RenderJob, RenderSettings
from .schedulers import build_scheduler, get_scheduler
from .store import IMAGE_COLUMNS, RunDir, atomic_write

BLANK_RANGE = 2  # an image whose pixel values span <= 2/255 carries no picture


@dataclass
class RenderStats:
    planned: int
    rendered: int  # images rendered by this call (0 on a finished sweep)
    seconds: float  # wall time of this call's rendering
    pipeline_seconds: float  # time inside the pipeline calls alone


class CallCounter:
    """Counts forward calls of the denoiser: one call = one model evaluation for every image in the batch."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def render_jobs(run: RunDir, model: Model, jobs: list[RenderJob], settings: RenderSettings,
                batch_size: int, progress: bool = True) -> RenderStats:
    table = run.read_images()
    done = set(table["key"])
    todo = [job for job in jobs if job.key not in done]
    stats = RenderStats(planned=len(jobs), rendered=0, seconds=0.0, pipeline_seconds=0.0)
    if not todo:
        return stats
    saved = [table]  # the table so far; the writer appends one frame per batch
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="img", desc="render", disable=not progress,
               dynamic_ncols=True)
    start = time.perf_counter()
    counter = CallCounter(model.denoiser)
    # One writer thread saves batch i (PNG encoding, fsync, table rewrite) while batch i+1 renders;
    # it runs saves in order, so the table never lists an image whose PNG is not yet on disk.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-writer")
    pending: Future | None = None
    try:
        for batch in _batches(todo, batch_size):
            images, nfe, seconds = _call_pipeline(model, batch, settings, counter)
            stats.pipeline_seconds += seconds
            if pending is not None:
                pending.result()  # surface a failed save now; keeps at most one batch in flight
            pending = writer.submit(_save_batch, run, batch, images, nfe, seconds, saved)
            stats.rendered += len(batch)
            bar.update(len(batch))
        if pending is not None:
            pending.result()
    finally:
        writer.shutdown(wait=True)  # on Ctrl-C too: a rendered batch is still saved
        counter.close()
        bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _save_batch(run: RunDir, batch: list[RenderJob], images: list[Any], nfe: int, seconds: float,
                saved: list[pd.DataFrame]) -> None:
    rows = [_save_image(run, job, image, nfe, seconds / len(batch)) for job, image in zip(batch, images)]
    new = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    saved[0] = new if saved[0].empty else pd.concat([saved[0], new], ignore_index=True)
    run.write_images(saved[0])


def _batches(jobs: list[RenderJob], size: int) -> Iterator[list[RenderJob]]:
    """Jobs sharing (scheduler, steps) in chunks of `size`: one pipeline call each."""
    for _, group in itertools.groupby(jobs, key=lambda j: (j.scheduler, j.steps)):
        group = list(group)
        for i in range(0, len(group), size):
            yield group[i:i + size]


def _call_pipeline(model: Model, batch: list[RenderJob], settings: RenderSettings,
                   counter: CallCounter) -> tuple[list[Any], int, float]:
    pipe = model.pipe
    pipe.scheduler = build_scheduler(get_scheduler(batch[0].scheduler), model.scheduler_config)
    kwargs: dict[str, Any] = {
        "prompt": [job.prompt for job in batch],
        "num_inference_steps": batch[0].steps,
        # CPU generators: the same seed gives the same initial noise on every device
        "generator": [torch.Generator("cpu").manual_seed(job.seed) for job in batch],
        "output_type": model.output_type,
    }
    if settings.guidance is not None:
        kwargs["guidance_scale"] = settings.guidance
    if settings.size is not None:
        kwargs["height"] = kwargs["width"] = settings.size
    if settings.negative_prompt is not None:
        kwargs["negative_prompt"] = [settings.negative_prompt] * len(batch)
    calls_before = counter.calls
    start = time.perf_counter()
    with torch.inference_mode():
        images = pipe(**kwargs).images
    seconds = time.perf_counter() - start
    return list(images), counter.calls - calls_before, seconds


def _save_image(run: RunDir, job: RenderJob, image: Any, nfe: int, seconds: float) -> dict[str, Any]:
    pixels, flags = _to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    path = run.images_dir / f"{job.key}.png"
    atomic_write(path, data)
    return {
        "key": job.key, "prompt_id": job.prompt_id, "prompt": job.prompt, "seed": job.seed,
        "scheduler": job.scheduler, "steps": job.steps, "nfe": nfe, "role": job.role, "seconds": seconds,
        "path": str(path.relative_to(run.path)), "sha256": hashlib.sha256(data).hexdigest(),
        "width": pixels.shape[1], "height": pixels.shape[0], "flags": ",".join(flags),
    }


def _to_uint8(image: Any) -> tuple[np.ndarray, list[str]]:
    """PIL or float HWC in [0, 1] -> uint8 RGB, with flags for NaN and blank images."""
    flags = []
    if isinstance(image, Image.Image):
        pixels = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            flags.append("nan")
            array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if int(pixels.max()) - int(pixels.min()) <= BLANK_RANGE:
        flags.append("blank")
    return pixels, flags
