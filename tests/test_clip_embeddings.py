"""clip_score and CMMD share cached image embeddings on one backbone: each image goes through the image tower
once, clip_score's values are unchanged, other backbones compute apart, and the cache key follows the backbone
and its preprocessing."""
from __future__ import annotations

import shutil
from collections import Counter

import open_clip
import pytest
import torch
from PIL import Image

import evalkit
from fake_clip import TINY_CLIP, backbone_string, register_tiny_clip, save_tiny_clip
from evalkit.metrics import METRICS
from evalkit.metrics.base import MetricOptions
from evalkit.metrics.clip import embedding_id, eval_preprocess, parse_backbone
from evalkit.store.folder import RunDir

PROMPTS = "a cat sitting on a mat\nthree apples on a table\n"


@pytest.fixture
def image_tower_calls(monkeypatch):
    """Images encoded per open_clip weights (keyed by the model's first weight tensor), counted at encode_image."""
    calls: Counter = Counter()
    real = open_clip.model.CLIP.encode_image

    def counting(self, image, normalize=False):
        calls[float(next(self.visual.parameters()).flatten()[0])] += image.shape[0]
        return real(self, image, normalize)

    monkeypatch.setattr(open_clip.model.CLIP, "encode_image", counting)
    return calls


def sweep(tmp_path, backbones, metrics=("clip_score", "cmmd")):
    (tmp_path / "p.txt").write_text(PROMPTS)
    return dict(schedulers=["euler", "euler_a"], steps=[2, 6], seeds=2, reference_steps=20,
                prompts=str(tmp_path / "p.txt"), out=str(tmp_path / "run"), metrics=list(metrics),
                backbones=backbones)


