"""Cost of a set metric's value + 95% CI (200 paired bootstrap replicates) for ONE column, vs one exact evaluation.

Features are synthetic (Gaussian, d = 2048 like Inception pool features for FID/KID; L2-normalised d = 768
like CLIP ViT-L/14 embeddings for CMMD), written to one .npz "features file" per n, with a column and its
paired references. For each n it prints seconds for:
  exact      one evaluation of the value (what score.py reports),
  value+CI   evalkit's route (score._set_metric): one Gram/kernel per column, replicates as quadratic forms,
  old CI     the previous route, recomputing the metric on each explicit resample (timed on a few replicates
             and scaled to 200, marked "est."),
  torch-fidelity  calculate_metrics(fid=True, kid=True) on the same features (registered identity feature
             extractor; FID and KID values only, no interval).
Replicate counts below 200 are timed and scaled (marked "est.") where a full run would take too long here.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread, like the one torch thread (steady timing)

import argparse  # noqa: E402
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import machine

from evalkit.metrics.cmmd import cmmd, cmmd_replicates
from evalkit.metrics.fid import frechet_distance_fast, kid_kernel, mmd2_unbiased
from evalkit.metrics.resample import SetTarget, counts_of, fid_replicates, mmd_replicates
from evalkit.score import SET_BOOTSTRAP


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def torch_fidelity_seconds(path: Path) -> tuple[float, dict]:
    """torch-fidelity's calculate_metrics on precomputed features: its Dataset input + an identity extractor."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class Precomputed(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("2048",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "2048"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            return (x.double(),)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, array):
            self.rows = torch.from_numpy(array)

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    if "precomputed-2048" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("precomputed-2048", Precomputed)
    with np.load(path) as data:
        x, y = data["column"], data["references"]
    return timed(lambda: torch_fidelity.calculate_metrics(
        input1=Rows(x), input2=Rows(y), fid=True, kid=True, feature_extractor="precomputed-2048", cuda=False,
        save_cpu_ram=True, cache=False, verbose=False, kid_subset_size=min(1000, len(x))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000,5000")
    parser.add_argument("--fid-replicates", default="200,20,4", help="FID replicates timed per size (scaled to 200)")
    parser.add_argument("--old-replicates", default="10,2,1", help="old-route replicates timed per size")
    parser.add_argument("--no-torch-fidelity", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    header = f"{'n':>5} {'metric':<6} {'exact s':>9} {'value+CI s':>12} {'ratio':>7} {'old CI s':>11} {'speed-up':>9}"
    print(header)
    rows = []
    for n, fid_reps, old_reps in zip(*(map(int, a.split(",")) for a in (args.sizes, args.fid_replicates,
                                                                          args.old_replicates))):
        x, y = rng.normal(size=(n, 2048)), rng.normal(size=(n, 2048)) * 1.05 + 0.05
        e = rng.normal(size=(2 * n, 768))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cx, cy = e[:n], e[n:]
        path = folder / f"features-{n}.npz"
        np.savez(path, column=x, references=y)
        picks = np.random.default_rng(0).integers(0, n, size=(SET_BOOTSTRAP, n))
        counts = counts_of(picks, n)
        cases = [("fid", frechet_distance_fast, lambda c: fid_replicates(x, SetTarget(paired=y), c), x, y, fid_reps),
                 ("kid", mmd2_unbiased, lambda c: mmd_replicates(kid_kernel, x, SetTarget(paired=y), c), x, y,
                  SET_BOOTSTRAP),
                 ("cmmd", cmmd, lambda c: cmmd_replicates(cx, SetTarget(paired=cy), c), cx, cy, SET_BOOTSTRAP)]
        for name, exact_fn, new_fn, a, b, reps in cases:
            exact, _ = timed(exact_fn, a, b)
            if reps >= SET_BOOTSTRAP:
                new, _ = timed(new_fn, counts)
                new_text = f"{new:12.2f}"
            else:  # the per-column Gram + the value once, then `reps` replicates scaled to 200
                base, _ = timed(new_fn, counts[:0])
                some, _ = timed(new_fn, counts[:reps])
                new = base + (some - base) * SET_BOOTSTRAP / reps
                new_text = f"{new:8.1f}est."
            old_some, _ = timed(lambda: [exact_fn(a[p], b[p]) for p in picks[:old_reps]])
            old = exact + old_some * SET_BOOTSTRAP / old_reps
            print(f"{n:>5} {name:<6} {exact:9.2f} {new_text} {new / exact:7.1f} {old:8.1f}est. {old / new:8.1f}x",
                  flush=True)
            rows.append((n, name, exact, new, old))
        if not args.no_torch_fidelity:
            seconds, metrics = torch_fidelity_seconds(path)
            ours = frechet_distance_fast(x, y)
            print(f"{n:>5} torch-fidelity calculate_metrics (FID+KID values, no CI): {seconds:.2f} s; its FID "
                  f"{metrics['frechet_inception_distance']:.6f} vs evalkit {ours:.6f}", flush=True)


if __name__ == "__main__":
    main()
