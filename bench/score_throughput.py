"""Score-stage throughput / raw backbone forward throughput, per backbone, measured in one run (goal >= 0.8).

  stage   evalkit's score stage on a fresh cache: reads PNGs, runs the metric, writes its caches
  raw     the same backbone built once, fed the same images already decoded in memory, same batch size

Random-weight backbones with the real architectures (bench/_common.py): speed only, no quality.

Preference metrics (aesthetic, pickscore, hpsv2, imagereward), issue 20 part 4 "Cost": images/s of evalkit's
scorer, spec.build(MetricOptions()).score(images, prompts) on uint8 (B, 3, H, W) random images (default 16 at 512x512,
one batch), against a raw forward of the same backbone object on the same images already preprocessed to 224x224
tensors (open_clip encode_image for aesthetic and hpsv2, transformers CLIPModel.get_image_features for pickscore; for
imagereward the whole ImageRewardModel forward, BLIP vision model + BERT text model cross-attending to the image tokens
+ MLP head, on the prompts already tokenized: its text cannot be encoded apart from the image). Both sides run in one
process, interleaved (order alternating), median of --preference-repeats; the text embeddings of the prompts are
computed once before timing (the scorers cache them per prompt; imagereward caches its tokens). Random weights in the
official formats, written to temporary caches exactly as tests/test_metric_{aesthetic,pickscore,hpsv2,imagereward}.py
do (TORCH_HOME, HF_HOME, HF_HUB_CACHE pointed there): ViT-L/14 for aesthetic, ViT-H/14 (~1B parameters, ~4 GB fp32
each) for pickscore and hpsv2, ImageReward v1.0 at its real size (BLIP ViT-L/16 at 224 + BERT-base with
cross-attention from the official med_config.json + the MLP head, ~446M parameters, the test's official module tree
so the keys are the official ImageReward.pt's), or ViT-L/14-sized stand-ins for pickscore and hpsv2 and a BLIP
ViT-B/16 image encoder for imagereward with --preference-small (hpsv2 and imagereward through their documented
ARCHITECTURE / VISION test hooks). --preference-metrics imagereward (comma-separated) runs only the ones named.
usage: python bench/score_throughput.py [--prompts 8] [--seeds 2] [--preference-repeats 3] [--preference-size 512]
       [--preference-batch 16] [--preference-small] [--preference-metrics aesthetic,hpsv2,pickscore,imagereward]
       [--preference-only] [--no-preference]
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


PREFERENCE_NAMES = ["aesthetic", "hpsv2", "pickscore", "imagereward"]
REVISION = "0" * 40
# transformers CLIPConfig sizes: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json, and OpenAI ViT-L/14's
VIT_H = {"text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
         "vision": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16},
         "projection_dim": 1024}
VIT_L = {"text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
         "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
         "projection_dim": 768}
# THUDM/ImageReward's med_config.json (BLIP's configs/med_config.json: BERT-base + cross-attention, vocab 30522 + [DEC],
# [ENC]); its encoder_width is overwritten by the vision width, as BLIP_Pretrain does
IMAGEREWARD_MED = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}
# create_vit('base', 224) of BLIP: the --preference-small stand-in for imagereward's create_vit('large', 224)
BLIP_VIT_B = {"image_size": 224, "patch_size": 16, "width": 768, "depth": 12, "heads": 12, "mlp_ratio": 4.0}
BERT_VOCAB_SIZE = 30522  # bert-base-uncased's vocab.txt: [DEC] and [ENC] become 30522 and 30523


def preference_args() -> argparse.Namespace:
    """This script's own flags, taken out of sys.argv before bench_args parses --prompts/--seeds."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preference-repeats", type=int, default=3)
    parser.add_argument("--preference-size", type=int, default=512)
    parser.add_argument("--preference-batch", type=int, default=16)
    parser.add_argument("--preference-small", action="store_true")
    parser.add_argument("--preference-metrics", default=",".join(PREFERENCE_NAMES),
                        help="comma-separated subset of " + ",".join(PREFERENCE_NAMES))
    parser.add_argument("--preference-only", action="store_true")
    parser.add_argument("--no-preference", action="store_true")
    args, rest = parser.parse_known_args()
    names = [n.strip() for n in args.preference_metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in PREFERENCE_NAMES]
    if unknown or not names:
        parser.error(f"--preference-metrics {args.preference_metrics!r}: choose from {','.join(PREFERENCE_NAMES)}")
    args.preference_metrics = [n for n in PREFERENCE_NAMES if n in names]
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


