"""`builtin:mixture`: an exact diffusion model that real diffusers schedulers can sample.

The data distribution is an isotropic Gaussian mixture in pixel space ([-1, 1], shape 3xHxW)
around K = 20 procedurally drawn prototype images (faces, animals, landscapes, words, counts,
textures, abstract shapes), each tied to a caption. Because the noisy marginals of a Gaussian
mixture are known in closed form, the denoiser is exact: every error in a sampled image is the
scheduler's, and the probability-flow ODE can be solved to high accuracy (`ground_truth`).

Component std
-------------
Every component has the same isotropic std ``COMPONENT_STD = s = 0.15`` (in [-1, 1] units, i.e.
0.075 in [0, 1] units). It sets the per-seed variety (each seed gives the prototype plus its own
grain of about 7.5% of the value range) and how far the denoiser moves between the schedule's
smallest noise level sigma_min = 0.029 and sigma = 0: the data-scale grain is s^2/sqrt(s^2+sigma^2),
so the larger s is relative to sigma_min, the smaller the floor that the schedulers' final jump
to sigma = 0 leaves. 0.15 is visible but does not drown the prototypes. With `trailing` spacing the
last sigma before 0 is sigma_table[1000/N - 1], so every non-Karras scheduler has a first-order
floor from that final jump: measured mean abs error ~0.008-0.009 ([0, 1] units) at N = 100 and
~0.004-0.005 at N = 200 (s = 0.1 would make it ~15% larger, s = 0.2 ~15% smaller).

Euler-family schedulers (Euler, Euler a, Heun) with `trailing`/`linspace` spacing start from
sigma_max * eps rather than sqrt(1 + sigma_max^2) * eps (their `init_noise_sigma`); `ground_truth`
uses the latter (what DDIM/DPM/UniPC start from). The difference moves the solution by ~1.3e-4
mean abs (7e-4 max), a floor under any Euler-family result.

Prompt -> components rule
-------------------------
1. Lower-case the prompt and split it into words: maximal runs of ``[a-z0-9]`` (punctuation and
   everything else separates words, so "person's" gives "person" and "s").
2. A word matches a keyword if the word itself, or the word with a plural ending removed
   ("-s", "-es", or "-ies" -> "-y"), is in the component's keyword set ("cats" matches "cat",
   "fishes" matches "fish", "dots" matches "dot").
3. Every component with at least one matching word is selected; selected components get equal
   weight.
4. If no component matches, 3 components are chosen by a stable hash: the words joined by single
   spaces form the key, components are ordered by ``sha256(f"{key}|{k}")`` (hex digest) and the
   first 3 are taken (never Python's ``hash()``, so the choice is the same in every process).
5. A prompt with no words at all ("" or only punctuation) is the unconditional model, the
   equal-weight mixture over all K components, exactly what classifier-free guidance uses as
   its unconditional branch (like the empty-prompt embedding in diffusers pipelines).

Examples (component indices into ``PROTOTYPES``)::

    "a photo of a cat"          -> (2,)             cat face
    "Two cats!"                 -> (2, 12)          cat face, two dots
    "a portrait of a woman"     -> (0, 1)           face, standing figure
    "a landscape"               -> (5, 6, 7)        sun over hills, sea and sky, mountains
    "the word HELLO"            -> (8, 10)          HELLO, YES  ("word" is a text keyword)
    "some texture"              -> (15, 16, 17)     checkerboard, stripes, brick wall
    "an astronaut riding a horse" -> (0, 11, 19)  no keyword matches: 3 chosen by sha256

Closed form
-----------
With x = x0 + sigma * eps (variance-exploding form) the noisy marginal is
p_sigma = sum_k w_k N(mu_k, (s^2 + sigma^2) I); responsibilities
r_k ~ w_k exp(-|x - mu_k|^2 / (2 (s^2 + sigma^2))) (softmax in float64), the denoiser is
D(x, sigma) = sum_k r_k [mu_k + s^2/(s^2 + sigma^2) (x - mu_k)] and eps_hat = (x - D) / sigma.

How schedulers call the model
-----------------------------
`MixtureDenoiser.forward(sample, timestep, encoder_hidden_states)` takes the VP-form x_t (what
every diffusers scheduler hands the model after `scale_model_input`), maps the (possibly
fractional) timestep to sigma exactly like `EulerDiscreteScheduler.set_timesteps` does
(sigma_table[t] = sqrt((1 - abar_t) / abar_t), linear interpolation in sigma), converts to the VE
x = x_t * sqrt(1 + sigma^2), and returns epsilon. `encoder_hidden_states` is a (B, K) tensor of
component weights. Every row is computed on its own, so batch size never changes a result.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

VERSION = "1"
COMPONENT_STD = 0.15  # s: isotropic std of every component, in [-1, 1] pixel units
DEFAULT_SIZE = 64
NUM_FALLBACK_COMPONENTS = 3
_CANVAS = 256  # prototypes are drawn at this size, then resized (LANCZOS) to the requested size


def _make_scheduler_config() -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler

    euler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=0,
    )
    config = dict(euler.config)
    # EulerDiscreteScheduler has no `set_alpha_to_one` argument (it raises if given one), but
    # DDIM/PNDM read it from the config: True makes their last step land on abar = 1 (sigma = 0).
    config["set_alpha_to_one"] = True
    return config


#: The model's own scheduler config (SD-1.5-like betas, `trailing` spacing so that N = 1 works).
#: Build samplers with `evalkit.schedulers.build_scheduler(get_scheduler(name), SCHEDULER_CONFIG)`.
SCHEDULER_CONFIG: dict[str, Any] = _make_scheduler_config()


@functools.lru_cache(maxsize=1)
def sigma_table() -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0..999, computed exactly as diffusers' Euler does."""
    from diffusers import EulerDiscreteScheduler

    acp = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod  # float32, as in diffusers
    table = (((1 - acp) / acp) ** 0.5).numpy().astype(np.float64)
    table.setflags(write=False)
    return table


