"""A tiny random-weight open_clip model for offline tests.

``register_tiny_clip()`` writes an open_clip model config JSON (``evalkit-tiny-clip``) into a
folder and registers it with ``open_clip.add_model_config``; ``save_tiny_clip(folder)`` builds the
model with seeded random weights and saves its state dict (``.pt`` or ``.safetensors``) so tests
can load it through the real path: ``create_model_and_transforms(name, pretrained=file)``, i.e.
the evalkit backbone string ``evalkit-tiny-clip@/path/file.pt``. The tokenizer is open_clip's
``SimpleTokenizer``, whose BPE vocabulary ships inside the package (no download).
``TINY_CLIP_768`` is the same with 768-dimensional embeddings, ViT-L/14's: what the LAION aesthetic head reads.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

TINY_CLIP = "evalkit-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

TINY_CLIP_768 = "evalkit-tiny-clip-768"
CONFIGS = {TINY_CLIP: TINY_CLIP_CONFIG, TINY_CLIP_768: {**TINY_CLIP_CONFIG, "embed_dim": 768}}


def register_tiny_clip(name: str = TINY_CLIP) -> str:
    """Register a tiny config with open_clip (once per process); returns the model name."""
    import open_clip

    if name not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="evalkit-tiny-clip-cfg-"))
        path = folder / f"{name}.json"
        path.write_text(json.dumps(CONFIGS[name]))
        open_clip.add_model_config(path)
    return name


def save_tiny_clip(folder: Path, seed: int = 0, fmt: str = "pt", name: str = TINY_CLIP) -> Path:
    """Build a tiny model with seeded random weights and save its state dict; returns the file."""
    import open_clip

    register_tiny_clip(name)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / f"{name}.safetensors"
        save_file(state, str(path))
    elif fmt in ("pt", "bin", "pth"):
        path = folder / f"{name}.{fmt}"
        torch.save(state, path)
    else:
        raise ValueError(fmt)
    return path


def backbone_string(path: Path, name: str = TINY_CLIP) -> str:
    """The evalkit backbone string of a saved tiny model: MODEL@FILE."""
    return f"{name}@{path}"