def write_imagereward(root: Path, vision: dict) -> None:
    """tests/test_metric_imagereward.py's fake hub (ImageReward.pt from its re-implementation of the official module
    tree, hence the official keys, + med_config.json; bert-base-uncased vocab.txt + tokenizer_config.json), at the
    real med_config.json and the given create_vit shape (imagereward.VISION)."""
    import json

    from fake_weights import hub_snapshot
    from test_metric_imagereward import (
        HF_REPO,
        TOKENIZER_REPO,
        VOCAB,
        OfficialImageReward,
    )

    torch.manual_seed(0)
    model = OfficialImageReward(IMAGEREWARD_MED, vision).eval()
    staged_model, staged_tokenizer = root / "ir-staged-model", root / "ir-staged-tokenizer"
    staged_model.mkdir(parents=True)
    staged_tokenizer.mkdir(parents=True)
    torch.save(model.state_dict(), staged_model / "ImageReward.pt")
    del model
    (staged_model / "med_config.json").write_text(json.dumps(IMAGEREWARD_MED, indent=2))
    words = VOCAB + ["number", *(str(i) for i in range(100))]  # the bench's prompts tokenize without [UNK]
    words += [f"[unused{i}]" for i in range(2, 2 + BERT_VOCAB_SIZE - len(words))]  # bert-base-uncased's size
    (staged_tokenizer / "vocab.txt").write_text("\n".join(words) + "\n")
    (staged_tokenizer / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    hub = root / "hf" / "hub"
    hub_snapshot(staged_model, hub, HF_REPO, "c" * 40)
    hub_snapshot(staged_tokenizer, hub, TOKENIZER_REPO, "d" * 40)
    shutil.rmtree(staged_model)  # the blob copy is what the loader reads
    shutil.rmtree(staged_tokenizer)


def raw_forward(name: str, scorer, prompts: list[str]):
    """(preprocess: uint8 batch -> model input, forward: model input -> image embedding, or imagereward's reward on
    the prompts' cached tokens), the scorer's own objects."""
    if name == "aesthetic":
        return scorer.clip._preprocess, scorer.clip.model.encode_image
    if name == "hpsv2":
        return scorer._preprocess, scorer.model.encode_image
    if name == "imagereward":
        ids, mask = scorer.tokens(prompts)  # tokenized once, before timing (the scorer caches them per prompt)
        return scorer._pixels, lambda pixels: scorer.model(pixels, ids, mask)
    return scorer._pixels, lambda pixels: scorer.model.get_image_features(pixel_values=pixels)


def preference_throughput(tmp: Path, options: argparse.Namespace) -> None:
    os.environ["TORCH_HOME"] = str(tmp / "torch_home")  # where random_backbones puts AlexNet / Inception too
    os.environ["HF_HOME"] = str(tmp / "hf")
    os.environ["HF_HUB_CACHE"] = str(tmp / "hf" / "hub")
    from evalkit.metrics import hpsv2, imagereward

    if options.preference_small:
        hpsv2.ARCHITECTURE = "ViT-L-14"  # the module's documented test hook (tests monkeypatch it the same way)
        imagereward.VISION = dict(BLIP_VIT_B)  # its documented test hook, likewise
    pick_sizes = VIT_L if options.preference_small else VIT_H
    arch = "ViT-L/14-sized stand-ins" if options.preference_small else "ViT-H/14"
    ir_arch = ("BLIP ViT-B/16 224 stand-in" if options.preference_small else "BLIP ViT-L/16 224") + \
        " + BERT-base cross-attention text encoder + MLP head"
    n, side = options.preference_batch, options.preference_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)
    prompts = [f"a photo of a cat number {i}" for i in range(n)]
    print(f"\npreference metrics: {n} random uint8 images {side}x{side}, one batch per call; evalkit "
          "spec.build(MetricOptions()).score(images, prompts) vs the same model's raw image forward on the images "
          "already preprocessed to 224x224 (imagereward: the whole model forward, image + text + head, on the "
          f"prompts already tokenized); interleaved, median of {options.preference_repeats}; text embeddings "
          f"(imagereward: tokens) cached before timing. Random weights: aesthetic ViT-L/14, pickscore and hpsv2 "
          f"{arch}, imagereward {ir_arch}")
    print(f"{'metric':<11}{'params':>8}{'write s':>9}{'build s':>9}{'evalkit s':>10}{'raw s':>8}{'prep s':>8}"
          f"{'evalkit/s':>10}{'raw/s':>7}{'ratio':>7}  per repeat (evalkit/raw)", flush=True)
    for name in options.preference_metrics:
        start = time.perf_counter()
        if name == "aesthetic":
            write_aesthetic(tmp)
        elif name == "hpsv2":
            write_hpsv2(tmp, hpsv2.ARCHITECTURE)
        elif name == "imagereward":
            write_imagereward(tmp, imagereward.VISION)
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
        preprocess, forward = raw_forward(name, scorer, prompts)  # imagereward: tokenizes (and caches) the prompts
        with torch.no_grad():
            if name not in ("aesthetic", "imagereward"):
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
        if name == "imagereward":  # the raw side is the same computation: the same rewards
            assert torch.allclose(scores, embedding, atol=1e-5), (scores, embedding)
        ours_s, raw_s, prep_s = statistics.median(ours), statistics.median(raw), statistics.median(prep)
        pairs = " ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(ours, raw))
        print(f"{name:<11}{params / 1e6:>7.0f}M{write:>9.1f}{build:>9.1f}{ours_s:>10.2f}{raw_s:>8.2f}{prep_s:>8.3f}"
              f"{n / ours_s:>10.2f}{n / raw_s:>7.2f}{raw_s / ours_s:>7.2f}  {pairs}", flush=True)
        del scorer, model, preprocess, forward, pixels
        gc.collect()
        repo = {"hpsv2": "models--xswu--HPSv2", "pickscore": "models--yuvalkirstain--PickScore_v1",
                "imagereward": "models--THUDM--ImageReward"}.get(name)
        if repo:  # ~4 GB each at ViT-H/14 (~1.8 GB ImageReward): free the disk before the next one
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
