"""How each prototype is drawn: PIL drawings on a CANVAS x CANVAS RGB image, one function per picture.

Drawn large, then resized (LANCZOS) by `prototypes.prototype_image`, so the pictures stay recognisable
at any size. Only PIL's default font is used, so the text prototypes render the same everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CANVAS = 256  # prototypes are drawn at this size, then resized (LANCZOS) to the requested size

Color = tuple[int, int, int]
#: draws one picture onto a fresh CANVAS x CANVAS image (and a Draw on it)
Drawer = Callable[[Image.Image, ImageDraw.ImageDraw], None]


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


def _sky(d: ImageDraw.ImageDraw, top: Color, bottom: Color, y1: int = CANVAS) -> None:
    for y in range(y1):
        f = y / max(y1 - 1, 1)
        d.line([(0, y), (CANVAS, y)], fill=tuple(int(round(a + (b - a) * f)) for a, b in zip(top, bottom)))


def draw_face(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, CANVAS, CANVAS], fill=(70, 110, 170))
    d.ellipse([28, 10, 228, 200], fill=(60, 40, 25))  # hair
    d.ellipse([48, 40, 208, 230], fill=(236, 190, 150))  # face
    d.ellipse([82, 100, 112, 125], fill=(255, 255, 255))
    d.ellipse([144, 100, 174, 125], fill=(255, 255, 255))
    d.ellipse([91, 104, 105, 121], fill=(40, 30, 20))
    d.ellipse([153, 104, 167, 121], fill=(40, 30, 20))
    d.polygon([(128, 125), (116, 160), (138, 160)], fill=(210, 150, 115))
    d.arc([88, 150, 168, 205], start=20, end=160, fill=(170, 40, 50), width=7)


def draw_figure(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (150, 200, 250), (220, 235, 255), 190)
    d.rectangle([0, 190, CANVAS, CANVAS], fill=(70, 150, 60))
    d.ellipse([104, 30, 152, 78], fill=(236, 190, 150))  # head
    d.rectangle([110, 80, 146, 150], fill=(200, 40, 40))  # shirt
    d.line([(112, 88), (70, 130)], fill=(236, 190, 150), width=10)  # arms
    d.line([(144, 88), (186, 130)], fill=(236, 190, 150), width=10)
    d.line([(118, 150), (100, 215)], fill=(30, 40, 120), width=14)  # legs
    d.line([(138, 150), (156, 215)], fill=(30, 40, 120), width=14)


def draw_cat(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, CANVAS, CANVAS], fill=(120, 190, 140))
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


def draw_fish(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
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


def draw_bird(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
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


def draw_sun_hills(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (90, 170, 240), (255, 220, 170), 170)
    d.ellipse([150, 30, 220, 100], fill=(255, 220, 40))
    d.ellipse([-80, 130, 170, 330], fill=(80, 170, 60))
    d.ellipse([90, 150, 350, 340], fill=(50, 130, 40))


def draw_sea(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (60, 140, 230), (190, 225, 255), 120)
    _sky_block = Image.new("RGB", (CANVAS, CANVAS - 120))
    _sky(ImageDraw.Draw(_sky_block), (20, 90, 170), (10, 40, 90), CANVAS - 120)
    img.paste(_sky_block, (0, 120))
    for y in range(135, CANVAS, 22):
        for x in range(-20, CANVAS, 48):
            d.arc([x + (y % 44), y, x + (y % 44) + 40, y + 14], start=200, end=340, fill=(200, 230, 255), width=3)
    d.ellipse([20, 30, 90, 55], fill=(255, 255, 255))
    d.ellipse([45, 18, 115, 55], fill=(255, 255, 255))


def draw_mountains(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    _sky(d, (150, 190, 230), (230, 240, 250))
    d.polygon([(-40, 230), (80, 60), (200, 230)], fill=(100, 100, 120))
    d.polygon([(80, 230), (180, 40), (300, 230)], fill=(80, 80, 100))
    d.polygon([(80, 60), (58, 92), (80, 84), (102, 92)], fill=(255, 255, 255))
    d.polygon([(180, 40), (152, 93), (180, 80), (206, 90)], fill=(255, 255, 255))
    d.rectangle([0, 220, CANVAS, CANVAS], fill=(240, 245, 250))


def text_drawer(text: str, fg: Color, bg: Color, box: tuple[int, int, int, int]) -> Drawer:
    """A drawer of `text` in `fg` on a plain `bg`, stretched to fill `box` (x0, y0, x1, y1)."""
    def draw(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, 0, CANVAS, CANVAS], fill=bg)
        x0, y0, x1, y1 = box
        img.paste(_text_image(text, fg, bg, x1 - x0, y1 - y0), (x0, y0))

    return draw


def draw_stop(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, CANVAS, CANVAS], fill=(120, 180, 230))
    d.rectangle([120, 190, 136, CANVAS], fill=(130, 130, 130))
    r, c = 110, 128
    pts = [(c + r * math.cos(math.pi / 8 + k * math.pi / 4), 110 + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
    d.polygon(pts, fill=(205, 20, 30), outline=(255, 255, 255), width=6)
    img.paste(_text_image("STOP", (255, 255, 255), (205, 20, 30), 160, 64), (48, 78))


def dots_drawer(n: int, color: Color, bg: Color, apple: bool = False) -> Drawer:
    """A drawer of `n` (1, 2, 3 or 5) discs on a plain `bg`, as apples (stalk, leaf, shine) if `apple`."""
    layouts = {
        1: [(128, 128)],
        2: [(72, 128), (184, 128)],
        3: [(64, 160), (128, 80), (192, 160)],
        5: [(64, 64), (192, 64), (128, 128), (64, 192), (192, 192)],
    }

    def draw(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, 0, CANVAS, CANVAS], fill=bg)
        r = 34 if n > 1 else 60
        for cx, cy in layouts[n]:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            if apple:
                d.line([(cx, cy - r + 4), (cx + 6, cy - r - 14)], fill=(90, 50, 20), width=5)
                d.ellipse([cx + 6, cy - r - 14, cx + 28, cy - r - 2], fill=(60, 160, 50))
                d.ellipse([cx - r // 2, cy - r // 2, cx - r // 4, cy - r // 4], fill=(255, 140, 140))

    return draw


def draw_checker(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    cell = 32
    for i in range(CANVAS // cell):
        for j in range(CANVAS // cell):
            fill = (20, 20, 20) if (i + j) % 2 else (240, 240, 240)
            d.rectangle([i * cell, j * cell, (i + 1) * cell - 1, (j + 1) * cell - 1], fill=fill)


def draw_stripes(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    colors = [(230, 40, 60), (250, 250, 240), (30, 80, 200), (250, 250, 240)]
    for k, x in enumerate(range(-CANVAS, CANVAS, 16)):
        d.polygon([(x, CANVAS), (x + 16, CANVAS), (x + 16 + CANVAS, 0), (x + CANVAS, 0)], fill=colors[k % 4])


def draw_brick(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, CANVAS, CANVAS], fill=(200, 195, 185))  # mortar
    bw, bh = 64, 32
    for row in range(CANVAS // bh):
        off = (bw // 2) * (row % 2)
        for col in range(-1, CANVAS // bw + 1):
            x = col * bw + off
            shade = 20 * ((row * 7 + col * 3) % 3)
            d.rectangle([x + 3, row * bh + 3, x + bw - 3, row * bh + bh - 3], fill=(170 - shade, 60 + shade // 2, 40))


def draw_gradient(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] / (CANVAS - 1)
    rgb = np.stack([xs, 0.5 + 0.5 * np.sin(2 * math.pi * (xs + ys) / 2), 1 - ys], axis=-1)
    img.paste(Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB"))


def draw_circles(img: Image.Image, d: ImageDraw.ImageDraw) -> None:
    d.rectangle([0, 0, CANVAS, CANVAS], fill=(250, 245, 220))
    colors = [(30, 30, 140), (250, 200, 30), (200, 30, 100), (30, 160, 160)]
    for k, r in enumerate(range(120, 0, -20)):
        d.ellipse([128 - r, 128 - r, 128 + r, 128 + r], fill=colors[k % 4])
