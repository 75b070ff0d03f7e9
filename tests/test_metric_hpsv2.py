"""hpsv2: offline, through the real loading path (Hugging Face cache -> open_clip model -> strict state dict).

The real architecture (open_clip ViT-H-14, ~1B parameters) is too big for a unit test, so the checkpoint is made from
the tiny open_clip config of fake_clip.py, written in the official format ({'state_dict': ...} saved with torch.save
as HPS_v2.1_compressed.pt in a hub-cache layout models--xswu--HPSv2/snapshots/<hash>/ + refs/main) and loaded through
evalkit with `hpsv2.ARCHITECTURE`, the module's documented test hook, pointed at the tiny config.
(The real ViT-H-14 architecture, random weights in the official format, was loaded key for key through the same path
once by hand: ~12 GB of memory, too much for every test run; tests/test_metric_aesthetic.py runs a real CLIP
architecture, ViT-L/14, in every run.)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import open_clip
import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.base import IMAGE_PROMPT, METRICS, PREFERENCE, MetricOptions
from fake_clip import TINY_CLIP, register_tiny_clip

torch.set_num_threads(1)

from evalkit.metrics import hpsv2  # noqa: E402

REVISION = "0123456789abcdef0123456789abcdef01234567"
FETCH = "HF_HOME=<same HF_HOME> hf download xswu/HPSv2 HPS_v2.1_compressed.pt"
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection fails loudly


def write_hf_checkpoint(hub: Path, state_dict: dict, filename: str = "HPS_v2.1_compressed.pt") -> Path:
    """The official checkpoint format in the Hugging Face hub cache layout huggingface_hub itself writes."""
    repo = hub / "models--xswu--HPSv2"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    path = snapshot / filename
    torch.save({"state_dict": state_dict}, path)
    return path


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory) -> tuple[Path, Path]:
    """(hub cache, checkpoint) holding a seeded tiny open_clip model's state dict as HPS_v2.1_compressed.pt."""
    register_tiny_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP)
    hub = tmp_path_factory.mktemp("hf") / "hub"
    return hub, write_hf_checkpoint(hub, {k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.fixture
def tiny(monkeypatch, tiny_hub) -> Path:
    """The tiny architecture behind the test hook, the cache found through HF_HUB_CACHE at call time."""
    hub, checkpoint = tiny_hub
    monkeypatch.setattr(hpsv2, "ARCHITECTURE", TINY_CLIP)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return checkpoint


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def reference_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """hpsv2's preprocess_val (ToTensor, ResizeMaxSize(size, fill=0), Normalize), transcribed with torch ops only."""
    x = image.float() / 255.0
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        x = torch.nn.functional.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="bicubic",
                                            align_corners=False, antialias=True)[0]
    pad_h, pad_w = size - x.shape[-2], size - x.shape[-1]
    x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return (x - OPENAI_MEAN) / OPENAI_STD


def independent_scores(checkpoint: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """img_score.py's computation with open_clip directly: model, state dict from the file, tokenizer, cos."""
    model = open_clip.create_model(TINY_CLIP).eval()
    model.load_state_dict(torch.load(checkpoint)["state_dict"])
    tokenizer = open_clip.get_tokenizer(TINY_CLIP)
    size = open_clip.get_model_config(TINY_CLIP)["vision_cfg"]["image_size"]
    out = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts):
            img = model.encode_image(reference_pixels(image, size)[None], normalize=True)
            txt = model.encode_text(tokenizer([prompt]), normalize=True)
            out.append(torch.diagonal(img @ txt.T)[0])
    return torch.stack(out)


def test_spec_contract():
    spec = METRICS.get("hpsv2")
    assert spec is hpsv2.HPSV2
    assert (spec.inputs, spec.kind, spec.higher_is_better) == (IMAGE_PROMPT, PREFERENCE, True)
    assert hpsv2.ARCHITECTURE == "ViT-H-14"  # the reference's; only tests repoint it
    assert "ViT-H-14" in spec.backbone and "HPS_v2.1_compressed.pt" in spec.backbone
    for fact in ("ResizeMaxSize", "longest side -> 224", "bicubic", "no center crop", "0.48145466", "0.26862954",
                 "77", "no logit_scale"):
        assert fact in spec.preprocessing


def test_parse_version():
    assert hpsv2.parse_version(None) == "v2.1" == hpsv2.DEFAULT_VERSION
    assert hpsv2.parse_version("v2.0") == hpsv2.parse_version("2.0") == "v2.0"
    assert hpsv2.parse_version(" V2.1 ") == "v2.1"
    for bad in ("v3", "ViT-H-14/laion2b_s32b_b79k", "2"):
        with pytest.raises(EvalkitError) as info:
            hpsv2.parse_version(bad)
        assert "\n" not in str(info.value) and "v2.0" in str(info.value)


def test_weights_resolved_in_hf_cache_at_call_time(tiny):
    (found,) = hpsv2.HPSV2.weights(MetricOptions())
    assert found.found() and found.path() == tiny and found.fetch == FETCH
    (other,) = hpsv2.HPSV2.missing_weights(MetricOptions(backbone="v2.0"))  # only v2.1 is in this cache
    assert other.fetch == "HF_HOME=<same HF_HOME> hf download xswu/HPSv2 HPS_v2_compressed.pt"


def test_matches_independent_open_clip(tiny):
    prompts = ["a cat with two horns on its head", "a red car", "a cat with two horns on its head",
               "an astronaut riding a horse " * 20, "x"]
    worst = 0.0
    for h, w in ((64, 64), (48, 40), (30, 80), (32, 32), (17, 23)):  # down, letterboxed, as is, upsampled
        images = _images(len(prompts), h, w, seed=h * w)
        scorer = hpsv2.HPSV2.build(MetricOptions(batch_size=2))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = scorer.score(images, prompts)
        assert got.shape == (5,) and got.dtype == torch.float32
        assert any("hpsv2: 1 prompt(s)" in str(w.message) for w in caught) and scorer.truncated == 1
        want = independent_scores(tiny, images, prompts)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (h, w, (got - want).abs().max())
        assert got.abs().max() <= 1.0 + 1e-6  # a cosine: no logit_scale, no x100
        worst = max(worst, float((got - want).abs().max()))
        # batch-size invariant, and the cached-embedding path the score stage uses gives the same values
        alone = hpsv2.HPSV2.build(MetricOptions(batch_size=16))
        with pytest.warns(UserWarning, match="hpsv2: 1 prompt"):
            assert torch.allclose(alone.score(images, prompts), got, atol=1e-6, rtol=0)
        assert torch.allclose(alone.score_embeddings(alone.features(images), prompts), got, atol=1e-6, rtol=0)
    print(f"hpsv2 vs independent open_clip: max |diff| {worst:.2e}")


def test_weights_really_loaded(tiny):
    scorer = hpsv2.HPSV2.build(MetricOptions())
    saved = torch.load(tiny)["state_dict"]
    assert set(scorer.model.state_dict()) == set(saved)
    assert all(torch.equal(scorer.model.state_dict()[k], v) for k, v in saved.items())


def test_letterbox_not_center_crop(tiny):
    """A wide image keeps all its columns and gets black bars: the reference's ResizeMaxSize, not a center crop."""
    scorer = hpsv2.HPSV2.build(MetricOptions())
    image = torch.full((1, 3, 16, 64), 255, dtype=torch.uint8)  # white, 4:1
    pixels = scorer._preprocess(image)[0]
    assert pixels.shape == (3, 32, 32)
    black, white = -OPENAI_MEAN / OPENAI_STD, (1 - OPENAI_MEAN) / OPENAI_STD
    assert torch.allclose(pixels[:, :12], black.expand(3, 12, 32), atol=1e-6)  # (32 - 8) // 2 rows on top
    assert torch.allclose(pixels[:, 20:], black.expand(3, 12, 32), atol=1e-6)
    assert torch.allclose(pixels[:, 12:20], white.expand(3, 8, 32), atol=1e-4)
    assert torch.equal(pixels, reference_pixels(image[0], 32))


def test_missing_weights_reported_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    (missing,) = hpsv2.HPSV2.missing_weights(MetricOptions())
    assert missing.fetch == FETCH and str(missing.path()).startswith(str(tmp_path / "empty-hub"))
    with pytest.raises(EvalkitError) as info:
        hpsv2.HPSV2.build(MetricOptions())
    message = str(info.value)
    assert "\n" not in message and FETCH in message and message.startswith("hpsv2: missing weights")
    assert not (tmp_path / "empty-hub").exists()  # nothing fetched, nothing written


def test_checkpoint_that_does_not_fit_is_one_line(monkeypatch, tmp_path, tiny_hub):
    monkeypatch.setattr(hpsv2, "ARCHITECTURE", TINY_CLIP)
    state = dict(torch.load(tiny_hub[1])["state_dict"])
    cases = {
        "keys": {**{k: v for k, v in state.items() if k != "logit_scale"}, "head.weight": torch.zeros(1)},
        "shape": {**state, "text_projection": torch.zeros(3, 3)},
    }
    for case, broken in cases.items():
        hub = tmp_path / case / "hub"
        write_hf_checkpoint(hub, broken)
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
        with pytest.raises(EvalkitError) as info:
            hpsv2.HPSV2.build(MetricOptions())
        assert "\n" not in str(info.value) and "does not fit" in str(info.value), case
    hub = tmp_path / "plain" / "hub"
    write_hf_checkpoint(hub, {})
    path = next(hub.rglob("HPS_v2.1_compressed.pt"))
    torch.save(state, path)  # a bare state dict, not {'state_dict': ...}
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(EvalkitError, match="no 'state_dict'"):
        hpsv2.HPSV2.build(MetricOptions())


def test_embedding_id_names_version_architecture_and_preprocessing(tiny):
    v21, v20 = hpsv2.embedding_id(MetricOptions()), hpsv2.embedding_id(MetricOptions(backbone="v2.0"))
    assert v21 != v20 and "HPS_v2.1_compressed.pt" in v21 and TINY_CLIP in v21 and "ResizeLongestPad(size=32" in v21
    assert hpsv2.HPSV2.feature_id(MetricOptions()) == v21
