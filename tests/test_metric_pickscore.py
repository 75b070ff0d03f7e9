"""pickscore against the PickScore v1 model card's own computation, offline, on a tiny random CLIPModel.

A fake Hugging Face hub cache (blobs, snapshots/<revision>/ symlinks, refs/main) holds a tiny `CLIPModel` as
yuvalkirstain/PickScore_v1 and, as laion/CLIP-ViT-H-14-laion2B-s32B-b79K, the laion repo's processor files: its
preprocessor_config.json (legacy CLIPFeatureExtractor format), a CLIP BPE tokenizer built from a vocab.json +
merges.txt written here, and a config.json. The reference is the model card's `calc_probs` scoring (one prompt,
`processor(..., padding=True, truncation=True, max_length=77)`, `logit_scale.exp() * text_embs @ image_embs.T`),
written against transformers directly on the snapshot folders, one pair at a time, with the PIL image processor
the card's transformers 4.x used.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.base import METRICS, MetricOptions
from fake_weights import hub_snapshot
from tiny_models import _bytes_to_unicode as bytes_to_unicode

torch.set_num_threads(1)

MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
SCALE = 37.5  # exp(logit_scale) of the tiny model: not CLIPConfig's default, so a hard-coded scale would fail
# The laion repo's preprocessor_config.json (legacy format, as published).
LAION_PREPROCESSOR = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": 224,
}
CLIP_MEAN = np.array(LAION_PREPROCESSOR["image_mean"], dtype=np.float64)
CLIP_STD = np.array(LAION_PREPROCESSOR["image_std"], dtype=np.float64)
MERGES = ["c a", "ca t</w>", "t h", "th e</w>"]
LONG_PROMPT = " ".join(["the cat"] * 50)  # 100 word tokens + start/end: past the 77-token context


@pytest.fixture
def pickscore():
    """The module (registered as `pickscore` by evalkit.metrics, like every built-in)."""
    from evalkit.metrics import pickscore as module

    assert METRICS.get("pickscore") is module.PICKSCORE
    return module





def _write_tokenizer_sources(folder: Path) -> None:
    """vocab.json + merges.txt: the byte alphabet, word-final variants, a few merges, the two special tokens."""
    alphabet = list(bytes_to_unicode().values())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    for merge in MERGES:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")





def build_fake_hub(root: Path, *, weights_name: str = "model.safetensors") -> tuple[Path, Path]:
    """A hub cache at root/hub with both repos; returns (PickScore snapshot, laion snapshot)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    sources = root / "tokenizer-sources"
    _write_tokenizer_sources(sources)
    tokenizer = CLIPTokenizer.from_pretrained(str(sources), model_max_length=77)
    assert tokenizer("the cat")["input_ids"][1:-1] == [tokenizer.convert_tokens_to_ids(t) for t in ("the</w>", "cat</w>")]
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, **ids},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 224, "patch_size": 32},
        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(SCALE))

    staged_model, staged_processor = root / "staged-model", root / "staged-processor"
    model.save_pretrained(staged_model)
    if weights_name == "pytorch_model.bin":  # transformers 5 saves safetensors only: write the legacy file by hand
        (staged_model / "model.safetensors").unlink()
        torch.save(model.state_dict(), staged_model / weights_name)
    assert sorted(p.name for p in staged_model.iterdir()) == sorted(["config.json", weights_name])
    tokenizer.save_pretrained(staged_processor)  # tokenizer.json + tokenizer_config.json
    for name in ("vocab.json", "merges.txt"):  # the laion repo ships them too (transformers 5 reads tokenizer.json)
        shutil.copyfile(sources / name, staged_processor / name)
    (staged_processor / "preprocessor_config.json").write_text(json.dumps(LAION_PREPROCESSOR, indent=2))
    config.save_pretrained(staged_processor)  # the laion repo's config.json: AutoProcessor reads its model_type
    hub = root / "hub"
    return (hub_snapshot(staged_model, hub, MODEL_REPO, "a" * 40), hub_snapshot(staged_processor, hub, PROCESSOR_REPO, "b" * 40))


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("hf_home")
    model_dir, processor_dir = build_fake_hub(root)
    return root, model_dir, processor_dir


@pytest.fixture
def hf_home(fake_hub, monkeypatch) -> tuple[Path, Path, Path]:
    root = fake_hub[0]
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return fake_hub


