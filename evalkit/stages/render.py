"""Stage 1: render the jobs that have no image yet, in batches, counting NFE and seconds per image.

Workers (this process, or Ray actors: executors.py) render and encode; the driver alone writes the
run folder. Each finished batch is durable before it counts: PNGs are written atomically, then
their rows are appended to the images table's journal. A run killed at any point therefore loses
at most the batches in flight, and a rerun renders exactly the jobs whose rows are missing.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import io
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..models import LoadOptions, Model, load_model, resolve_device
from ..models.base import check_images
from ..store.files import atomic_write
from ..store.folder import RunDir
from ..store.tables import LABELS
from ..sweep.plan import RenderJob, RenderSettings
from ..sweep.schedulers import build_scheduler, get_scheduler
from .executors import LocalExecutor

BLANK_RANGE = 2  # an image whose pixel values span <= 2/255 carries no picture


@dataclass
class RenderStats:
    planned: int
    rendered: int  # images rendered by this call (0 on a finished sweep)
    seconds: float  # wall time of this call's rendering
    pipeline_seconds: float  # time inside the pipeline calls alone (summed over workers)
    workers: int = 1
    load_seconds: float = 0.0  # local backend: loading the model's pipeline (lazily, at the first batch)
    replaced: int = 0  # images rendered again because their PNG no longer matched its sha256

    def add(self, more: RenderStats) -> None:
        """A later render_jobs call of the same command (the references' tie-breaks) counted in."""
        for name in ("rendered", "seconds", "pipeline_seconds", "load_seconds", "replaced"):
            setattr(self, name, getattr(self, name) + getattr(more, name))


@dataclass(frozen=True)
class Rendered:
    """One rendered image as a worker hands it to the driver, with what its row records."""

    job: RenderJob
    # PNG bytes from Ray workers (less to ship; encoding spread over the workers), or uint8 pixels from
    # the local worker (encoded by the driver while the next batch renders)
    image: bytes | np.ndarray
    nfe: int
    seconds: float  # the batch's pipeline seconds / its size
    flags: str
    width: int
    height: int


class CallCounter:
    """Counts forward calls of the denoiser: one call = one model evaluation for every image in the batch."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


class SamplerCache:
    """A fresh scheduler per batch, as cheap as a copy: each sampler is built with `from_config` once (about
    1 ms, 40 ms for the SDE samplers: per batch that was most of the harness's time) and deep-copied for
    every call. A copy, not the instance itself: some samplers keep state across calls (DPM++ SDE's
    Brownian tree survives `set_timesteps`), and an image must not depend on the batches before it."""

    def __init__(self, model: Model):
        self.model, self.pristine = model, {}

    def get(self, name: str) -> Any:
        if name not in self.pristine:
            self.pristine[name] = build_scheduler(get_scheduler(name), self.model.scheduler_config)
        return copy.deepcopy(self.pristine[name])


class Renderer:
    """One model replica: a batch of jobs in, PNG bytes out. What the local process or each Ray worker holds."""

    def __init__(self, model: Model, settings: RenderSettings, encode: bool = True):
        self.model, self.settings, self.encode = model, settings, encode
        self.counter = CallCounter(model.denoiser)
        self.samplers = SamplerCache(model)

    @classmethod
    def load(cls, spec: str, options: LoadOptions, settings: RenderSettings) -> Renderer:
        """Load the model on this worker (device "auto" resolved here: the worker's GPU, not the driver's)."""
        return cls(load_model(spec, dataclasses.replace(options, device=resolve_device(options.device))), settings)

    def render(self, batch: list[RenderJob]) -> tuple[list[Rendered], float]:
        """One pipeline call; its output checked against the models' contract (`check_images`: the one check, here
        on whichever worker renders) before anything is encoded or handed to the driver."""
        images, nfe, seconds = _call_pipeline(self.model, batch, self.settings, self.counter,
                                              self.samplers.get(batch[0].scheduler))
        out = []
        for job, (pixels, non_finite) in zip(batch, check_images(images, self.model.spec, len(batch),
                                                                  self.settings.size)):
            out.append(Rendered(job, _png(pixels) if self.encode else pixels, nfe, seconds / len(batch),
                                ",".join(_flags(pixels, non_finite)), pixels.shape[1], pixels.shape[0]))
        return out, seconds

    def close(self) -> None:
        self.counter.close()


def renderer_for(executor: Any, model: Model, settings: RenderSettings, options: LoadOptions) -> Callable[[], Renderer]:
    """How the executor's workers get a Renderer: this process reuses the loaded model; Ray workers load
    their own replica from the spec (`options.device` unresolved, so "auto" picks each worker's GPU)."""
    if isinstance(executor, LocalExecutor):
        return lambda: Renderer(model, settings, encode=False)
    return functools.partial(Renderer.load, model.spec, options, settings)


def render_jobs(run: RunDir, jobs: list[RenderJob], renderer: Callable[[], Renderer], batch_size: int,
                executor: Any = None, progress: bool = True) -> RenderStats:
    """Render the jobs without a row in the images table, batch by batch on the executor's workers.

    The driver saves every finished batch before it counts as done (PNGs, then their rows appended to
    the table's journal), whatever worker rendered it: a killed run or worker loses at most the
    batches in flight, and a rerun (with any number of workers) renders exactly the missing jobs.
    """
    executor = executor or LocalExecutor()
    run.compact_images()  # folds a killed run's journal (and drops a line torn mid-append)
    run.relabel_images(pd.DataFrame([(j.key, j.prompt_id, j.category, j.challenge) for j in jobs],
                                    columns=["key", *LABELS]))
    table = run.read_images()
    table = table[table.key.isin({job.key for job in jobs})]
    altered = run.altered(table)  # a PNG truncated, changed or replaced since: rendered again
    done = set(table.key[~altered])
    todo = [job for job in jobs if job.key not in done]
    stats = RenderStats(planned=len(jobs), rendered=0, seconds=0.0, pipeline_seconds=0.0, workers=executor.workers,
                        replaced=int(altered.sum()))
    if not todo:
        return stats
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="img", desc="render", disable=not progress,
               dynamic_ncols=True)
    start, loaded = time.perf_counter(), getattr(executor, "load_seconds", 0.0)
    try:
        batches = ((None, (batch,)) for batch in _batches(todo, batch_size))
        for _, (rendered, seconds) in executor.map(renderer, "render", batches):
            fresh = [r for r in rendered if r.job.key not in done]  # a retried batch is saved once
            run.append_images([_save_image(run, r) for r in fresh])
            done.update(r.job.key for r in fresh)
            stats.pipeline_seconds += seconds
            stats.rendered += len(fresh)
            bar.update(len(fresh))
    finally:
        run.compact_images()
        bar.close()
    stats.seconds = time.perf_counter() - start
    stats.load_seconds = getattr(executor, "load_seconds", 0.0) - loaded
    return stats


def _batches(jobs: list[RenderJob], size: int) -> Iterator[list[RenderJob]]:
    """Jobs sharing (scheduler, steps) in chunks of `size`: one pipeline call each."""
    for _, group in itertools.groupby(jobs, key=lambda j: (j.scheduler, j.steps)):
        group = list(group)
        for i in range(0, len(group), size):
            yield group[i:i + size]


def _call_pipeline(model: Model, batch: list[RenderJob], settings: RenderSettings, counter: CallCounter,
                   scheduler: Any) -> tuple[Any, int, float]:
    pipe = model.pipe
    if hasattr(scheduler, "noise_sampler_seed"):
        # DPM++ SDE draws its Brownian-tree seed from torch's global RNG unless given one: seed each image's
        # tree with its own seed, so its pixels depend on nothing else (not the batch, not earlier calls)
        scheduler.noise_sampler_seed = [job.seed for job in batch]
    pipe.scheduler = scheduler
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
        images = getattr(pipe(**kwargs), "images", None)  # what it holds is checked by the caller: check_images
    seconds = time.perf_counter() - start
    return images, counter.calls - calls_before, seconds


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _save_image(run: RunDir, rendered: Rendered) -> dict[str, Any]:
    job, data = rendered.job, rendered.image
    data = data if isinstance(data, bytes) else _png(data)
    path = run.image_path(job.key)
    atomic_write(path, data)
    return {
        "key": job.key, "prompt_id": job.prompt_id, "prompt": job.prompt, "seed": job.seed,
        "scheduler": job.scheduler, "steps": job.steps, "nfe": rendered.nfe, "role": job.role,
        "seconds": rendered.seconds, "path": run.image_row_path(job.key),
        "sha256": hashlib.sha256(data).hexdigest(), "width": rendered.width, "height": rendered.height,
        "flags": rendered.flags, "category": job.category, "challenge": job.challenge,
    }


def _flags(pixels: np.ndarray, non_finite: bool) -> list[str]:
    """`nan`: the model gave NaN or infinite values (zeroed); `blank`: its pixel values span <= BLANK_RANGE/255."""
    flags = ["nan"] if non_finite else []
    if int(pixels.max()) - int(pixels.min()) <= BLANK_RANGE:
        flags.append("blank")
    return flags