def sigma_of_timestep(timestep: Any) -> np.ndarray:
    """sigma for a (possibly fractional) timestep or array of them: np.interp over arange(1000)."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.detach().to("cpu", torch.float64).numpy()
    else:
        t = np.asarray(timestep, dtype=np.float64)
    table = sigma_table()
    return np.interp(t, np.arange(len(table), dtype=np.float64), table)


# --------------------------------------------------------------------------------------------
# Prototypes
# --------------------------------------------------------------------------------------------

Color = tuple[int, int, int]


def _font() -> Any:
    return ImageFont.load_default()


def _text_image(text: str, fg: Color, bg: Color, width: int, height: int) -> Image.Image:
    """`text` rendered with PIL's default font, cropped to its ink and scaled (nearest) into width x height."""
    font = _font()
    probe = Image.new("RGB", (8 * len(text) * 4 + 32, 64), bg)
    d = ImageDraw.Draw(probe)
    d.text((8, 8), text, fill=fg, font=font)
    left, top, right, bottom = d.textbbox((8, 8), text, font=font)
    glyphs = probe.crop((left, top, right, bottom))
    return glyphs.resize((width, height), Image.NEAREST)


def _sky(d: ImageDraw.ImageDraw, top: Color, bottom: Color, y1: int = _CANVAS) -> None:
    for y in range(y1):
        f = y / max(y1 - 1, 1)
        d.line([(0, y), (_CANVAS, y)], fill=tuple(int(round(a + (b - a) * f)) for a, b in zip(top, bottom)))


