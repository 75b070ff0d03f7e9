"""Small-sample behaviour on builtin:mixture (the exact model): does the mean of a set metric drift with n?

Renders one column (Euler at 2 steps: off the reference distribution) of prompts x seeds images and their
high-step references, embeds them through the score stage (CMMD on a tiny random-weight open_clip model, FID on random-weight Inception:
random backbones change the numbers, not the estimators' behaviour), then for subset sizes n draws repeated
random subsets of n column images (without replacement) and computes FID and CMMD of each subset against
ALL the references. An unbiased estimator (CMMD's MMD^2) keeps its mean at every n; FID's mean falls as n
grows (its bias ~ 1/n). Prints mean and sd over the repeats, the mean relative to the full column's value,
and z = (mean - full value) / standard error of the mean: |z| of a few is noise, more is drift.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import machine, prompt_file

import evalkit
from evalkit.metrics.cmmd import cmmd
from evalkit.metrics.fid import frechet_distance_fast
from evalkit.stages.features import FeatureStore
from evalkit.store.folder import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--sizes", default="10,20,40,80,160")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    import os

    from fake_clip import backbone_string, save_tiny_clip
    from fake_weights import write_inception_fid

    folder = Path(tempfile.mkdtemp(prefix="evalkit-drift-"))
    os.environ["TORCH_HOME"] = str(folder / "torch")
    write_inception_fid(folder / "torch")
    clip = backbone_string(save_tiny_clip(folder / "clip"))
    run = evalkit.run(dict(schedulers=["euler"], steps=[2], seeds=args.seeds, reference_steps=60,
                           prompts=prompt_file(folder, args.prompts), out=str(folder / "run"),
                           metrics=["fid", "cmmd"], backbones={"cmmd": clip}))
    images = run.images.sort_values(["prompt_id", "seed"])
    column, refs = images[images.role == "sweep"], images[images.role == "reference"]
    by_dim = {}
    for path in RunDir(run.dir).features_root.iterdir():
        store = FeatureStore(path)
        by_dim[store.load(column.sha256[:1]).shape[1]] = store
    fid_store, clip_store = by_dim[2048], by_dim[32]
    feats = {"fid": (fid_store.load(column.sha256), fid_store.load(refs.sha256), frechet_distance_fast),
             "cmmd": (clip_store.load(column.sha256), clip_store.load(refs.sha256), cmmd)}
    total = len(column)
    print(f"column of {total} images vs its {len(refs)} references; {args.repeats} random subsets per n")
    print(f"{'n':>5} {'FID mean':>10} {'sd':>8} {'/full':>6} {'z':>6} {'CMMD mean':>10} {'sd':>8} {'/full':>6} {'z':>6}")
    rng = np.random.default_rng(0)
    full = {m: fn(x, y) for m, (x, y, fn) in feats.items()}
    for n in [int(s) for s in args.sizes.split(",")] + [total]:
        subsets = [rng.choice(total, size=n, replace=False) for _ in range(args.repeats if n < total else 1)]
        cells = []
        for m, (x, y, fn) in feats.items():
            values = np.array([fn(x[s], y) for s in subsets])
            z = (values.mean() - full[m]) / (values.std() / np.sqrt(len(values))) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():10.5g} {values.std():8.3g} {values.mean() / full[m]:6.3f} {z:6.1f}")
        print(f"{n:>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
