"""clip_score: offline, through open_clip's real loading paths, with a tiny random-weight model."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import open_clip
import pytest
import torch

from fake_clip import TINY_CLIP, backbone_string, register_tiny_clip, save_tiny_clip
from evalkit.errors import EvalkitError
from evalkit.metrics.base import ALIGNMENT, IMAGE_PROMPT, MetricOptions
from evalkit.metrics.clip import CLIP_SCORE, DEFAULT_BACKBONE, parse_backbone


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection fails loudly


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0, fmt="pt")


def _images(n: int, h: int = 48, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def _scorer(path: Path, batch_size: int = 16):
    return CLIP_SCORE.build(MetricOptions(backbone=backbone_string(path), batch_size=batch_size))


def test_spec_contract():
    assert CLIP_SCORE.name == "clip_score"
    assert (CLIP_SCORE.inputs, CLIP_SCORE.kind, CLIP_SCORE.higher_is_better) == (IMAGE_PROMPT, ALIGNMENT, True)
    assert CLIP_SCORE.backbone == DEFAULT_BACKBONE == "ViT-B-32-quickgelu/openai"
    for fact in ("bicubic", "CenterCrop", "0.48145466", "0.26862954", "77", "no clamp"):
        assert fact in CLIP_SCORE.preprocessing


def test_parse_backbone(tmp_path):
    assert parse_backbone(None) == parse_backbone("ViT-B-32-quickgelu/openai")
    assert parse_backbone("ViT-L-14/openai").pretrained == "openai"
    local = parse_backbone(f"{TINY_CLIP}@{tmp_path}/w.safetensors")
    assert local.model == TINY_CLIP and local.checkpoint == tmp_path / "w.safetensors"
    for bad in ("ViT-B-32", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32@/x/weights.txt", "@/x.pt"):
        with pytest.raises(EvalkitError):
            parse_backbone(bad)


def test_matches_independent_open_clip(tiny_clip_file):
    scorer = _scorer(tiny_clip_file)
    images = _images(5)
    prompts = ["a cat", "a red car on a road", "a cat", "an astronaut riding a horse", "x"]
    got = scorer.score(images, prompts)
    assert got.shape == (5,) and got.dtype == torch.float32

    # Independent computation straight from open_clip on the same file.
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=str(tiny_clip_file))
    model.eval()
    saved = torch.load(tiny_clip_file)
    assert torch.equal(model.state_dict()["text_projection"], saved["text_projection"])  # weights really loaded
    tokenizer = open_clip.get_tokenizer(TINY_CLIP)
    pixels = torch.stack([preprocess(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert pixels.shape == (5, 3, 32, 32)
    with torch.no_grad():
        img = model.encode_image(pixels)
        txt = model.encode_text(tokenizer(prompts))
    expected = 100 * torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert (expected.abs() > 1e-3).any()  # not trivially zero
    # Features are normalised.
    assert torch.allclose(scorer.image_features(images).norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(scorer.text_features(prompts).norm(dim=-1), torch.ones(5), atol=1e-5)


def test_no_clamp_negative_scores_kept(tiny_clip_file):
    scorer = _scorer(tiny_clip_file)
    prompts = [f"prompt number {i}" for i in range(16)]
    scores = scorer.score(_images(16, seed=3), prompts)
    assert (scores < 0).any(), scores  # random weights give negative cosines; they must not be clamped


def test_safetensors_checkpoint_same_scores(tiny_clip_file, tmp_path):
    st = save_tiny_clip(tmp_path, seed=0, fmt="safetensors")
    images, prompts = _images(3), ["a", "b c", "d"]
    assert torch.allclose(_scorer(st).score(images, prompts), _scorer(tiny_clip_file).score(images, prompts), atol=1e-6)


def test_batch_size_invariant(tiny_clip_file):
    images = torch.cat([_images(5, 48, 40, seed=1), _images(5, 48, 40, seed=2)])
    prompts = [f"a photo of thing {i % 4}" for i in range(10)]
    one = _scorer(tiny_clip_file, batch_size=1).score(images, prompts)
    eight = _scorer(tiny_clip_file, batch_size=8).score(images, prompts)
    assert torch.allclose(one, eight, atol=1e-5, rtol=0)


def test_long_prompt_truncated_and_counted(tiny_clip_file):
    scorer = _scorer(tiny_clip_file)
    long_prompt = " ".join(f"word{i % 7}" for i in range(200))
    with pytest.warns(UserWarning, match=r"\b1 prompt\(s\).*77-token"):
        scores = scorer.score(_images(2), [long_prompt, "a short prompt"])
    assert torch.isfinite(scores).all()
    assert scorer.truncated == 1 and scorer.truncated_prompts == [long_prompt]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: no second warning, no second count
        scorer.score(_images(1), [long_prompt])
    assert scorer.truncated == 1


def test_truncation_boundary(tiny_clip_file):
    # 'a' is one BPE token; with start/end tokens 75 words fill the 77-token context exactly.
    scorer = _scorer(tiny_clip_file)
    fits, too_long = " ".join(["a"] * 75), " ".join(["a"] * 76)
    tokens = scorer.tokenizer([fits, too_long])
    assert tokens.shape == (2, 77)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer.text_features([fits])
    assert scorer.truncated == 0
    with pytest.warns(UserWarning, match=r"\b1 prompt"):
        scorer.text_features([too_long])
    assert scorer.truncated == 1


def test_text_embeddings_cached(tiny_clip_file):
    scorer = _scorer(tiny_clip_file, batch_size=16)
    calls: list[int] = []
    encode_text = scorer.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return encode_text(tokens, *args, **kwargs)

    scorer.model.encode_text = counting
    first = scorer.score(_images(4), ["a", "b", "a", "b"])
    second = scorer.score(_images(4), ["b", "a", "b", "a"])
    assert calls == [2]  # one call, two distinct prompts, nothing re-encoded
    fresh = _scorer(tiny_clip_file)  # cached embeddings give the same scores as freshly encoded ones
    assert torch.allclose(second, fresh.score(_images(4), ["b", "a", "b", "a"]), atol=1e-6)
    assert torch.allclose(first, fresh.score(_images(4), ["a", "b", "a", "b"]), atol=1e-6)
    scorer.score(_images(2), ["a", "c"])
    assert calls == [2, 1]


def test_default_backbone_missing_weights_under_hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    missing = CLIP_SCORE.missing_weights(MetricOptions())
    assert len(missing) == 1
    (weight,) = missing
    path = weight.path()
    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    assert path.is_relative_to(repo / "snapshots") and path.name == "open_clip_pytorch_model.bin"
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_pytorch_model.bin" in weight.fetch
    assert "create_model_and_transforms('ViT-B-32-quickgelu', pretrained='openai')" in weight.fetch
    # The plain ViT-B-32 name with the openai tag needs the very same file.
    (plain,) = CLIP_SCORE.missing_weights(MetricOptions(backbone="ViT-B-32/openai"))
    assert plain.path() == path
    with pytest.raises(EvalkitError, match="hf download"):  # fails fast, no network (sockets refused)
        CLIP_SCORE.build(MetricOptions())


def test_local_checkpoint_weights(tmp_path, tiny_clip_file):
    options = MetricOptions(backbone=backbone_string(tmp_path / "absent.pt"))
    (weight,) = CLIP_SCORE.missing_weights(options)
    assert weight.path() == tmp_path / "absent.pt"
    with pytest.raises(EvalkitError):
        CLIP_SCORE.build(options)
    assert CLIP_SCORE.missing_weights(MetricOptions(backbone=backbone_string(tiny_clip_file))) == []


def test_pretrained_tag_loads_from_hf_cache(tmp_path, monkeypatch, tiny_clip_file):
    """The tag path: open_clip resolves an hf_hub tag from the HF cache under HF_HOME, offline."""
    import open_clip.pretrained as pretrained

    register_tiny_clip()
    monkeypatch.setitem(pretrained._PRETRAINED, TINY_CLIP, {"fake": pretrained._pcfg(hf_hub="evalkit/tiny-clip/")})
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    options = MetricOptions(backbone=f"{TINY_CLIP}/fake")
    (weight,) = CLIP_SCORE.missing_weights(options)
    with pytest.raises(EvalkitError):
        CLIP_SCORE.build(options)

    repo = tmp_path / "hub" / "models--evalkit--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_clip_file, repo / "snapshots" / commit / "open_clip_pytorch_model.bin")
    assert CLIP_SCORE.missing_weights(options) == []
    assert weight.path() == repo / "snapshots" / commit / "open_clip_pytorch_model.bin"

    images, prompts = _images(3), ["a", "b", "c"]
    via_tag = CLIP_SCORE.build(options)
    assert via_tag.backbone == f"{TINY_CLIP}/fake"
    assert torch.allclose(via_tag.score(images, prompts), _scorer(tiny_clip_file).score(images, prompts), atol=1e-6)


def test_quick_gelu_tag_is_honoured(tmp_path, monkeypatch, tiny_clip_file):
    """A tag whose pretrained cfg says quick_gelu builds QuickGELU (open_clip 3.x would only warn)."""
    import open_clip.pretrained as pretrained
    from open_clip.transformer import QuickGELU

    register_tiny_clip()
    monkeypatch.setitem(pretrained._PRETRAINED, TINY_CLIP,
                        {"fakeq": pretrained._pcfg(hf_hub="evalkit/tiny-clip-q/", quick_gelu=True)})
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--evalkit--tiny-clip-q"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_clip_file, repo / "snapshots" / commit / "open_clip_pytorch_model.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "QuickGELU mismatch" warning
        scorer = CLIP_SCORE.build(MetricOptions(backbone=f"{TINY_CLIP}/fakeq"))
    assert isinstance(scorer.model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(scorer.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    plain = _scorer(tiny_clip_file)  # same weights, native GELU: different scores
    images, prompts = _images(3), ["a", "b", "c"]
    assert not torch.allclose(scorer.score(images, prompts), plain.score(images, prompts), atol=1e-4)