# -- the independent reference: the model card's computation --------------------------------------------------------
def card_scores(model_dir: Path, processor_dir: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """PickScore per pair as the model card computes it, one (prompt, image) at a time."""
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(str(processor_dir)),
                              tokenizer=CLIPTokenizer.from_pretrained(str(processor_dir)))
    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    out = []
    for image, prompt in zip(images, prompts):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        image_inputs = processor(images=[pil], padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            text_embs = model.get_text_features(**text_inputs)
            image_embs = getattr(image_embs, "pooler_output", image_embs)
            text_embs = getattr(text_embs, "pooler_output", text_embs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
        out.append(float(scores[0]))
    return torch.tensor(out, dtype=torch.float64)


def random_images(seed: int, n: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


# -- tests ----------------------------------------------------------------------------------------------------------
def test_spec_tells_the_truth(pickscore):
    spec = METRICS.get("pickscore")
    assert spec is pickscore.PICKSCORE
    assert (spec.inputs, spec.kind, spec.higher_is_better) == ("image+prompt", "preference", True)
    assert "PickScore_v1" in spec.backbone and "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in spec.backbone
    for fact in ("shortest side -> 224", "bicubic", "center crop 224", "0.48145466", "0.26862954", "77 tokens",
                 "exp(logit_scale)"):
        assert fact in spec.preprocessing
    with pytest.raises(EvalkitError, match="one backbone"):
        spec.weights(MetricOptions(backbone="ViT-B-32/openai"))


@pytest.mark.parametrize("size", [(64, 64), (50, 73), (300, 260)])
def test_scores_match_the_model_card(pickscore, hf_home, no_network, size):
    _, model_dir, processor_dir = hf_home
    spec = METRICS.get("pickscore")
    options = MetricOptions(batch_size=2)
    assert spec.missing_weights(options) == []
    scorer = spec.build(options)
    assert scorer.scale == pytest.approx(SCALE, rel=1e-6)
    images = random_images(sum(size), 3, *size)
    prompts = ["the cat", "a red cube on the table", "the cat"]
    ours = scorer.score(images, prompts)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    reference = card_scores(model_dir, processor_dir, images, prompts)
    diff = (ours.double() - reference).abs().max().item()
    print(f"pickscore {size}: ours {ours.tolist()} card {reference.tolist()} max |diff| {diff:.2e}")
    assert diff <= 1e-5
    assert reference.abs().max() > 1e-3  # not a degenerate comparison of zeros
    # images differ, so do their scores; one image scored twice (batch of one) gives the same value
    assert len({round(v, 6) for v in ours.tolist()}) == 3
    again = scorer.score(images[2:], prompts[2:])
    assert abs(float(again[0]) - float(ours[2])) <= 1e-5


def test_preprocessing_is_what_the_spec_says(pickscore, hf_home):
    """pixel_values = PIL bicubic shortest side -> 224, center crop (top=(h-224)//2), /255, CLIP mean/std."""
    scorer = METRICS.get("pickscore").build(MetricOptions())
    for height, width in [(50, 73), (73, 50), (300, 260), (224, 224)]:
        image = random_images(height * width, 1, height, width)[0]
        short, long = min(height, width), max(height, width)
        new_long = int(224 * long / short)
        new_h, new_w = (224, new_long) if height <= width else (new_long, 224)
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((new_w, new_h), Image.Resampling.BICUBIC)
        top, left = (new_h - 224) // 2, (new_w - 224) // 2
        crop = np.asarray(pil, dtype=np.float64)[top:top + 224, left:left + 224] / 255.0
        expected = torch.from_numpy(((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))
        pixels = scorer._pixels(image[None])[0].double()
        assert pixels.shape == (3, 224, 224)
        assert (pixels - expected).abs().max().item() < 1e-5, (height, width)


def test_long_prompts_are_truncated_with_a_warning(pickscore, hf_home):
    _, model_dir, processor_dir = hf_home
    scorer = METRICS.get("pickscore").build(MetricOptions())
    images = random_images(7, 2, 64, 64)
    with pytest.warns(UserWarning, match="truncated"):
        ours = scorer.score(images, [LONG_PROMPT, "the cat"])
    assert scorer.truncated_prompts == [LONG_PROMPT]
    reference = card_scores(model_dir, processor_dir, images, [LONG_PROMPT, "the cat"])
    assert (ours.double() - reference).abs().max().item() <= 1e-5


def test_hf_hub_cache_wins_over_hf_home(pickscore, fake_hub, monkeypatch, tmp_path):
    root, model_dir, _ = fake_hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    weights = METRICS.get("pickscore").weights(MetricOptions())
    assert all(w.found() for w in weights)
    assert weights[1].path() == model_dir / "model.safetensors"


def test_pytorch_model_bin_is_read_when_it_is_the_one_cached(pickscore, tmp_path, monkeypatch, no_network):
    model_dir, processor_dir = build_fake_hub(tmp_path, weights_name="pytorch_model.bin")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = METRICS.get("pickscore")
    assert spec.missing_weights(MetricOptions()) == []
    assert spec.weights(MetricOptions())[1].path() == model_dir / "pytorch_model.bin"
    images = random_images(3, 2, 64, 64)
    ours = spec.build(MetricOptions()).score(images, ["the cat", "the cat"])
    reference = card_scores(model_dir, processor_dir, images, ["the cat", "the cat"])
    assert (ours.double() - reference).abs().max().item() <= 1e-5


def test_empty_cache_reports_missing_weights_and_refuses_to_build(pickscore, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = METRICS.get("pickscore")
    missing = spec.missing_weights(MetricOptions())
    assert len(missing) == len(spec.weights(MetricOptions())) == 6
    for weight in missing:
        assert str(weight.path()).startswith(str(tmp_path / "empty" / "hub"))
        assert "hf download" in weight.fetch
    assert any(f"hf download {MODEL_REPO} config.json model.safetensors" in w.fetch for w in missing)
    assert any(f"hf download {PROCESSOR_REPO} " in w.fetch and "preprocessor_config.json" in w.fetch for w in missing)
    with pytest.raises(EvalkitError) as info:
        spec.build(MetricOptions())
    message = str(info.value)
    assert "\n" not in message and message.startswith("pickscore: missing weights")
    assert "hf download" in message


def test_one_missing_file_is_named(pickscore, fake_hub, tmp_path, monkeypatch):
    """A cache without the laion tokenizer.json: only that file is missing, with the laion fetch command."""
    root = tmp_path / "partial"
    shutil.copytree(fake_hub[0] / "hub", root / "hub", symlinks=True)
    snapshot = root / "hub" / f"models--{PROCESSOR_REPO.replace('/', '--')}" / "snapshots" / ("b" * 40)
    (snapshot / "tokenizer.json").unlink()
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = METRICS.get("pickscore")
    missing = spec.missing_weights(MetricOptions())
    assert [w.path() for w in missing] == [snapshot / "tokenizer.json"]
    assert f"hf download {PROCESSOR_REPO}" in missing[0].fetch
    with pytest.raises(EvalkitError, match="tokenizer.json"):
        spec.build(MetricOptions())