def _draw_face(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, _CANVAS, _CANVAS], fill=(70, 110, 170))
    d.ellipse([28, 10, 228, 200], fill=(60, 40, 25))  # hair
    d.ellipse([48, 40, 208, 230], fill=(236, 190, 150))  # face
    d.ellipse([82, 100, 112, 125], fill=(255, 255, 255))
    d.ellipse([144, 100, 174, 125], fill=(255, 255, 255))
    d.ellipse([91, 104, 105, 121], fill=(40, 30, 20))
    d.ellipse([153, 104, 167, 121], fill=(40, 30, 20))
    d.polygon([(128, 125), (116, 160), (138, 160)], fill=(210, 150, 115))
    d.arc([88, 150, 168, 205], start=20, end=160, fill=(170, 40, 50), width=7)


def _draw_figure(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (150, 200, 250), (220, 235, 255), 190)
    d.rectangle([0, 190, _CANVAS, _CANVAS], fill=(70, 150, 60))
    d.ellipse([104, 30, 152, 78], fill=(236, 190, 150))  # head
    d.rectangle([110, 80, 146, 150], fill=(200, 40, 40))  # shirt
    d.line([(112, 88), (70, 130)], fill=(236, 190, 150), width=10)  # arms
    d.line([(144, 88), (186, 130)], fill=(236, 190, 150), width=10)
    d.line([(118, 150), (100, 215)], fill=(30, 40, 120), width=14)  # legs
    d.line([(138, 150), (156, 215)], fill=(30, 40, 120), width=14)


def _draw_cat(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, _CANVAS, _CANVAS], fill=(120, 190, 140))
    orange, dark = (235, 140, 40), (150, 80, 20)
    d.polygon([(40, 120), (60, 20), (120, 80)], fill=orange)  # ears
    d.polygon([(216, 120), (196, 20), (136, 80)], fill=orange)
    d.polygon([(62, 95), (68, 45), (102, 80)], fill=(250, 170, 170))
    d.polygon([(194, 95), (188, 45), (154, 80)], fill=(250, 170, 170))
    d.ellipse([36, 60, 220, 236], fill=orange)  # head
    for y in (90, 108, 126):
        d.line([(110, y - 20), (128, y)], fill=dark, width=5)
        d.line([(146, y - 20), (128, y)], fill=dark, width=5)
    d.ellipse([76, 120, 116, 160], fill=(120, 220, 60))  # eyes
    d.ellipse([140, 120, 180, 160], fill=(120, 220, 60))
    d.ellipse([91, 122, 101, 158], fill=(10, 10, 10))
    d.ellipse([155, 122, 165, 158], fill=(10, 10, 10))
    d.polygon([(116, 172), (140, 172), (128, 186)], fill=(240, 110, 130))  # nose
    for dy in (-8, 4, 16):  # whiskers
        d.line([(110, 185), (40, 180 + dy)], fill=(250, 250, 250), width=3)
        d.line([(146, 185), (216, 180 + dy)], fill=(250, 250, 250), width=3)


def _draw_fish(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (30, 120, 200), (10, 40, 110))
    for cx, cy, r in ((40, 60, 8), (60, 30, 5), (210, 200, 9), (225, 170, 5)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(200, 230, 255), width=3)
    d.polygon([(170, 128), (236, 70), (236, 186)], fill=(250, 120, 20))  # tail
    d.ellipse([30, 70, 196, 186], fill=(255, 160, 30))  # body
    d.polygon([(90, 78), (130, 40), (150, 82)], fill=(250, 120, 20))  # fin
    for x in (95, 125):
        d.line([(x, 78), (x, 178)], fill=(255, 250, 240), width=9)
    d.ellipse([56, 108, 80, 132], fill=(255, 255, 255))
    d.ellipse([62, 113, 74, 127], fill=(0, 0, 0))


