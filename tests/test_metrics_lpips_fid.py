"""LPIPS, FID and KID scorers, offline: random-weight checkpoints written where the real loaders look.

Every test runs with the network cut (torch.hub downloads, urllib and socket connects raise), so a
loader that missed the fake file would fail loudly instead of downloading.
"""
from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
import scipy.linalg
import torch

import fake_weights
from reference_metrics import torchmetrics_fid, torchmetrics_kid
from evalkit.errors import EvalkitError
from evalkit.metrics import METRICS
from evalkit.metrics.base import MetricOptions

pytestmark = [
    # direct lpips calls in the tests use torchvision's deprecated `pretrained=`; scipy's sqrtm of a
    # rank-deficient product (n = 12 << 2048) warns that it is singular: both expected here.
    pytest.mark.filterwarnings("ignore::UserWarning:torchvision.models._utils"),
    pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning"),
]


class NetworkUsed(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkUsed(f"network access attempted: {args[:2]}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)


@pytest.fixture(scope="module")
def fake_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    fake_weights.write_alexnet(home)
    fake_weights.write_inception_fid(home)
    return home


@pytest.fixture
def torch_home(fake_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_home))
    return fake_home


def structured_images(n: int, seed: int, shift: float = 0.0, size: int = 32) -> torch.Tensor:
    """Random-but-structured uint8 images: per-image coloured sinusoids plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        a, p = torch.rand(3, 1, 1, generator=g) * 6, torch.rand(3, 1, 1, generator=g) * 6
        base = 0.5 + 0.5 * torch.sin(a * xx + p * yy + shift)
        noise = torch.rand(3, size, size, generator=g) * 0.2
        out.append(((base * 0.8 + noise) * 255).clamp(0, 255).to(torch.uint8))
    return torch.stack(out)


# ---------------------------------------------------------------- registration and weights


def test_specs_registered():
    from evalkit.metrics import fid, lpips  # noqa: F401  (registration happens at import)
    from evalkit.metrics.base import CONVERGENCE, IMAGE_REFERENCE, REALISM, SET

    spec = METRICS.get("lpips")
    assert (spec.inputs, spec.kind, spec.higher_is_better) == (IMAGE_REFERENCE, CONVERGENCE, False)
    assert "[-1, 1]" in spec.preprocessing
    for name in ("fid", "kid"):
        spec = METRICS.get(name)
        assert (spec.inputs, spec.kind, spec.higher_is_better) == (SET, REALISM, False)
        assert "uint8" in spec.preprocessing and "299" in spec.preprocessing
    assert fid.FID_MIN_N == 2048
    assert fid.fid_small_n_warning(12) and fid.fid_small_n_warning(2048) is None


@pytest.mark.parametrize(
    "name, backbone, filename",
    [
        ("lpips", None, "alexnet-owt-7be5be79.pth"),
        ("lpips", "vgg", "vgg16-397923af.pth"),
        ("fid", None, "weights-inception-2015-12-05-6726825d.pth"),
        ("kid", None, "weights-inception-2015-12-05-6726825d.pth"),
    ],
)
def test_missing_weights_listed_and_build_refuses_offline(tmp_path, monkeypatch, name, backbone, filename):
    from evalkit.metrics import fid, lpips  # noqa: F401

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec, options = METRICS.get(name), MetricOptions(backbone=backbone)
    missing = spec.missing_weights(options)
    assert [w.path() for w in missing] == [tmp_path / "hub" / "checkpoints" / filename]
    assert filename in missing[0].fetch and missing[0].fetch.split()[0] in ("curl", "python")
    with pytest.raises(EvalkitError, match=filename):  # not NetworkUsed: nothing tried to download
        spec.build(options)


def test_weight_paths_are_where_the_libraries_load_from(torch_home):
    """The unchanged library loaders read the fake files: the trunk holds exactly the fake weights."""
    from evalkit.metrics import fid, lpips  # noqa: F401

    for name in ("lpips", "fid", "kid"):
        assert METRICS.get(name).missing_weights(MetricOptions()) == []
    scorer = METRICS.get("lpips").build(MetricOptions())
    saved = torch.load(torch_home / "hub/checkpoints/alexnet-owt-7be5be79.pth")
    assert torch.equal(scorer.model.net.slice1[0].weight, saved["features.0.weight"])
    # lpips' own v0.1 linear layers (shipped in the package) are loaded, not left at random init
    import lpips as lpips_pkg
    import os

    lin = torch.load(os.path.join(os.path.dirname(lpips_pkg.__file__), "weights/v0.1/alex.pth"), map_location="cpu")
    assert torch.equal(scorer.model.lin0.model[1].weight, lin["lin0.model.1.weight"])
    inception = METRICS.get("fid").build(MetricOptions()).model
    saved = torch.load(torch_home / "hub/checkpoints/weights-inception-2015-12-05-6726825d.pth")
    assert torch.equal(inception.Conv2d_1a_3x3.conv.weight, saved["Conv2d_1a_3x3.conv.weight"])


# ---------------------------------------------------------------- LPIPS


@pytest.fixture
def lpips_pair():
    return structured_images(6, seed=3), structured_images(6, seed=4, shift=1.0)


def test_lpips_matches_direct_library_call(torch_home, lpips_pair):
    import lpips as lpips_pkg

    images, refs = lpips_pair
    scorer = METRICS.get("lpips").build(MetricOptions(batch_size=4))  # 2 batches: 4 + 2
    got = scorer.score(images, refs)
    assert got.shape == (6,) and got.dtype == torch.float64
    direct_model = lpips_pkg.LPIPS(net="alex", version="0.1", verbose=False).eval()
    with torch.no_grad():
        direct = direct_model(images.float() / 127.5 - 1, refs.float() / 127.5 - 1).reshape(-1)
        unit_range = direct_model(images.float() / 255, refs.float() / 255).reshape(-1)
    torch.testing.assert_close(got, direct.double(), atol=1e-6, rtol=0)
    # input-range trap: a scorer that forgot to rescale to [-1, 1] would give these instead
    assert (got - unit_range.double()).abs().min() > 1e-3
    assert torch.all(scorer.score(images, images).abs() < 1e-6)


def test_lpips_rejects_non_uint8(torch_home, lpips_pair):
    images, refs = lpips_pair
    scorer = METRICS.get("lpips").build(MetricOptions())
    with pytest.raises(TypeError):
        scorer.score(images.float() / 255, refs.float() / 255)
    with pytest.raises(EvalkitError, match="backbone"):
        METRICS.get("lpips").build(MetricOptions(backbone="resnet"))


def test_lpips_vgg_backbone(tmp_path, monkeypatch, lpips_pair):
    import lpips as lpips_pkg

    fake_weights.write_vgg16(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    images, refs = lpips_pair[0][:2], lpips_pair[1][:2]
    scorer = METRICS.get("lpips").build(MetricOptions(backbone="vgg"))
    direct_model = lpips_pkg.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    with torch.no_grad():
        direct = direct_model(images.float() / 127.5 - 1, refs.float() / 127.5 - 1).reshape(-1)
    torch.testing.assert_close(scorer.score(images, refs), direct.double(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- FID / KID


@pytest.fixture(scope="module")
def inception_sets(fake_home):
    """Features of two different 12-image sets, computed once (Inception at 299² is slow on CPU)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(fake_home))
        mp.setattr(torch.hub, "download_url_to_file", _no_network)
        scorer = METRICS.get("fid").build(MetricOptions(batch_size=8))
        a, b = structured_images(12, seed=0), structured_images(12, seed=1, shift=2.0)
        return scorer, a, scorer.features(a), scorer.features(b)


