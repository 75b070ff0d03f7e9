"""Which components a prompt selects: builtin:mixture's stand-in for a text encoder.

A fixed, documented rule rather than a learned one, so a prompt's distribution (and every ground truth
built from it) is known exactly and is the same in every process.

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
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from .prototypes import K, PROTOTYPES

NUM_FALLBACK_COMPONENTS = 3


def prompt_words(prompt: str) -> list[str]:
    """Rule 1: the lower-cased prompt's maximal runs of [a-z0-9]."""
    return re.findall(r"[a-z0-9]+", prompt.lower())


def _word_forms(word: str) -> set[str]:
    """Rule 2: the word and its singulars (-s, -es, -ies -> -y)."""
    forms = {word}
    if len(word) > 2 and word.endswith("s"):
        forms.add(word[:-1])
    if len(word) > 3 and word.endswith("es"):
        forms.add(word[:-2])
    if len(word) > 4 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    return forms


def select_components(prompt: str) -> tuple[int, ...]:
    """Indices of the components `prompt` selects (rules 1-5 above)."""
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
