"""Score-stage throughput / raw backbone forward throughput, per backbone, measured in one run (goal >= 0.8).

  stage   evalkit's score stage on a fresh cache: reads PNGs, runs the metric, writes its caches
  raw     the same backbone built once, fed the same images already decoded in memory, same batch size

Random-weight backbones with the real architectures (bench/_common.py): speed only, no quality.

Preference metrics (aesthetic, pickscore, hpsv2), issue 20 part 4 "Cost": images/s of evalkit's scorer,
spec.build(MetricOptions()).score(images, prompts) on uint8 (B, 3, H, W) random images (default 16 at 512x512, one
batch), against a raw forward of the same backbone object on the same images already preprocessed to 224x224 tensors
(open_clip encode_image for aesthetic and hpsv2, transformers CLIPModel.get_image_features for pickscore). Both sides
run in one process, interleaved (order alternating), median of --preference-repeats; the text embeddings of the
prompts are computed once before timing (the scorers cache them per prompt). Random weights in the official formats,
written to temporary caches exactly as tests/test_metric_{aesthetic,pickscore,hpsv2}.py do (TORCH_HOME, HF_HOME,
HF_HUB_CACHE pointed there): ViT-L/14 for aesthetic, ViT-H/14 (~1B parameters, ~4 GB fp32 each) for pickscore and
hpsv2, or ViT-L/14-sized stand-ins with --preference-small (hpsv2 through its documented ARCHITECTURE test hook).
usage: python bench/score_throughput.py [--prompts 8] [--seeds 2] [--preference-repeats 3] [--preference-size 512]
       [--preference-batch 16] [--preference-small] [--preference-only] [--no-preference]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch are imported
    os.environ[_var] = "1"

import argparse
import gc
import shutil
import statistics
import sys
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
from evalkit.store.folder import RunDir
from evalkit.store.tables import with_references

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


PREFERENCE_NAMES = ["aesthetic", "hpsv2", "pickscore"]
REVISION = "0" * 40
# transformers CLIPConfig sizes: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json, and OpenAI ViT-L/14's
VIT_H = {"text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
         "vision": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16},
         "projection_dim": 1024}
VIT_L = {"text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
         "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
         "projection_dim": 768}


def preference_args() -> argparse.Namespace:
    """This script's own flags, taken out of sys.argv before bench_args parses --prompts/--seeds."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preference-repeats", type=int, default=3)
    parser.add_argument("--preference-size", type=int, default=512)
    parser.add_argument("--preference-batch", type=int, default=16)
    parser.add_argument("--preference-small", action="store_true")
    parser.add_argument("--preference-only", action="store_true")
    parser.add_argument("--no-preference", action="store_true")
    args, rest = parser.parse_known_args()
    sys.argv[1:] = rest
    return args


def write_aesthetic(root: Path) -> None:
    """tests/test_metric_aesthetic.py's files: random ViT-L/14 (QuickGELU) in open_clip's HF cache + the MLP head."""
    import open_clip
    from test_metric_aesthetic import MLP

    from evalkit.metrics.heads import AESTHETIC_FILE

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    snapshot = root / "hf" / "hub" / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(REVISION)
    torch.save(model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    del model
    checkpoints = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(MLP().state_dict(), checkpoints / AESTHETIC_FILE)


def write_hpsv2(root: Path, architecture: str) -> None:
    """tests/test_metric_hpsv2.py's format: {'state_dict': ...} as HPS_v2.1_compressed.pt in models--xswu--HPSv2."""
    import open_clip
    from test_metric_hpsv2 import write_hf_checkpoint

    torch.manual_seed(0)
    model = open_clip.create_model(architecture, pretrained=None)
    write_hf_checkpoint(root / "hf" / "hub", model.state_dict())
    del model


def write_pickscore(root: Path, sizes: dict) -> None:
    """tests/test_metric_pickscore.py's fake hub (PickScore_v1 CLIPModel + the laion processor files), at real sizes."""
    import json

    from test_metric_pickscore import (
        LAION_PREPROCESSOR,
        _to_hub,
        _write_tokenizer_sources,
    )
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    sources = root / "pick-tokenizer"
    _write_tokenizer_sources(sources)
    tokenizer = CLIPTokenizer.from_pretrained(str(sources), model_max_length=77)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "gelu", **sizes["text"], **ids},
        vision_config={"image_size": 224, "patch_size": 14, "hidden_act": "gelu", **sizes["vision"]},
        projection_dim=sizes["projection_dim"])
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    staged_model, staged_processor = root / "pick-staged-model", root / "pick-staged-processor"
    model.save_pretrained(staged_model)
    del model
    tokenizer.save_pretrained(staged_processor)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(sources / name, staged_processor / name)
    (staged_processor / "preprocessor_config.json").write_text(json.dumps(LAION_PREPROCESSOR, indent=2))
    config.save_pretrained(staged_processor)
    hub = root / "hf" / "hub"
    _to_hub(staged_model, hub, "yuvalkirstain/PickScore_v1", "a" * 40)
    _to_hub(staged_processor, hub, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "b" * 40)
    shutil.rmtree(staged_model)  # the blob copy is what the loader reads


