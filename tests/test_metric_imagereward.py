"""imagereward against the official ImageReward computation, offline, on a tiny checkpoint in the official format.

The real model (BLIP ViT-L/16 + BERT-base) is too big for a unit test, so the checkpoint is made by a small
re-implementation of the official modules written here, plain torch, from the reference source
(github.com/THUDM/ImageReward, image-reward 1.5: ImageReward/ImageReward.py, models/BLIP/{blip,blip_pretrain,vit,med}.py):
the same module tree, hence the same state-dict keys (blip.visual_encoder.*, blip.text_encoder.* with its persistent
position_ids buffer, blip.vision_proj/text_proj, mlp.layers.*), with a small med_config.json (2 layers, width 32;
its encoder_width 768 is overwritten by the vision width, 48, as BLIP_Pretrain does) and a small ViT (patch 32 at 224,
width 48, depth 2) behind `imagereward.VISION`, the module's documented test hook. It is saved with torch.save as
ImageReward.pt next to med_config.json in a hub-cache layout (models--THUDM--ImageReward/blobs, snapshots/<rev>/
symlinks, refs/main), with a BERT WordPiece vocab.txt + tokenizer_config.json as models--bert-base-uncased.

The reference score is the official `ImageReward.score(prompt, pil_image)` path on those modules, one pair at a time:
the tokenizer called as the reference calls it (BertTokenizer + [DEC]/[ENC], padding max_length 35, truncation), the
image through Resize(224, bicubic) + CenterCrop(224) + ToTensor + Normalize written with PIL and numpy (not
torchvision), visual_encoder -> text_encoder(ids, mask, image tokens) -> [:, 0] -> mlp -> (r - mean) / std.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.metrics.base import IMAGE_PROMPT, METRICS, PREFERENCE, MetricOptions
from fake_weights import hub_snapshot

torch.set_num_threads(1)

from evalkit.metrics import imagereward

REAL_VISION = dict(imagereward.VISION)

HF_REPO = "THUDM/ImageReward"
TOKENIZER_REPO = "bert-base-uncased"
TINY_VISION = {"image_size": 224, "patch_size": 32, "width": 48, "depth": 2, "heads": 4, "mlp_ratio": 4.0}
WORDS = ["a", "the", "cat", "red", "cube", "on", "table", "dog", "photo", "of", "blue", "sky", "##s", ",", "."]
VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TINY_MED = {  # BLIP's med_config.json fields, small
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 37,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 4,
    "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(VOCAB) + 2,  # + [DEC], [ENC]
    "encoder_width": 768, "add_cross_attention": True,
}
MEAN, STD = 0.16717362830052426, 1.0333394966054072
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
LONG_PROMPT = " ".join(["the red cat"] * 15)  # 45 word tokens + [CLS]/[SEP]: past the 35-token context
PROMPTS = ["a red cube on the table", "the cat", "a photo of a dog , blue sky ."]


# -- the official modules, re-implemented from the reference source ------------------------------------------------
class PatchEmbed(nn.Module):  # timm PatchEmbed: conv, flatten(2).transpose(1, 2), no norm
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):  # vit.py Attention
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):  # vit.py Mlp: fc1, nn.GELU(), fc2
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):  # vit.py Block, LayerNorm eps 1e-6, pre-norm
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):  # vit.py VisionTransformer.forward
    def __init__(self, image_size, patch_size, width, depth, heads, mlp_ratio):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2 + 1, width))
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, :x.size(1), :]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class BertEmbeddings(nn.Module):  # med.py: word + absolute position, LayerNorm; position_ids a persistent buffer
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=c["pad_token_id"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"]).expand((1, -1)))

    def forward(self, ids):
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(self.position_ids[:, :ids.shape[1]]))


class BertSelfAttention(nn.Module):
    def __init__(self, c, kv_width: int):
        super().__init__()
        self.heads, self.head = c["num_attention_heads"], c["hidden_size"] // c["num_attention_heads"]
        self.query = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.key, self.value = nn.Linear(kv_width, c["hidden_size"]), nn.Linear(kv_width, c["hidden_size"])

    def split(self, x):
        return x.view(*x.shape[:-1], self.heads, self.head).permute(0, 2, 1, 3)

    def forward(self, h, mask, states):
        q, k, v = self.split(self.query(h)), self.split(self.key(states)), self.split(self.value(states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head) + mask
        context = torch.matmul(nn.Softmax(dim=-1)(scores), v).permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], -1)


class BertSelfOutput(nn.Module):
    def __init__(self, c, inner: int | None = None):
        super().__init__()
        self.dense = nn.Linear(inner or c["hidden_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, c, kv_width: int):
        super().__init__()
        self.self, self.output = BertSelfAttention(c, kv_width), BertSelfOutput(c)

    def forward(self, h, mask, states):
        return self.output(self.self(h, mask, states), h)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))  # ACT2FN['gelu']: exact erf GELU


class BertLayer(nn.Module):  # med.py BertLayer, mode='multimodal': self-attention, cross-attention, feed-forward
    def __init__(self, c, encoder_width: int):
        super().__init__()
        self.attention = BertAttention(c, c["hidden_size"])
        self.crossattention = BertAttention(c, encoder_width)
        self.intermediate = BertIntermediate(c)
        self.output = BertSelfOutput(c, c["intermediate_size"])

    def forward(self, h, mask, image, image_mask):
        h = self.attention(h, mask, h)
        h = self.crossattention(h, image_mask, image)
        return self.output(self.intermediate(h), h)


class BertEncoder(nn.Module):
    def __init__(self, c, encoder_width):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c, encoder_width) for _ in range(c["num_hidden_layers"])])


class BertModel(nn.Module):  # med.py BertModel(add_pooling_layer=False).forward, is_decoder=False
    def __init__(self, c, encoder_width):
        super().__init__()
        self.embeddings, self.encoder = BertEmbeddings(c), BertEncoder(c, encoder_width)

    def forward(self, ids, attention_mask, image, image_atts):
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0  # get_extended_attention_mask, encoder
        image_mask = (1.0 - image_atts[:, None, None, :].float()) * torch.finfo(torch.float32).min  # invert_attention_mask
        h = self.embeddings(ids)
        for layer in self.encoder.layer:
            h = layer(h, mask, image, image_mask)
        return h


class BLIPPretrain(nn.Module):  # blip_pretrain.py BLIP_Pretrain: encoder_width := vision width
    def __init__(self, med, vision):
        super().__init__()
        self.visual_encoder = VisionTransformer(**vision)
        self.text_encoder = BertModel(med, encoder_width=vision["width"])
        self.vision_proj = nn.Linear(vision["width"], 256)
        self.text_proj = nn.Linear(med["hidden_size"], 256)


class MLP(nn.Module):  # ImageReward.py MLP: no activations
    def __init__(self, width):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


class OfficialImageReward(nn.Module):
    def __init__(self, med, vision):
        super().__init__()
        self.blip = BLIPPretrain(med, vision)
        self.mlp = MLP(med["hidden_size"])  # MLP(768) in the reference, whose hidden_size is 768

    @torch.no_grad()
    def score(self, tokenizer, prompt: str, pixels: torch.Tensor) -> float:
        """ImageReward.score(prompt, image) after preprocess: one pair."""
        text_input = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image_embeds = self.blip.visual_encoder(pixels[None])
        image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
        text = self.blip.text_encoder(text_input.input_ids, text_input.attention_mask, image_embeds, image_atts)
        rewards = (self.mlp(text[:, 0, :].float()) - MEAN) / STD
        return rewards.item()


def official_tokenizer(folder: Path):
    """blip.py init_tokenizer(), on the fake bert-base-uncased snapshot."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def official_preprocess(image: torch.Tensor) -> torch.Tensor:
    """_transform(224) with PIL and numpy: shortest side -> 224 (PIL bicubic, long int(224*long/short)), center crop
    224 (top = int(round((h - 224) / 2))), /255, CLIP mean/std."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    w, h = pil.size
    if w <= h:
        new_w, new_h = 224, int(224 * h / w)
    else:
        new_w, new_h = int(224 * w / h), 224
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = round((new_h - 224) / 2.0), round((new_w - 224) / 2.0)  # torchvision: int(round(...))
    array = np.asarray(pil, dtype=np.float32)[top:top + 224, left:left + 224] / np.float32(255.0)
    array = (array - CLIP_MEAN.astype(np.float32)) / CLIP_STD.astype(np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def make_official(seed: int = 0) -> OfficialImageReward:
    """The official module tree with seeded random weights large enough to matter (LayerNorms not identity)."""
    torch.manual_seed(seed)
    model = OfficialImageReward(TINY_MED, TINY_VISION).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ("LayerNorm" in name or "norm" in name.split(".")[-2]) and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif param.ndim >= 2 and "embed" not in name and "token" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn_like(param) * 1.5 / math.sqrt(fan_in))
            else:
                param.copy_(0.3 * torch.randn_like(param))
    return model


# -- the fake hub cache ---------------------------------------------------------------------------------------------



def build_fake_hub(root: Path, state: dict | None = None, med: dict | None = None) -> tuple[Path, Path]:
    """root/hub with THUDM/ImageReward (ImageReward.pt, med_config.json) and bert-base-uncased (vocab.txt,
    tokenizer_config.json); returns (ImageReward snapshot, bert snapshot)."""
    staged_model, staged_tokenizer = root / "staged-model", root / "staged-tokenizer"
    staged_model.mkdir(parents=True)
    staged_tokenizer.mkdir(parents=True)
    torch.save(state if state is not None else make_official().state_dict(), staged_model / "ImageReward.pt")
    (staged_model / "med_config.json").write_text(json.dumps(med or TINY_MED, indent=2))
    (staged_tokenizer / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (staged_tokenizer / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    hub = root / "hub"
    return hub_snapshot(staged_model, hub, HF_REPO, "c" * 40), hub_snapshot(staged_tokenizer, hub, TOKENIZER_REPO, "d" * 40)


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection fails loudly


@pytest.fixture(autouse=True)
def tiny_vision(monkeypatch):
    monkeypatch.setattr(imagereward, "VISION", dict(TINY_VISION))


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("hf_home")
    model_dir, tokenizer_dir = build_fake_hub(root)
    return root, model_dir, tokenizer_dir


@pytest.fixture
def hf_home(fake_hub, monkeypatch) -> tuple[Path, Path, Path]:
    monkeypatch.setenv("HF_HOME", str(fake_hub[0]))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return fake_hub


def official_scores(model_dir: Path, tokenizer_dir: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """The reference path on the checkpoint as the official loader reads it, one pair at a time."""
    official = OfficialImageReward(json.loads((model_dir / "med_config.json").read_text()), TINY_VISION).eval()
    result = official.load_state_dict(torch.load(model_dir / "ImageReward.pt", map_location="cpu"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    tokenizer = official_tokenizer(tokenizer_dir)
    return torch.tensor([official.score(tokenizer, p, official_preprocess(i)) for i, p in zip(images, prompts)],
                        dtype=torch.float64)


def random_images(seed: int, n: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


# -- tests ----------------------------------------------------------------------------------------------------------
def test_spec_tells_the_truth():
    spec = METRICS.get("imagereward")
    assert spec is imagereward.IMAGEREWARD
    assert (spec.inputs, spec.kind, spec.higher_is_better) == (IMAGE_PROMPT, PREFERENCE, True)
    assert "THUDM/ImageReward" in spec.backbone and "bert-base-uncased" in spec.backbone
    for fact in ("shortest side -> 224", "bicubic", "CenterCrop(224)", "0.48145466", "0.26862954", "max_length 35",
                 "0.16717362830052426", "1.0333394966054072"):
        assert fact in spec.preprocessing
    assert imagereward.MEAN == MEAN and imagereward.STD == STD and imagereward.MAX_LENGTH == 35
    with pytest.raises(EvalkitError, match="one backbone"):
        spec.weights(MetricOptions(backbone="ViT-B-32/openai"))


def test_real_architecture_constants():
    """create_vit('large', 224) of the reference (read before the autouse fixture's patch)."""
    assert REAL_VISION == {"image_size": 224, "patch_size": 16, "width": 1024, "depth": 24, "heads": 16,
                           "mlp_ratio": 4.0}
    assert imagereward.VISION_LAYER_NORM_EPS == 1e-6


def test_checkpoint_loads_key_for_key(hf_home):
    """Every official key lands in exactly the model tensor it belongs to, or is one of the documented unused ones;
    nothing is left at its random initialisation."""
    _, model_dir, _ = hf_home
    state = torch.load(model_dir / "ImageReward.pt", map_location="cpu")
    official_keys = set(OfficialImageReward(TINY_MED, TINY_VISION).state_dict())
    assert set(state) == official_keys  # the tiny checkpoint has the official layout
    model = imagereward.load_model(model_dir / "ImageReward.pt", model_dir / "med_config.json")
    ours = model.state_dict()
    placed = {}
    for key, value in state.items():
        target = imagereward.model_key(key)
        if key in imagereward.UNUSED_KEYS or key == imagereward.POSITION_IDS:
            assert target is None
            continue
        assert target in ours, key
        assert torch.equal(ours[target], value.float()), key
        placed[target] = key
    assert set(placed) == set(ours)  # every model tensor comes from exactly one official key
    assert len(placed) == len(state) - len(imagereward.UNUSED_KEYS) - 1
    # the cross-attention reads the vision width (48), not med_config's encoder_width (768)
    assert ours["text.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 48)
    # the vision blocks map block for block
    assert imagereward.model_key("blip.visual_encoder.blocks.1.attn.qkv.weight") == \
        "vision.encoder.layers.1.self_attn.qkv.weight"
    assert imagereward.model_key("blip.visual_encoder.norm.bias") == "vision.post_layernorm.bias"
    assert imagereward.model_key("mlp.layers.7.weight") == "mlp.7.weight"


@pytest.mark.parametrize("size", [(64, 64), (50, 73), (300, 261), (224, 224)])
def test_scores_match_the_official_computation(hf_home, size):
    _, model_dir, tokenizer_dir = hf_home
    spec = METRICS.get("imagereward")
    options = MetricOptions(batch_size=2)
    assert spec.missing_weights(options) == []
    scorer = spec.build(options)
    images = random_images(sum(size), 3, *size)
    ours = scorer.score(images, PROMPTS)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    reference = official_scores(model_dir, tokenizer_dir, images, PROMPTS)
    diff = (ours.double() - reference).abs().max().item()
    print(f"imagereward {size}: ours {ours.tolist()} official {reference.tolist()} max |diff| {diff:.2e}")
    assert diff <= 1e-5
    assert reference.std() > 1e-2  # not a degenerate comparison
    again = scorer.score(images[2:], PROMPTS[2:])  # batch of one, the cached prompt
    assert abs(float(again[0]) - float(ours[2])) <= 1e-5


def test_image_and_prompt_both_matter(hf_home):
    scorer = METRICS.get("imagereward").build(MetricOptions())
    images = random_images(5, 2, 64, 64)
    same_image = scorer.score(images[:1].repeat(2, 1, 1, 1), ["the cat", "a red cube on the table"])
    same_prompt = scorer.score(images, ["the cat", "the cat"])
    assert abs(float(same_image[0] - same_image[1])) > 1e-4
    assert abs(float(same_prompt[0] - same_prompt[1])) > 1e-4


def test_tokenization_is_the_references(hf_home):
    """[CLS] ... [SEP] then [PAD] to 35; the first token stays [CLS] (ImageReward does not put [ENC] there)."""
    scorer = METRICS.get("imagereward").build(MetricOptions())
    ids, mask = scorer.tokens(["a red cube on the table"])
    expected = [VOCAB.index(t) for t in ["[CLS]", "a", "red", "cube", "on", "the", "table", "[SEP]"]]
    assert ids.shape == mask.shape == (1, 35)
    assert ids[0].tolist() == expected + [0] * (35 - len(expected))
    assert mask[0].tolist() == [1] * len(expected) + [0] * (35 - len(expected))
    # init_tokenizer's special tokens: [DEC] and [ENC] after the vocabulary (30522 and 30523 for bert-base-uncased)
    assert scorer.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(VOCAB), len(VOCAB) + 1]


def test_preprocessing_is_what_the_spec_says(hf_home):
    scorer = METRICS.get("imagereward").build(MetricOptions())
    for height, width in [(50, 73), (73, 50), (300, 261), (225, 300), (224, 224), (512, 512)]:
        image = random_images(height * width, 1, height, width)[0]
        pixels = scorer._pixels(image[None])[0]
        assert pixels.shape == (3, 224, 224)
        assert (pixels - official_preprocess(image)).abs().max().item() < 1e-5, (height, width)


def test_long_prompts_are_truncated_with_a_warning(hf_home):
    _, model_dir, tokenizer_dir = hf_home
    scorer = METRICS.get("imagereward").build(MetricOptions())
    images = random_images(7, 2, 64, 64)
    with pytest.warns(UserWarning, match="truncated"):
        ours = scorer.score(images, [LONG_PROMPT, "the cat"])
    assert scorer.truncated_prompts == [LONG_PROMPT]
    ids, _ = scorer.tokens([LONG_PROMPT])
    assert ids.shape == (1, 35) and ids[0, -1].item() == VOCAB.index("[SEP]")
    reference = official_scores(model_dir, tokenizer_dir, images, [LONG_PROMPT, "the cat"])
    assert (ours.double() - reference).abs().max().item() <= 1e-5


def test_hf_hub_cache_wins_over_hf_home(fake_hub, monkeypatch, tmp_path):
    root, model_dir, tokenizer_dir = fake_hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    files = METRICS.get("imagereward").weights(MetricOptions())
    assert [w.path() for w in files] == [model_dir / "ImageReward.pt", model_dir / "med_config.json",
                                         tokenizer_dir / "vocab.txt", tokenizer_dir / "tokenizer_config.json"]


def test_empty_cache_reports_missing_weights_and_refuses_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = METRICS.get("imagereward")
    missing = spec.missing_weights(MetricOptions())
    assert len(missing) == len(spec.weights(MetricOptions())) == 4
    for weight in missing:
        assert str(weight.path()).startswith(str(tmp_path / "empty" / "hub"))
    assert missing[0].fetch == "HF_HOME=<same HF_HOME> hf download THUDM/ImageReward ImageReward.pt med_config.json"
    assert missing[2].fetch == "HF_HOME=<same HF_HOME> hf download bert-base-uncased vocab.txt tokenizer_config.json"
    with pytest.raises(EvalkitError) as info:
        spec.build(MetricOptions())
    message = str(info.value)
    assert "\n" not in message and message.startswith("imagereward: missing weights")
    assert "hf download THUDM/ImageReward" in message and "hf download bert-base-uncased" in message


def test_one_missing_file_is_named(fake_hub, tmp_path, monkeypatch):
    root = tmp_path / "partial"
    shutil.copytree(fake_hub[0] / "hub", root / "hub", symlinks=True)
    snapshot = root / "hub" / "models--bert-base-uncased" / "snapshots" / ("d" * 40)
    (snapshot / "vocab.txt").unlink()
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = METRICS.get("imagereward")
    assert [w.path() for w in spec.missing_weights(MetricOptions())] == [snapshot / "vocab.txt"]
    with pytest.raises(EvalkitError, match="vocab.txt"):
        spec.build(MetricOptions())


@pytest.mark.parametrize("change", ["extra key", "missing key", "missing projection", "wrong shape", "not a dict"])
def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, monkeypatch, change):
    state = make_official().state_dict()
    if change == "extra key":
        state["blip.text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 3)
    elif change == "missing key":
        del state["blip.text_encoder.encoder.layer.1.crossattention.self.value.bias"]
    elif change == "missing projection":
        del state["blip.text_proj.weight"]
    elif change == "wrong shape":
        state["mlp.layers.0.weight"] = torch.zeros(1024, 31)
    else:
        state = [1, 2, 3]
    build_fake_hub(tmp_path, state=state)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(EvalkitError) as info:
        METRICS.get("imagereward").build(MetricOptions())
    message = str(info.value)
    assert "\n" not in message and message.startswith("imagereward: ")


@pytest.mark.parametrize("position_ids", ["absent", "not arange"])
def test_position_ids_are_optional_and_checked(tmp_path, monkeypatch, position_ids):
    state = make_official().state_dict()
    if position_ids == "absent":
        del state["blip.text_encoder.embeddings.position_ids"]
    else:
        state["blip.text_encoder.embeddings.position_ids"] = torch.arange(40).flip(0)[None]
    build_fake_hub(tmp_path, state=state)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    if position_ids == "absent":
        assert METRICS.get("imagereward").build(MetricOptions()).score(random_images(1, 1, 32, 32), ["a cat"]).shape == (1,)
    else:
        with pytest.raises(EvalkitError, match="position_ids"):
            METRICS.get("imagereward").build(MetricOptions())
