"""The K = 20 prototype images, the means of the mixture's components, each tied to a caption.

Faces, animals, landscapes, words, counts, textures and abstract shapes: varied enough that a prompt
picks out distinct images, drawn procedurally (`drawings`) so the model needs no weights or data files.
Images are in [-1, 1] as the models see them: mu = pixel / 127.5 - 1.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .drawings import (CANVAS, Drawer, dots_drawer, draw_bird, draw_brick, draw_cat, draw_checker, draw_circles,
                       draw_face, draw_figure, draw_fish, draw_gradient, draw_mountains, draw_sea, draw_stop,
                       draw_stripes, draw_sun_hills, text_drawer)

DEFAULT_SIZE = 64  # height and width of the models' images unless a call asks for another


@dataclass(frozen=True)
class Prototype:
    """One mixture component: the caption it stands for, the prompt words that select it, its picture."""

    caption: str
    keywords: frozenset[str]
    draw: Drawer


def _p(caption: str, keywords: str, draw: Drawer) -> Prototype:
    return Prototype(caption, frozenset(keywords.split()), draw)


PROTOTYPES: tuple[Prototype, ...] = (
    _p("a smiling person's face", "face person people man woman portrait smile smiling human", draw_face),  # 0
    _p("a person standing on grass", "figure person people man woman standing body human grass", draw_figure),  # 1
    _p("a cat face", "cat kitten kitty animal pet", draw_cat),  # 2
    _p("a fish in the water", "fish animal water aquarium", draw_fish),  # 3
    _p("a blue bird in the sky", "bird animal flying", draw_bird),  # 4
    _p("the sun over green hills", "sun sunny hill landscape green", draw_sun_hills),  # 5
    _p("the sea under a blue sky", "sea ocean sky water beach wave landscape blue", draw_sea),  # 6
    _p("snowy mountains", "mountain snow snowy peak landscape", draw_mountains),  # 7
    _p("the word HELLO", "hello text word greeting", text_drawer("HELLO", (20, 20, 20), (250, 240, 200), (16, 88, 240, 168))),  # 8
    _p("a red STOP sign", "stop sign text red", draw_stop),  # 9
    _p("the word YES", "yes text word", text_drawer("YES", (255, 255, 255), (30, 130, 60), (36, 68, 220, 188))),  # 10
    _p("one red dot", "one dot single count", dots_drawer(1, (220, 30, 30), (245, 245, 245))),  # 11
    _p("two blue dots", "two dot pair count", dots_drawer(2, (30, 60, 220), (245, 245, 245))),  # 12
    _p("three apples", "three apple fruit count", dots_drawer(3, (210, 20, 30), (250, 240, 210), apple=True)),  # 13
    _p("five black dots", "five dot count", dots_drawer(5, (20, 20, 20), (245, 245, 245))),  # 14
    _p("a checkerboard", "checkerboard checker checkered chess pattern texture", draw_checker),  # 15
    _p("diagonal stripes", "stripe striped diagonal pattern texture line", draw_stripes),  # 16
    _p("a brick wall", "brick wall texture", draw_brick),  # 17
    _p("a colour gradient", "gradient color colour colorful abstract", draw_gradient),  # 18
    _p("concentric circles", "circle concentric ring target abstract", draw_circles),  # 19
)
K = len(PROTOTYPES)
CAPTIONS: tuple[str, ...] = tuple(p.caption for p in PROTOTYPES)


@functools.lru_cache(maxsize=None)
def _canvas(k: int) -> Image.Image:
    """Prototype `k` drawn once at full size; every requested size is resized from it."""
    img = Image.new("RGB", (CANVAS, CANVAS), (0, 0, 0))
    PROTOTYPES[k].draw(img, ImageDraw.Draw(img))
    return img


def prototype_image(k: int, height: int = DEFAULT_SIZE, width: int | None = None) -> Image.Image:
    """Prototype `k` as a PIL RGB image of the requested size (drawn at 256x256, LANCZOS-resized)."""
    width = height if width is None else width
    img = _canvas(k)
    return img if (width, height) == img.size else img.resize((width, height), Image.LANCZOS)


@functools.lru_cache(maxsize=8)
def flat_means(height: int, width: int) -> np.ndarray:
    """The component means flattened, (K, 3*H*W) float64 in [-1, 1], read-only: what the denoisers work on."""
    mu = np.stack([np.asarray(prototype_image(k, height, width), dtype=np.float64) for k in range(K)])
    mu = mu.transpose(0, 3, 1, 2) / 127.5 - 1.0  # (K, 3, H, W) in [-1, 1]
    mu = np.ascontiguousarray(mu.reshape(K, -1))
    mu.setflags(write=False)
    return mu


def prototypes(height: int = DEFAULT_SIZE, width: int | None = None) -> np.ndarray:
    """The component means mu_k, (K, 3, H, W) float64 in [-1, 1]."""
    width = height if width is None else width
    return flat_means(height, width).reshape(K, 3, height, width)