def raw_forward(name: str, scorer):
    """(preprocess: uint8 batch -> model input, forward: model input -> image embedding), the scorer's own objects."""
    if name == "aesthetic":
        return scorer.clip._preprocess, scorer.clip.model.encode_image
    if name == "hpsv2":
        return scorer._preprocess, scorer.model.encode_image
    return scorer._pixels, lambda pixels: scorer.model.get_image_features(pixel_values=pixels)


def preference_throughput(tmp: Path, options: argparse.Namespace) -> None:
    os.environ["TORCH_HOME"] = str(tmp / "torch_home")  # where random_backbones puts AlexNet / Inception too
    os.environ["HF_HOME"] = str(tmp / "hf")
    os.environ["HF_HUB_CACHE"] = str(tmp / "hf" / "hub")
    from evalkit.metrics import hpsv2

    if options.preference_small:
        hpsv2.ARCHITECTURE = "ViT-L-14"  # the module's documented test hook (tests monkeypatch it the same way)
    pick_sizes = VIT_L if options.preference_small else VIT_H
    arch = "ViT-L/14-sized stand-ins" if options.preference_small else "ViT-H/14"
    n, side = options.preference_batch, options.preference_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)
    prompts = [f"a photo of a cat number {i}" for i in range(n)]
    print(f"\npreference metrics: {n} random uint8 images {side}x{side}, one batch per call; evalkit "
          "spec.build(MetricOptions()).score(images, prompts) vs the same model's raw image forward on the images "
          f"already preprocessed to 224x224; interleaved, median of {options.preference_repeats}; text embeddings "
          f"cached before timing. Random weights: aesthetic ViT-L/14, pickscore and hpsv2 {arch}")
    print(f"{'metric':<11}{'params':>8}{'write s':>9}{'build s':>9}{'evalkit s':>10}{'raw s':>8}{'prep s':>8}"
          f"{'evalkit/s':>10}{'raw/s':>7}{'ratio':>7}  per repeat (evalkit/raw)", flush=True)
    for name in PREFERENCE_NAMES:
        start = time.perf_counter()
        if name == "aesthetic":
            write_aesthetic(tmp)
        elif name == "hpsv2":
            write_hpsv2(tmp, hpsv2.ARCHITECTURE)
        else:
            write_pickscore(tmp, pick_sizes)
        gc.collect()
        write = time.perf_counter() - start
        spec = METRICS.get(name)
        assert spec.missing_weights(MetricOptions()) == [], spec.missing_weights(MetricOptions())
        start = time.perf_counter()
        scorer = spec.build(MetricOptions())
        build = time.perf_counter() - start
        gc.collect()
        model = scorer.clip.model if name == "aesthetic" else scorer.model
        params = sum(p.numel() for p in model.parameters())
        preprocess, forward = raw_forward(name, scorer)
        with torch.no_grad():
            if name != "aesthetic":
                scorer.text_features(prompts)  # cached per prompt by the scorer, as across a sweep's batches
            pixels = preprocess(images)
        ours, raw, prep = [], [], []
        for repeat in range(options.preference_repeats):
            for side_name in (("evalkit", "raw") if repeat % 2 == 0 else ("raw", "evalkit")):
                start = time.perf_counter()
                with torch.no_grad():
                    if side_name == "evalkit":
                        scores = scorer.score(images, prompts)
                    else:
                        embedding = forward(pixels)
                (ours if side_name == "evalkit" else raw).append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                preprocess(images)
            prep.append(time.perf_counter() - start)
        assert scores.shape == (n,) and torch.isfinite(scores).all()
        assert torch.is_tensor(embedding) or hasattr(embedding, "pooler_output")
        ours_s, raw_s, prep_s = statistics.median(ours), statistics.median(raw), statistics.median(prep)
        pairs = " ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(ours, raw))
        print(f"{name:<11}{params / 1e6:>7.0f}M{write:>9.1f}{build:>9.1f}{ours_s:>10.2f}{raw_s:>8.2f}{prep_s:>8.3f}"
              f"{n / ours_s:>10.2f}{n / raw_s:>7.2f}{raw_s / ours_s:>7.2f}  {pairs}", flush=True)
        del scorer, model, preprocess, forward, pixels
        gc.collect()
        repo = {"hpsv2": "models--xswu--HPSv2", "pickscore": "models--yuvalkirstain--PickScore_v1"}.get(name)
        if repo:  # ~4 GB each at ViT-H/14: free the disk before the next one
            shutil.rmtree(tmp / "hf" / "hub" / repo, ignore_errors=True)


def main() -> None:
    options = preference_args()
    args = bench_args(__doc__, prompts=8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not options.preference_only:
            sweep_throughput(tmp, args)
        if not options.no_preference:
            preference_throughput(tmp, options)


def sweep_throughput(tmp: Path, args: argparse.Namespace) -> None:
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
              f"{'  (no backbone)' if not METRICS.get(name).backbone.strip() or name in ('ssim', 'psnr') else ''}",
              flush=True)


if __name__ == "__main__":
    main()