def _draw_bird(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (120, 180, 240), (210, 230, 250))
    d.ellipse([20, 30, 110, 60], fill=(250, 250, 250))  # cloud
    d.ellipse([60, 20, 140, 65], fill=(250, 250, 250))
    d.ellipse([70, 100, 190, 170], fill=(40, 90, 200))  # body
    d.ellipse([160, 80, 215, 135], fill=(40, 90, 200))  # head
    d.polygon([(210, 100), (245, 112), (210, 120)], fill=(250, 190, 0))  # beak
    d.ellipse([188, 95, 200, 107], fill=(0, 0, 0))
    d.polygon([(100, 120), (150, 125), (110, 40)], fill=(20, 60, 160))  # wing
    d.polygon([(75, 130), (20, 110), (30, 160)], fill=(20, 60, 160))  # tail
    d.line([(120, 170), (115, 200)], fill=(250, 190, 0), width=5)
    d.line([(145, 170), (150, 200)], fill=(250, 190, 0), width=5)


def _draw_sun_hills(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (90, 170, 240), (255, 220, 170), 170)
    d.ellipse([150, 30, 220, 100], fill=(255, 220, 40))
    d.ellipse([-80, 130, 170, 330], fill=(80, 170, 60))
    d.ellipse([90, 150, 350, 340], fill=(50, 130, 40))


def _draw_sea(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (60, 140, 230), (190, 225, 255), 120)
    _sky_block = Image.new("RGB", (_CANVAS, _CANVAS - 120))
    _sky(ImageDraw.Draw(_sky_block), (20, 90, 170), (10, 40, 90), _CANVAS - 120)
    img.paste(_sky_block, (0, 120))
    for y in range(135, _CANVAS, 22):
        for x in range(-20, _CANVAS, 48):
            d.arc([x + (y % 44), y, x + (y % 44) + 40, y + 14], start=200, end=340, fill=(200, 230, 255), width=3)
    d.ellipse([20, 30, 90, 55], fill=(255, 255, 255))
    d.ellipse([45, 18, 115, 55], fill=(255, 255, 255))


def _draw_mountains(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (150, 190, 230), (230, 240, 250))
    d.polygon([(-40, 230), (80, 60), (200, 230)], fill=(100, 100, 120))
    d.polygon([(80, 230), (180, 40), (300, 230)], fill=(80, 80, 100))
    d.polygon([(80, 60), (58, 92), (80, 84), (102, 92)], fill=(255, 255, 255))
    d.polygon([(180, 40), (152, 93), (180, 80), (206, 90)], fill=(255, 255, 255))
    d.rectangle([0, 220, _CANVAS, _CANVAS], fill=(240, 245, 250))


def _words(text: str, fg: Color, bg: Color, box: tuple[int, int, int, int]) -> Callable:
    def draw(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, 0, _CANVAS, _CANVAS], fill=bg)
        x0, y0, x1, y1 = box
        img.paste(_text_image(text, fg, bg, x1 - x0, y1 - y0), (x0, y0))

    return draw