def independent_clip_scores(run, path):
    """100 * cos(image, prompt) with open_clip directly on the same weights and PNGs (no evalkit code)."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=str(path))
    tokenizer = open_clip.get_tokenizer(TINY_CLIP)
    images = run.images[run.images.role != "check"]  # what clip_score scores: sweep and references
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(run.dir / p).convert("RGB")) for p in images.path])
        image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(list(images.prompt))).float(), dim=-1)
    return dict(zip(images.key, (100 * (image * text).sum(-1)).tolist()))


@pytest.mark.parametrize("metrics", [("clip_score", "cmmd"), ("cmmd", "clip_score")])
def test_one_backbone_embeds_each_image_once_for_both_metrics(tmp_path, image_tower_calls, metrics, monkeypatch):
    register_tiny_clip()
    path = save_tiny_clip(tmp_path / "clip")
    backbone = backbone_string(path)
    config = sweep(tmp_path, {"clip_score": backbone, "cmmd": backbone}, metrics)
    loads = []
    real_load = open_clip.create_model_and_transforms
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    run = evalkit.score(config)
    assert len(loads) == 1  # one backbone load: embedding and scoring (and CMMD) share the replica
    images = run.images[run.images.role != "check"]  # check images only certify references: never scored
    distinct = images.sha256.nunique()
    assert distinct == len(images) == 2 * 2 * 2 * 2 + 4  # sweep + references, all different images
    assert list(image_tower_calls.values()) == [distinct]  # once per image, for clip_score and CMMD together
    assert len(list(RunDir(run.dir).features_root.iterdir())) == 1
    # `computed`: clip_score counts the (image, prompt) scores it computed, CMMD the images it embedded
    assert run.score.computed == {"clip_score": distinct, "cmmd": 0 if metrics[0] == "clip_score" else distinct}

    scores = run.scores.set_index("key").value
    expected = independent_clip_scores(run, path)
    assert len(scores) == len(expected) and scores.std() > 1  # 20 images' scores, not a constant
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-4)
    # the same values as clip_score's direct path (image tower per call, no cache), to float rounding
    from evalkit.stages.workers import load_images

    direct = METRICS.get("clip_score").build(MetricOptions(backbone=backbone)).score(
        load_images(run.dir / p for p in images.path), list(images.prompt))
    assert torch.allclose(torch.tensor(scores[images.key].to_numpy()), direct.double(), atol=1e-5, rtol=0)

    image_tower_calls.clear()  # a warm rerun embeds nothing
    again = evalkit.score(config)
    assert not image_tower_calls and again.score.computed == {"clip_score": 0, "cmmd": 0}
    assert again.scores.set_index("key").value.equals(scores)


def test_different_backbones_compute_apart(tmp_path, image_tower_calls):
    register_tiny_clip()
    first, second = save_tiny_clip(tmp_path / "a", seed=0), save_tiny_clip(tmp_path / "b", seed=1)
    run = evalkit.score(sweep(tmp_path, {"clip_score": backbone_string(first), "cmmd": backbone_string(second)}))
    distinct = run.images[run.images.role != "check"].sha256.nunique()  # check images are never scored
    assert sorted(image_tower_calls.values()) == [distinct, distinct] and len(image_tower_calls) == 2
    assert len(list(RunDir(run.dir).features_root.iterdir())) == 2
    expected = independent_clip_scores(run, first)
    scores = run.scores.set_index("key").value
    assert max(abs(scores[k] - v) for k, v in expected.items()) < 1e-4


def test_embedding_key_follows_backbone_and_preprocessing(tmp_path, monkeypatch):
    import open_clip.factory as factory
    import open_clip.pretrained as pretrained

    register_tiny_clip()
    path = save_tiny_clip(tmp_path / "clip")
    base = embedding_id(backbone_string(path))
    # the key's preprocessing is the transform open_clip really builds for the backbone
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=str(path))
    assert eval_preprocess(parse_backbone(backbone_string(path))) == repr(preprocess) and repr(preprocess) in base
    # CMMD and clip_score name the same folder for the same backbone, different ones for their defaults
    same = MetricOptions(backbone=backbone_string(path))
    assert METRICS.get("cmmd").feature_id(same) == METRICS.get("clip_score").feature_id(same) == base
    assert "ViT-L-14-336/openai" in METRICS.get("cmmd").feature_id(MetricOptions())
    assert "ViT-B-32-quickgelu/openai" in METRICS.get("clip_score").feature_id(MetricOptions())
    # another checkpoint, or another tag of the same model: another key
    assert embedding_id(backbone_string(tmp_path / "other" / "w.pt")) != base
    assert embedding_id("ViT-B-32/openai") != embedding_id("ViT-B-32/laion2b_s34b_b79k")
    # the same backbone string with another preprocessing: the model's image size, or a tag's mean/std
    bigger = {**factory._MODEL_CONFIGS[TINY_CLIP]}
    bigger["vision_cfg"] = {**bigger["vision_cfg"], "image_size": 48}
    monkeypatch.setitem(factory._MODEL_CONFIGS, TINY_CLIP, bigger)
    assert embedding_id(backbone_string(path)) != base and "size=48" in embedding_id(backbone_string(path))
    monkeypatch.undo()

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    repo = tmp_path / "hf" / "hub" / "models--evalkit--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    shutil.copy(path, repo / "snapshots" / ("0" * 40) / "open_clip_pytorch_model.bin")
    tag = f"{TINY_CLIP}/fake"
    monkeypatch.setitem(pretrained._PRETRAINED, TINY_CLIP, {"fake": pretrained._pcfg(hf_hub="evalkit/tiny-clip/")})
    openai_stats = embedding_id(tag)
    monkeypatch.setitem(pretrained._PRETRAINED, TINY_CLIP, {"fake": pretrained._pcfg(
        hf_hub="evalkit/tiny-clip/", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))})
    assert embedding_id(tag) != openai_stats
    scorer = METRICS.get("clip_score").build(MetricOptions(backbone=tag))  # the tag path builds what the key says
    assert eval_preprocess(parse_backbone(tag)) == scorer.preprocessing and "mean=(0.5, 0.5, 0.5)" in scorer.preprocessing
