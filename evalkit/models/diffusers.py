"""diffusers:ID_OR_PATH - any diffusers text-to-image pipeline, from a local folder or the HF cache.

Weights resolve the standard way (`HF_HOME`, `HF_HUB_OFFLINE`); a hub id is fetched only when
the hub is reachable and not disabled. The identity fingerprints the files (size plus the first
and last MiB of each), so a changed checkpoint gets new job keys without hashing gigabytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from ..errors import EvalkitError
from ..metrics.base import hf_home
from .base import LoadOptions, Model, torch_dtype

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model"}


def load_diffusers(target: str, options: LoadOptions) -> Model:
    folder = _resolve_folder(target, options)
    index = folder / "model_index.json"
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if not index.is_file() or not scheduler_file.is_file():
        raise EvalkitError(
            f"{folder} is not a diffusers pipeline folder (needs model_index.json and scheduler/): "
            "save one with pipe.save_pretrained(folder)"
        )
    dtype = torch_dtype(options.dtype)
    identity = {
        "backend": "diffusers",
        "model": target,
        "revision": options.revision,
        "variant": options.variant,
        "dtype": options.dtype,
        "fingerprint": fingerprint(folder),
    }
    pipeline_class = json.loads(index.read_text()).get("_class_name", "?")

    def load_pipeline():
        from diffusers import DiffusionPipeline

        try:
            with warnings.catch_warnings():  # diffusers >= 0.42 renames torch_dtype to dtype; older ones lack dtype
                warnings.simplefilter("ignore", FutureWarning)
                pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, variant=options.variant)
        except Exception as exc:  # noqa: BLE001 - surfaced as a one-line input error
            raise EvalkitError(f"can't load diffusers pipeline from {folder}: {type(exc).__name__}: {exc}") from None
        pipe = pipe.to(options.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    multiple, why = size_multiple(folder, pipeline_class)
    return Model(
        spec=target,
        identity=identity | {"pipeline": pipeline_class},
        scheduler_config=json.loads(scheduler_file.read_text()),
        load_pipeline=load_pipeline,
        size_multiple=multiple,
        size_why=why,
    )


def size_multiple(folder: Path, pipeline_class: str) -> tuple[int, str]:
    """What image sides must be a multiple of, from the saved configs (no weights loaded), and why: the VAE's
    downsampling (2 ** (len(block_out_channels) - 1)), times FLUX's 2x2 latent packing or SD3's patch size.
    Pipelines refuse (Stable Diffusion) or silently round (FLUX) other sizes. (1, "") when there is no VAE."""
    vae = folder / "vae" / "config.json"
    if not vae.is_file():
        return 1, ""
    scale = 2 ** (len(json.loads(vae.read_text()).get("block_out_channels") or [0]) - 1)
    why = f"its VAE downsamples {scale}x"
    transformer = folder / "transformer" / "config.json"
    if "Flux" in pipeline_class:
        return 2 * scale, why + " and FLUX packs 2x2 latents"
    if "StableDiffusion3" in pipeline_class and transformer.is_file():
        patch = int(json.loads(transformer.read_text()).get("patch_size") or 1)
        return patch * scale, why + f" and its transformer's patches are {patch}x{patch} latents"
    return scale, why


def _resolve_folder(target: str, options: LoadOptions) -> Path:
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve()
    if target.startswith((".", "/", "~")) or target.count("/") != 1 or os.sep != "/" and os.sep in target:
        raise EvalkitError(f"model folder {target} not found: pass an existing folder or a hub id like org/name")
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "couldn't connect" warning would repeat our one-line error
    try:
        return Path(DiffusionPipeline.download(target, revision=options.revision, variant=options.variant))
    except Exception as exc:  # noqa: BLE001 - network, auth, missing cache: all mean "not available here"
        cache = hf_home()
        where = "offline (HF_HUB_OFFLINE=1)" if offline else "the hub did not answer"
        raise EvalkitError(
            f"model {target!r} is not in the Hugging Face cache at {cache} and {where} "
            f"({type(exc).__name__}): on a connected machine run `hf download {target}` and copy the cache, "
            "or pass a local pipeline folder"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder)}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()
