"""Shared bench setup: small sweeps on builtin:mixture, and random-weight backbones at the real cache paths.

Throughput and call counts do not depend on weight values, so the benchmarks use the tests' random-weight
files (tests/fake_weights.py) with the real architectures: AlexNet (LPIPS), Inception-v3 (FID/KID) and
open_clip ViT-B-32-quickgelu (CLIP score). No score printed here means anything about image quality.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # fake_weights, tiny_models


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (f"device {device}; {os.cpu_count()} CPU(s) ({model}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s); python {platform.python_version()}")


TINY_SD_SWEEP = dict(schedulers=["euler", "dpmpp_2m_karras"], steps=[10, 20, 40], reference_steps=60, guidance=1.0)
# FLUX-dev style (guidance embedded, dynamic shift); 64x64 = 16 packed latent tokens
TINY_FLUX_SWEEP = dict(schedulers=["flow_euler", "flow_dpmpp_2m", "flow_heun"], steps=[10, 20, 40], reference_steps=60,
                       size=64)


def bench_args(description: str, prompts: int, models: tuple[str, ...] = ()) -> argparse.Namespace:
    """--prompts/--seeds (and --model when a script offers several); sets one torch thread, prints the machine."""
    parser = argparse.ArgumentParser(description=description)
    if models:
        parser.add_argument("--model", choices=models, default=models[0])
    parser.add_argument("--prompts", type=int, default=prompts)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    return args


def model_spec(name: str, folder: Path) -> str:
    """builtin -> builtin:mixture; tiny-sd / tiny-flux -> a random-weight tiny Stable Diffusion / FLUX.1-dev-style
    pipeline saved in `folder`."""
    if name == "tiny-flux":
        from tiny_models import save_tiny_flow

        return f"diffusers:{save_tiny_flow(folder / 'tiny-flux', 'flux-dev')}"
    if name == "tiny-sd":
        from tiny_models import save_tiny_sd

        return f"diffusers:{save_tiny_sd(folder / 'tiny-sd')}"
    return "builtin:mixture"


def prompt_file(folder: Path, count: int) -> str:
    from evalkit.config import load_config
    from evalkit.sweep.prompts import load_prompts

    texts = [p.text for p in load_prompts(load_config().prompts_path())][:count]
    path = folder / f"prompts-{count}.txt"
    path.write_text("\n".join(texts) + "\n")
    return str(path)


def random_backbones(folder: Path) -> dict[str, str]:
    """Random-weight backbone files where the loaders read them; returns the config's `backbones`."""
    import open_clip
    from fake_weights import write_alexnet, write_inception_fid

    home = folder / "torch_home"
    os.environ["TORCH_HOME"] = str(home)
    write_alexnet(home)
    write_inception_fid(home)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu")
    path = folder / "vit-b-32-random.pt"
    torch.save(clip.state_dict(), path)
    return {"clip_score": f"ViT-B-32-quickgelu@{path}"}
