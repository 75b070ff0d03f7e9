"""Cost of a set metric's value + 95% CI (200 paired bootstrap replicates) for ONE column, vs one exact evaluation.

Features are synthetic (Gaussian, d = 2048 like Inception pool features for FID/KID; L2-normalised d = 768
like CLIP ViT-L/14 embeddings for CMMD), written to one .npz "features file" per n, with a column and its
paired references. For each n it prints seconds for:
  exact      one evaluation of the value (what score.py reports),
  value+CI   evalkit's route (score._set_metric): KID/CMMD one kernel matrix per column, replicates as
             quadratic forms; FID one decomposition per column, linearised replicates,
  exact CI   the exact bootstrap: the metric recomputed on each explicit resample (timed on a few replicates
             and scaled to 200, marked "est.", except where the full exact FID bootstrap is run, below),
  torch-fidelity  calculate_metrics(fid=True, kid=True) on the same features (registered identity feature
             extractor; FID and KID values only, no interval).
At the --exact-ci sizes it also runs FID's full exact bootstrap (200 explicit resamples, same draws) and prints
both 95% intervals, their SDs and where each replicate distribution's mean sits: what linearising costs.
At the --fresh sizes it draws 100 fresh column/reference pairs from the same Gaussians: the SD of their FIDs
is the true sampling SD that both bootstraps estimate.
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

from evalkit.metrics.base import SetTarget, mmd_interval
from evalkit.metrics.cmmd import cmmd, cmmd_replicates
from evalkit.metrics.fid import fid_replicates, frechet_distance_fast, kid_kernel, mmd2_unbiased
from evalkit.stats.bootstrap import SET_BOOTSTRAP, counts_of


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


def fid_interval_comparison(n: int, value: float, linear: np.ndarray, exact: np.ndarray) -> str:
    """The linearised vs the exact bootstrap's 95% interval of one FID, their SDs and mean shifts."""
    lo, hi = np.quantile(linear, [0.025, 0.975])
    elo, ehi = np.quantile(exact, [0.025, 0.975])
    return (f"{n:>5} fid CI: value {value:.3f}; linearised [{lo:.3f}, {hi:.3f}] sd {linear.std():.3f}; exact bootstrap "
            f"[{elo:.3f}, {ehi:.3f}] sd {exact.std():.3f}; sd ratio {linear.std() / exact.std():.3f}; replicate mean "
            f"- value: linearised {linear.mean() - value:+.3f}, exact {exact.mean() - value:+.3f} "
            f"({(exact.mean() - value) / exact.std():+.1f} exact sd)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000,5000")
    parser.add_argument("--old-replicates", default="10,2,1", help="exact-bootstrap replicates timed per size")
    parser.add_argument("--exact-ci", default="500,2000", help="sizes at which FID's full exact bootstrap runs")
    parser.add_argument("--fresh", default="500,2000", help="sizes at which FID's true sampling SD is measured")
    parser.add_argument("--no-torch-fidelity", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    header = f"{'n':>5} {'metric':<6} {'exact s':>9} {'value+CI s':>12} {'ratio':>7} {'exact CI s':>11} {'speed-up':>9}"
    print(header)
    full_exact = {int(n) for n in args.exact_ci.split(",") if n}
    fresh_sizes = {int(n) for n in args.fresh.split(",") if n}

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, 2048)), rng.normal(size=(n, 2048)) * 1.05 + 0.05

    for n, old_reps in zip(*(map(int, a.split(",")) for a in (args.sizes, args.old_replicates))):
        x, y = draw(n)
        e = rng.normal(size=(2 * n, 768))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cx, cy = e[:n], e[n:]
        path = folder / f"features-{n}.npz"
        np.savez(path, column=x, references=y)
        picks = np.random.default_rng(0).integers(0, n, size=(SET_BOOTSTRAP, n))
        counts = counts_of(picks, n)
        cases = [("fid", frechet_distance_fast, lambda c: fid_replicates(x, SetTarget(paired=y), c), x, y),
                 ("kid", mmd2_unbiased, lambda c: mmd_interval(kid_kernel)(x, SetTarget(paired=y), c), x, y),
                 ("cmmd", cmmd, lambda c: cmmd_replicates(cx, SetTarget(paired=cy), c), cx, cy)]
        comparison = None
        for name, exact_fn, new_fn, a, b in cases:
            exact, _ = timed(exact_fn, a, b)
            new, (value, replicates) = timed(new_fn, counts)
            if name == "fid" and n in full_exact:
                old, explicit = timed(lambda: np.array([exact_fn(a[p], b[p]) for p in picks]))
                old_text = f"{old:11.1f}"
                comparison = fid_interval_comparison(n, value, replicates, explicit)
            else:
                old_some, _ = timed(lambda: [exact_fn(a[p], b[p]) for p in picks[:old_reps]])
                old = old_some * SET_BOOTSTRAP / old_reps
                old_text = f"{old:7.1f}est."
            print(f"{n:>5} {name:<6} {exact:9.2f} {new:12.2f} {new / exact:7.1f} {old_text} {old / new:8.1f}x",
                  flush=True)
        if comparison:
            print(comparison, flush=True)
        if n in fresh_sizes:
            fresh = np.array([frechet_distance_fast(*draw(n)) for _ in range(100)])
            print(f"{n:>5} fid over 100 fresh samples of the same Gaussians: mean {fresh.mean():.3f}, true sampling "
                  f"sd {fresh.std():.3f}", flush=True)
        if not args.no_torch_fidelity:
            seconds, metrics = torch_fidelity_seconds(path)
            ours = frechet_distance_fast(x, y)
            print(f"{n:>5} torch-fidelity calculate_metrics (FID+KID values, no CI): {seconds:.2f} s; its FID "
                  f"{metrics['frechet_inception_distance']:.6f} vs evalkit {ours:.6f}", flush=True)


if __name__ == "__main__":
    main()