def _draw_stop(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, _CANVAS, _CANVAS], fill=(120, 180, 230))
    d.rectangle([120, 190, 136, _CANVAS], fill=(130, 130, 130))
    r, c = 110, 128
    pts = [(c + r * math.cos(math.pi / 8 + k * math.pi / 4), 110 + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
    d.polygon(pts, fill=(205, 20, 30), outline=(255, 255, 255), width=6)
    img.paste(_text_image("STOP", (255, 255, 255), (205, 20, 30), 160, 64), (48, 78))


def _dots(n: int, color: Color, bg: Color, apple: bool = False) -> Callable:
    layouts = {
        1: [(128, 128)],
        2: [(72, 128), (184, 128)],
        3: [(64, 160), (128, 80), (192, 160)],
        5: [(64, 64), (192, 64), (128, 128), (64, 192), (192, 192)],
    }

    def draw(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, 0, _CANVAS, _CANVAS], fill=bg)
        r = 34 if n > 1 else 60
        for cx, cy in layouts[n]:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            if apple:
                d.line([(cx, cy - r + 4), (cx + 6, cy - r - 14)], fill=(90, 50, 20), width=5)
                d.ellipse([cx + 6, cy - r - 14, cx + 28, cy - r - 2], fill=(60, 160, 50))
                d.ellipse([cx - r // 2, cy - r // 2, cx - r // 4, cy - r // 4], fill=(255, 140, 140))

    return draw


def _draw_checker(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    cell = 32
    for i in range(_CANVAS // cell):
        for j in range(_CANVAS // cell):
            fill = (20, 20, 20) if (i + j) % 2 else (240, 240, 240)
            d.rectangle([i * cell, j * cell, (i + 1) * cell - 1, (j + 1) * cell - 1], fill=fill)


def _draw_stripes(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    colors = [(230, 40, 60), (250, 250, 240), (30, 80, 200), (250, 250, 240)]
    for k, x in enumerate(range(-_CANVAS, _CANVAS, 16)):
        d.polygon([(x, _CANVAS), (x + 16, _CANVAS), (x + 16 + _CANVAS, 0), (x + _CANVAS, 0)], fill=colors[k % 4])


def _draw_brick(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, _CANVAS, _CANVAS], fill=(200, 195, 185))  # mortar
    bw, bh = 64, 32
    for row in range(_CANVAS // bh):
        off = (bw // 2) * (row % 2)
        for col in range(-1, _CANVAS // bw + 1):
            x = col * bw + off
            shade = 20 * ((row * 7 + col * 3) % 3)
            d.rectangle([x + 3, row * bh + 3, x + bw - 3, row * bh + bh - 3], fill=(170 - shade, 60 + shade // 2, 40))


def _draw_gradient(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    ys, xs = np.mgrid[0:_CANVAS, 0:_CANVAS] / (_CANVAS - 1)
    rgb = np.stack([xs, 0.5 + 0.5 * np.sin(2 * math.pi * (xs + ys) / 2), 1 - ys], axis=-1)
    img.paste(Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB"))


def _draw_circles(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, _CANVAS, _CANVAS], fill=(250, 245, 220))
    colors = [(30, 30, 140), (250, 200, 30), (200, 30, 100), (30, 160, 160)]
    for k, r in enumerate(range(120, 0, -20)):
        d.ellipse([128 - r, 128 - r, 128 + r, 128 + r], fill=colors[k % 4])


@dataclass(frozen=True)
class Prototype:
    caption: str
    keywords: frozenset[str]
    draw: Callable[[Image.Image, ImageDraw.ImageDraw], None]


def _p(caption: str, keywords: str, draw: Callable) -> Prototype:
    return Prototype(caption, frozenset(keywords.split()), draw)


PROTOTYPES: tuple[Prototype, ...] = (
    _p("a smiling person's face", "face person people man woman portrait smile smiling human", _draw_face),  # 0
    _p("a person standing on grass", "figure person people man woman standing body human grass", _draw_figure),  # 1
    _p("a cat face", "cat kitten kitty animal pet", _draw_cat),  # 2
    _p("a fish in the water", "fish animal water aquarium", _draw_fish),  # 3
    _p("a blue bird in the sky", "bird animal flying", _draw_bird),  # 4
    _p("the sun over green hills", "sun sunny hill landscape green", _draw_sun_hills),  # 5
    _p("the sea under a blue sky", "sea ocean sky water beach wave landscape blue", _draw_sea),  # 6
    _p("snowy mountains", "mountain snow snowy peak landscape", _draw_mountains),  # 7
    _p("the word HELLO", "hello text word greeting", _words("HELLO", (20, 20, 20), (250, 240, 200), (16, 88, 240, 168))),  # 8
    _p("a red STOP sign", "stop sign text red", _draw_stop),  # 9
    _p("the word YES", "yes text word", _words("YES", (255, 255, 255), (30, 130, 60), (36, 68, 220, 188))),  # 10
    _p("one red dot", "one dot single count", _dots(1, (220, 30, 30), (245, 245, 245))),  # 11
    _p("two blue dots", "two dot pair count", _dots(2, (30, 60, 220), (245, 245, 245))),  # 12
    _p("three apples", "three apple fruit count", _dots(3, (210, 20, 30), (250, 240, 210), apple=True)),  # 13
    _p("five black dots", "five dot count", _dots(5, (20, 20, 20), (245, 245, 245))),  # 14
    _p("a checkerboard", "checkerboard checker checkered chess pattern texture", _draw_checker),  # 15
    _p("diagonal stripes", "stripe striped diagonal pattern texture line", _draw_stripes),  # 16
    _p("a brick wall", "brick wall texture", _draw_brick),  # 17
    _p("a colour gradient", "gradient color colour colorful abstract", _draw_gradient),  # 18
    _p("concentric circles", "circle concentric ring target abstract", _draw_circles),  # 19
)
K = len(PROTOTYPES)
CAPTIONS: tuple[str, ...] = tuple(p.caption for p in PROTOTYPES)


@functools.lru_cache(maxsize=None)
def _canvas(k: int) -> Image.Image:
    img = Image.new("RGB", (_CANVAS, _CANVAS), (0, 0, 0))
    PROTOTYPES[k].draw(img, ImageDraw.Draw(img))
    return img


def prototype_image(k: int, height: int = DEFAULT_SIZE, width: int | None = None) -> Image.Image:
    """Prototype `k` as a PIL RGB image of the requested size (drawn at 256x256, LANCZOS-resized)."""
    width = height if width is None else width
    img = _canvas(k)
    return img if (width, height) == img.size else img.resize((width, height), Image.LANCZOS)


@functools.lru_cache(maxsize=8)
def _means(height: int, width: int) -> np.ndarray:
    mu = np.stack([np.asarray(prototype_image(k, height, width), dtype=np.float64) for k in range(K)])
    mu = mu.transpose(0, 3, 1, 2) / 127.5 - 1.0  # (K, 3, H, W) in [-1, 1]
    mu = np.ascontiguousarray(mu.reshape(K, -1))
    mu.setflags(write=False)
    return mu


def prototypes(height: int = DEFAULT_SIZE, width: int | None = None) -> np.ndarray:
    """The component means mu_k, (K, 3, H, W) float64 in [-1, 1]."""
    width = height if width is None else width
    return _means(height, width).reshape(K, 3, height, width)


# --------------------------------------------------------------------------------------------
# Prompt -> components
# --------------------------------------------------------------------------------------------

def prompt_words(prompt: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", prompt.lower())


def _word_forms(word: str) -> set[str]:
    forms = {word}
    if len(word) > 2 and word.endswith("s"):
        forms.add(word[:-1])
    if len(word) > 3 and word.endswith("es"):
        forms.add(word[:-2])
    if len(word) > 4 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    return forms


def select_components(prompt: str) -> tuple[int, ...]:
    """Indices of the components `prompt` selects (see the module docstring for the rule)."""
    words = prompt_words(prompt)
    if not words:
        return tuple(range(K))
    forms = set().union(*(_word_forms(w) for w in words))
    chosen = tuple(k for k, p in enumerate(PROTOTYPES) if p.keywords & forms)
    if chosen:
        return chosen
    key = " ".join(words)
    ranked = sorted(range(K), key=lambda k: hashlib.sha256(f"{key}|{k}".encode("utf-8")).hexdigest())
    return tuple(sorted(ranked[:NUM_FALLBACK_COMPONENTS]))


def component_weights(prompt: str | None) -> np.ndarray:
    """(K,) float64 weights summing to 1; None (or an empty prompt) is the unconditional mixture."""
    w = np.zeros(K, dtype=np.float64)
    w[list(select_components(prompt or ""))] = 1.0
    return w / w.sum()


# --------------------------------------------------------------------------------------------
# Exact denoiser
# --------------------------------------------------------------------------------------------

def denoise(x: np.ndarray, sigma: float, weights: np.ndarray, mu: np.ndarray, s: float = COMPONENT_STD) -> np.ndarray:
    """D(x, sigma) for ONE image: x (3*H*W,) VE-form float64, weights (K,), mu (K, 3*H*W). Returns (3*H*W,)."""
    v = s * s + float(sigma) ** 2
    diff = x[None, :] - mu
    d2 = np.einsum("kd,kd->k", diff, diff)
    with np.errstate(divide="ignore"):
        logits = np.log(np.asarray(weights, dtype=np.float64)) - d2 / (2.0 * v)
    logits -= logits.max()
    r = np.exp(logits)
    r /= r.sum()
    m = r @ mu
    return m + (s * s / v) * (x - m)


class MixtureDenoiser(torch.nn.Module):
    """eps-prediction network of the exact mixture model; one forward call = one model evaluation.

    forward(sample, timestep, encoder_hidden_states): `sample` (B, 3, H, W) VP-form x_t, `timestep`
    a scalar (or one per row), `encoder_hidden_states` (B, K) component weights. Returns eps_hat
    with sample's dtype/device. Computed in float64, row by row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.num_components = K

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        b, c, h, w = sample.shape
        if c != 3:
            raise ValueError(f"MixtureDenoiser expects 3 channels, got {c}")
        sigmas = np.broadcast_to(np.atleast_1d(sigma_of_timestep(timestep)), (b,))
        weights = encoder_hidden_states.detach().to("cpu", torch.float64).numpy().reshape(b, K)
        x = sample.detach().to("cpu", torch.float64).numpy().reshape(b, -1)
        mu = _means(h, w)
        eps = np.empty_like(x)
        for i in range(b):
            sigma = float(sigmas[i])
            x_ve = x[i] * math.sqrt(1.0 + sigma * sigma)
            eps[i] = (x_ve - denoise(x_ve, sigma, weights[i], mu)) / sigma
        return torch.from_numpy(eps.reshape(b, c, h, w)).to(device=sample.device, dtype=sample.dtype)


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------

@dataclass
class MixturePipelineOutput:
    images: Any


def _as_list(value: Any, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what}: got {len(value)} entries for a batch of {n}")
        return list(value)
    return [value] * n


def conditioning(prompts: list[str], negative_prompt: Any, guidance_scale: float, generator: Any,
                 output_type: str) -> tuple[bool, torch.Tensor]:
    """A call's arguments checked as diffusers pipelines check them, then (guided?, the network's
    encoder_hidden_states): component weights per row, the unconditional half stacked first when guiding."""
    if isinstance(generator, (list, tuple)) and len(generator) != len(prompts):
        raise ValueError(f"got {len(generator)} generators for {len(prompts)} prompts")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}")
    negs = _as_list(negative_prompt, len(prompts), "negative_prompt")
    cond = torch.from_numpy(np.stack([component_weights(p) for p in prompts])).float()
    if guidance_scale <= 1.0:
        return False, cond
    uncond = torch.from_numpy(np.stack([component_weights(n) for n in negs])).float()
    return True, torch.cat([uncond, cond])


def pipeline_output(images: torch.Tensor, output_type: str) -> MixturePipelineOutput:
    """(B, 3, H, W) images in [0, 1] as the pipeline's output_type asks: "pt", "np" (float HWC) or "pil"."""
    if output_type == "pt":
        return MixturePipelineOutput(images=images)
    arr = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    if output_type == "np":
        return MixturePipelineOutput(images=arr)
    return MixturePipelineOutput(images=[Image.fromarray(np.round(a * 255).astype(np.uint8), "RGB") for a in arr])


class MixturePipeline:
    """A diffusers-style text-to-image pipeline over the exact mixture model."""

    def __init__(self, scheduler: Any = None, size: int = DEFAULT_SIZE) -> None:
        from diffusers import EulerDiscreteScheduler

        self.scheduler = scheduler if scheduler is not None else EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
        self.denoiser = MixtureDenoiser()
        self.default_size = size

    def to(self, device: Any = None, dtype: Any = None) -> MixturePipeline:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("builtin:mixture runs on the CPU only")
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        negative_prompt: str | Sequence[str] | None = None,
    ) -> MixturePipelineOutput:
        from diffusers.utils.torch_utils import randn_tensor

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        b = len(prompts)
        h = height or self.default_size
        w = width or self.default_size
        do_cfg, hidden = conditioning(prompts, negative_prompt, guidance_scale, generator, output_type)

        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps)
        latents = randn_tensor((b, 3, h, w), generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
        extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        for t in scheduler.timesteps:
            inp = torch.cat([latents] * 2) if do_cfg else latents
            inp = scheduler.scale_model_input(inp, t)
            eps = self.denoiser(inp, t, hidden)
            if do_cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            latents = scheduler.step(eps, t, latents, **extra).prev_sample

        return pipeline_output(((latents.float() + 1) / 2).clamp(0, 1), output_type)

    def ground_truth(
        self,
        prompt: str,
        seed: int,
        guidance_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        rtol: float = 1e-9,
        atol: float = 1e-9,
    ) -> np.ndarray:
        """The image every deterministic scheduler converges to for (prompt, seed): (H, W, 3) float64 in [0, 1].

        Same initial noise as the pipeline (randn_tensor with Generator().manual_seed(seed)),
        started at the VE x = eps * sqrt(1 + sigma_max^2), probability-flow ODE
        dx/d(log sigma) = x - D_g(x, sigma) solved with DOP853 from sigma_max = sigma_table[999] down
        to sigma_min = sigma_table[0], output D_g(x(sigma_min), sigma_min) mapped to [0, 1].
        """
        from diffusers.utils.torch_utils import randn_tensor
        from scipy.integrate import solve_ivp

        h = height or self.default_size
        w = width or self.default_size
        noise = randn_tensor((1, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        table = sigma_table()
        sigma_max, sigma_min = float(table[-1]), float(table[0])
        x_start = noise.to(torch.float64).numpy().reshape(-1) * math.sqrt(1.0 + sigma_max**2)
        d_g = guided_denoiser(prompt, guidance_scale, negative_prompt, h, w)

        def rhs(log_sigma: float, x: np.ndarray) -> np.ndarray:
            return x - d_g(x, math.exp(log_sigma))

        sol = solve_ivp(rhs, (math.log(sigma_max), math.log(sigma_min)), x_start, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:  # pragma: no cover - DOP853 on this smooth ODE does not fail
            raise RuntimeError(f"ground-truth ODE solve failed: {sol.message}")
        d = d_g(sol.y[:, -1], sigma_min)
        return np.clip((d.reshape(3, h, w).transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def guided_denoiser(prompt: str, guidance_scale: float = 1.0, negative_prompt: str | None = None,
                    height: int = DEFAULT_SIZE, width: int | None = None) -> Callable[[np.ndarray, float], np.ndarray]:
    """D_g(x, sigma) for one flattened VE image: D_u + g (D_c - D_u) (= x - sigma * guided eps)."""
    width = height if width is None else width
    w_c = component_weights(prompt)
    w_u = component_weights(negative_prompt)
    mu = _means(height, width)

    def d_g(x: np.ndarray, sigma: float) -> np.ndarray:
        d_c = denoise(x, sigma, w_c, mu)
        if guidance_scale <= 1.0:  # as in the pipeline: no guidance branch at g <= 1
            return d_c
        d_u = denoise(x, sigma, w_u, mu)
        return d_u + guidance_scale * (d_c - d_u)

    return d_g


def mixture_pipeline(size: int = DEFAULT_SIZE) -> MixturePipeline:
    """The builtin:mixture pipeline, with the Euler scheduler of SCHEDULER_CONFIG as its default."""
    return MixturePipeline(size=size)
