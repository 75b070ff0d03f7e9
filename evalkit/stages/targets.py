"""What set metrics compare each (scheduler, steps) column with: `fid_reference` resolved, in one place for the
score stage and the gate. "references" (the default) pairs every column image with its own unit's high-step
reference; a folder of real images is a fixed set; an .npz holds FID statistics (mu, sigma)."""
from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import OWN_REFERENCES, SweepConfig
from ..errors import EvalkitError
from ..metrics.base import SET, MetricSpec, SetTarget
from ..metrics.fid import FeatureMoments, load_npz_stats, stats_sqrt
from ..store.files import digest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TARGET_CHUNK = 1024  # target-folder features loaded at a time when summing FID moments
FIX = "point fid_reference at a folder of at least 2 readable images, an .npz with mu/sigma, or 'references'"


def is_stats(target: str) -> bool:
    return target != OWN_REFERENCES and Path(target).suffix == ".npz"


def check_targets(config: SweepConfig, specs: list[MetricSpec]) -> None:
    """Before anything renders: the fid_reference every set metric of the sweep (`specs`) will be compared with
    can be used by it. A folder must hold at least 2 readable images; an .npz must hold FID statistics, and a
    set metric the config names explicitly that needs images (KID, CMMD) can't take one (with every metric
    selected by default, such metrics are skipped with that reason instead, as documented)."""
    sets = [spec for spec in specs if spec.inputs == SET]
    if config.fid_reference == OWN_REFERENCES or not sets:
        return
    check_fid_reference(Path(config.fid_reference))
    needs_images = [spec.name for spec in sets if spec.compare_stats is None]
    if is_stats(config.fid_reference) and config.metrics and needs_images:
        verb = "compares" if len(needs_images) == 1 else "compare"
        raise EvalkitError(f"{' and '.join(needs_images)} {verb} image sets, but fid_reference "
                           f"{config.fid_reference} holds statistics: point fid_reference at a folder of real "
                           f"images (or 'references'), or drop {' and '.join(needs_images)} from metrics")


def check_fid_reference(target: Path) -> None:
    """Fail before rendering on a fid_reference that can't be used: bad statistics, or a folder without
    at least 2 readable images (each image's file is checked whole, as PIL verifies it, without decoding)."""
    if target.suffix == ".npz":
        load_npz_stats(target)
        return
    from PIL import Image, UnidentifiedImageError

    if not target.is_dir():
        raise EvalkitError(f"fid_reference {target} is not a folder or an .npz file: {FIX}")
    files = _image_files(target)
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
            raise EvalkitError(f"fid_reference image {path} is unreadable ({exc}): replace or remove it") from None
    if len(files) < 2:
        raise EvalkitError(f"fid_reference {target} holds {len(files)} image(s): {FIX}")


def folder_images(target: str) -> list[tuple[str, Path]]:
    """(sha256, path) of a target folder's images, sorted by name."""
    files = [(p.read_bytes(), p) for p in _image_files(Path(target))] if Path(target).is_dir() else []
    if len(files) < 2:
        raise EvalkitError(f"fid_reference {target} is not 'references', an .npz with mu/sigma, or a folder "
                           "with at least 2 images: point it at one of those")
    return [(hashlib.sha256(data).hexdigest(), path) for data, path in files]


def target_id(target: str, target_shas: list[str]) -> str:
    """What a set metric's target is, by content: the references (their hashes go in each column's key),
    an .npz's bytes, or a folder's image hashes."""
    if target == OWN_REFERENCES:
        return target
    if is_stats(target):
        return hashlib.sha256(Path(target).read_bytes()).hexdigest()
    return digest(json.dumps(sorted(target_shas)))


def target_name(target: str) -> str:
    """The target as two runs are compared by it: "references", or the folder's / file's resolved path."""
    return target if target == OWN_REFERENCES else str(Path(target).resolve())


def fixed_target(target: str, spec: MetricSpec, load: Callable[[list[str]], np.ndarray],
                 target_shas: list[str]) -> SetTarget:
    """A folder's or an .npz's target: FID against statistics (the .npz's, or the folder's feature sums, streamed
    TARGET_CHUNK images at a time: never all its features at once); an MMD against the folder's features."""
    if is_stats(target):
        mu, sigma = load_npz_stats(target)
    elif spec.compare_stats is not None:
        moments = functools.reduce(operator.add, (FeatureMoments.of(load(target_shas[i:i + TARGET_CHUNK]))
                                                  for i in range(0, len(target_shas), TARGET_CHUNK)))
        mu, sigma = moments.mean_cov()
    else:  # an unbiased MMD needs the target's features themselves
        return SetTarget(fixed=load(target_shas))
    return SetTarget(stats=(mu, sigma, stats_sqrt(sigma)))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