def _scipy_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_features_shape_dtype(inception_sets):
    _, images, fa, fb = inception_sets
    assert fa.shape == (12, 2048) and fa.dtype == torch.float64
    assert torch.isfinite(fa).all() and fa.std(0).mean() > 1e-4  # fake weights separate images


def test_fid_on_inception_features_matches_torchmetrics_and_scipy_and_is_zero_on_itself(inception_sets):
    """FID as the stage computes it (the spec's compare) on real Inception features of two image sets."""
    _, _, fa, fb = inception_sets
    fid = METRICS.get("fid").compare
    x, y = fa.numpy(), fb.numpy()
    fid_ab = fid(x, y)
    assert fid_ab > 0
    assert fid_ab == pytest.approx(_scipy_fid(x, y), rel=1e-4)
    assert fid_ab == pytest.approx(torchmetrics_fid(x, y), rel=1e-4)
    assert abs(fid(x, x)) <= 1e-9 * fid_ab  # exact: no square roots of rounding noise (torchmetrics: ~3e-6)


def test_kid_is_torchmetrics_unbiased_poly_mmd(inception_sets):
    _, _, fa, fb = inception_sets
    kid = METRICS.get("kid").compare
    x, y = fa.numpy(), fb.numpy()
    kid_ab, kid_aa = kid(x, y), kid(x, x)

    def k(u, v):
        return (u @ v.T / u.shape[1] + 1.0) ** 3

    def mmd2(u, v):  # unbiased MMD^2 with the polynomial kernel, independent of torchmetrics
        m = u.shape[0]
        kxx, kyy, kxy = k(u, u), k(v, v), k(u, v)
        off = lambda mat: mat.sum() - np.trace(mat)  # noqa: E731
        return (off(kxx) + off(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2

    assert kid_ab == pytest.approx(mmd2(x, y), rel=1e-9)
    assert kid_ab == pytest.approx(torchmetrics_kid(x, y), rel=1e-9)  # equal sizes: every subset is the whole set
    assert kid_ab > 0
    # KID(x, x) is not exactly 0: the unbiased estimator drops k(x_i, x_i) from the within-set terms
    # but not from the cross term, leaving -2/(m-1) * (mean diag K - mean K) = O(1/m), < 0.
    kxx = k(x, x)
    assert kid_aa == pytest.approx(-2 / (x.shape[0] - 1) * (np.diag(kxx).mean() - kxx.mean()), rel=1e-9)
    assert kid_aa <= 0 and abs(kid_aa) < kid_ab


def test_inception_input_trap(inception_sets, monkeypatch):
    """The scorer hands the wrapper uint8 in [0, 255]; anything else changes the features."""
    scorer, images, fa, _ = inception_sets
    seen = []
    original = type(scorer.model).forward

    def spy(self, x):
        seen.append((x.dtype, int(x.min()), int(x.max())))
        return original(self, x)

    monkeypatch.setattr(type(scorer.model), "forward", spy)
    got = scorer.features(images[:2])
    assert seen == [(torch.uint8, int(images[:2].min()), int(images[:2].max()))]
    torch.testing.assert_close(got, fa[:2], atol=1e-5, rtol=0)
    # a [0, 1]-scaled image (what a float pipeline would pass after .byte()) gives different features
    squashed = scorer.features((images[:2].float() / 255).round().to(torch.uint8))
    assert (squashed - fa[:2]).abs().max() > 1e-3
    with pytest.raises(TypeError):
        scorer.features(images[:2].float() / 255)


def test_batch_size_does_not_change_features(inception_sets, torch_home):
    _, images, fa, _ = inception_sets
    one = METRICS.get("fid").build(MetricOptions(batch_size=1)).features(images[:8])
    torch.testing.assert_close(one, fa[:8], atol=1e-5, rtol=0)


def test_npz_stats_round_trip(inception_sets, tmp_path):
    from evalkit.metrics.fid import load_npz_stats

    _, _, fa, fb = inception_sets
    path = tmp_path / "ref_stats.npz"
    np.savez(path, mu=fb.numpy().mean(0), sigma=np.cov(fb.numpy(), rowvar=False))
    mu, sigma = load_npz_stats(path)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    fid = METRICS.get("fid")
    assert fid.compare_stats(fa.numpy(), mu, sigma) == pytest.approx(fid.compare(fa.numpy(), fb.numpy()), rel=1e-6)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(EvalkitError, match="sigma"):
        load_npz_stats(tmp_path / "bad.npz")
