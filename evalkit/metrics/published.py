"""Published leaderboards of the preference metrics: where their default min-steps tolerances come from.

A preference score has no "same picture" point to converge to, and its units mean nothing on their own (a cosine of
0.27, a z-score of 0.2). What gives a difference its size is how far apart published models sit when the metric's
authors (or a benchmark built on its official scorer) rank them on one prompt set. Each metric's default tolerance is
the median gap between neighbouring models on such a leaderboard, in evalkit's units: a step count within it of the
plateau loses less than the typical distance between two models one place apart on that list. The median, not the
smallest gap, because ties and near-ties (two models 0.00-0.01 apart) sit on every list and would make the tolerance
a rounding error; not the largest, because the bottom of a list holds models generations apart.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Leaderboard:
    """Model means of one metric on one prompt set, as published (`scale` x evalkit's value)."""

    metric: str
    source: str  # where the table is published
    prompts: str  # the prompt set the means are over
    scores: dict[str, float] = field(repr=False)  # model -> mean, on the published scale
    scale: float = 1.0  # published value = scale x evalkit's value (HPS tables print 100 x the cosine)

    def gaps(self) -> list[tuple[str, str, float]]:
        """(better model, next model, gap in evalkit's units), down the ranking."""
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])
        return [(a, b, (sa - sb) / self.scale) for (a, sa), (b, sb) in zip(ranked, ranked[1:])]

    def tolerance(self) -> float:
        """The median neighbouring gap, to two significant digits (the tables print two or three)."""
        return float(f"{statistics.median(gap for _, _, gap in self.gaps()):.2g}")

    def meaning(self) -> str:
        """One line: what a difference of the tolerance is, in the terms of the leaderboard it comes from."""
        tolerance = self.tolerance()
        a, b, gap = min(self.gaps(), key=lambda g: abs(g[2] - tolerance))
        return (f"the median gap between neighbouring models on {self.source} ({len(self.scores)} models, "
                f"{self.prompts}), e.g. {a} vs {b} ({self.scores[a]:g} vs {self.scores[b]:g}"
                + (f" on its x{self.scale:g} scale" if self.scale != 1 else "") + ")")


# The HPS v2 benchmark of the official repository (github.com/tgxs002/HPSv2, README "v2 benchmark", column
# "Averaged"): HPS v2.0 on 3,200 benchmark prompts (800 each of animation, concept-art, painting, photo). The scorer is
# the cosine; the table prints 100 x it. No official table for v2.1 was found; the default tolerance serves both.
HPSV2 = Leaderboard("hpsv2", "the official HPS v2 benchmark", "its 3,200 prompts, 4 styles", scale=100.0, scores={
    "Dreamlike Photoreal 2.0": 27.86, "SDXL Refiner 0.9": 27.80, "Realistic Vision": 27.77, "SDXL Base 0.9": 27.73,
    "Deliberate": 27.67, "ChilloutMix": 27.54, "MajicMix Realistic": 27.48, "Openjourney": 27.45,
    "DeepFloyd-XL": 27.27, "Epic Diffusion": 27.26, "Stable Diffusion v2.0": 27.17, "Stable Diffusion v1.4": 26.95,
    "DALL-E 2": 26.95, "Versatile Diffusion": 26.59, "CogView2": 26.47, "VQGAN + CLIP": 26.39, "DALL-E mini": 25.83,
    "Latent Diffusion": 25.78, "FuseDream": 25.28, "VQ-Diffusion": 25.10, "LAFITE": 24.81, "GLIDE": 23.55})

# github.com/Schuture/Benchmarking-Awesome-Diffusion-Models, README "COCO Caption Benchmark": the official ImageReward
# and improved-aesthetic-predictor scorers over 1,000 COCO 2014 captions, 8 models, one table for both metrics.
_COCO = "the COCO-caption benchmark of Benchmarking-Awesome-Diffusion-Models"
_COCO_PROMPTS = "1,000 COCO 2014 captions"
IMAGEREWARD = Leaderboard("imagereward", _COCO, _COCO_PROMPTS, scores={
    "DeepFloyd-IF-XL": 0.703, "Openjourney": 0.244, "Stable Diffusion 2.1": 0.472, "Dreamlike Photoreal 2.0": 0.399,
    "Stable Diffusion 1.5": 0.242, "Epic Diffusion": 0.265, "Stable Diffusion 1.4": 0.104,
    "Versatile Diffusion": -0.245})
AESTHETIC = Leaderboard("aesthetic", _COCO, _COCO_PROMPTS, scores={
    "DeepFloyd-IF-XL": 5.26, "Openjourney": 5.38, "Stable Diffusion 2.1": 5.42, "Dreamlike Photoreal 2.0": 5.47,
    "Stable Diffusion 1.5": 5.22, "Epic Diffusion": 5.30, "Stable Diffusion 1.4": 5.22, "Versatile Diffusion": 5.19})

# SPO (Liang et al., "Aesthetic Post-Training Diffusion Models from Generic Preferences with Step-by-step Preference
# Optimization", CVPR 2025), Table 1: PickScore v1 means of SD 1.5 and SDXL and their preference-tuned versions.
# Read from two independent reproductions of the table that agree digit for digit (the paper itself was not at hand).
PICKSCORE = Leaderboard("pickscore", "the SPO paper's Table 1", "its evaluation prompts", scores={
    "SDXL": 21.95, "Diffusion-DPO-SDXL": 22.64, "MAPO-SDXL": 22.11, "SPO-SDXL": 23.06,
    "SD 1.5": 20.53, "DDPO-SD1.5": 21.06, "Diffusion-DPO-SD1.5": 20.98, "SPO-SD1.5": 21.43})

LEADERBOARDS = {board.metric: board for board in (HPSV2, PICKSCORE, IMAGEREWARD, AESTHETIC)}
