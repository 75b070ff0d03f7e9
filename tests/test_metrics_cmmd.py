"""CMMD: the authors' kernel and scale, the unbiased estimator checked against an independent computation,
through the stage on a tiny random-weight open_clip model, and skipped with the fetch command without weights."""
import json

import numpy as np
import pytest
import torch

import evalkit
from evalkit.metrics.cmmd import SCALE, SIGMA, cmmd, rbf_kernel
from evalkit.stages.features import FeatureStore
from evalkit.store.folder import RunDir


def reference_cmmd(x, y):
    """google-research/cmmd distance.py's mmd(), transcribed: the biased (V-statistic) estimator in torch."""
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    gamma = 1 / (2 * 10 ** 2)
    xs, ys = torch.diag(x @ x.T), torch.diag(y @ y.T)
    k_xx = torch.mean(torch.exp(-gamma * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    k_xy = torch.mean(torch.exp(-gamma * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    k_yy = torch.mean(torch.exp(-gamma * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    return float(1000 * (k_xx + k_yy - 2 * k_xy))


def unbiased_by_loops(x, y):
    """Independent: the unbiased MMD^2 written out pair by pair."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * SIGMA ** 2))
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return SCALE * (xx + yy - 2 * xy)


def paired_by_loops(x, y):
    """Independent: the MMD^2 to paired references (row i of y is row i of x's reference, made from the same
    noise), pair by pair over distinct units only: a unit's image is never compared with its own reference."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * SIGMA ** 2))
    n = len(x)
    total = sum(k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
                for i in range(n) for j in range(n) if i != j)
    return SCALE * total / (n * (n - 1))


def embeddings(n, shift, seed):
    e = np.random.default_rng(seed).normal(size=(n, 32)) + shift
    return e / np.linalg.norm(e, axis=1, keepdims=True)  # CLIP embeddings are L2-normalised


def test_cmmd_is_the_unbiased_mmd_with_the_reference_kernel_and_scale():
    x, y = embeddings(30, 0.0, 1), embeddings(45, 0.4, 2)
    assert (SIGMA, SCALE) == (10.0, 1000.0)
    assert cmmd(x, y) == pytest.approx(unbiased_by_loops(x, y), rel=1e-9)
    # the reference's biased estimator is ours plus the diagonal terms, exactly
    kxx, kyy = rbf_kernel(x, x), rbf_kernel(y, y)

    def v_minus_u(k):  # mean of the whole kernel matrix minus the mean of its off-diagonal entries
        n = len(k)
        return k.sum() / n ** 2 - (k.sum() - np.trace(k)) / (n * (n - 1))

    diagonal = SCALE * (v_minus_u(kxx) + v_minus_u(kyy))
    assert reference_cmmd(x, y) == pytest.approx(cmmd(x, y) + diagonal, rel=1e-9)
    # a set against itself: the biased value is 0; the unbiased one is centred on 0 (here slightly below)
    assert reference_cmmd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert cmmd(x, x) == pytest.approx(-2 * SCALE * v_minus_u(kxx), rel=1e-9) and cmmd(x, y) > 0


def test_cmmd_through_the_stage_with_a_local_open_clip_backbone(tmp_path):
    from fake_clip import backbone_string, save_tiny_clip

    backbone = backbone_string(save_tiny_clip(tmp_path / "clip"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat sitting on a mat\nthree apples on a table\n")
    config = dict(schedulers=["euler", "euler_a"], steps=[2, 8], seeds=3, reference_steps=30, prompts=str(prompts),
                  out=str(tmp_path / "run"), metrics=["cmmd"], backbones={"cmmd": backbone})
    run = evalkit.run(config)
    table = run.set_scores.query("metric == 'cmmd'").set_index(["scheduler", "steps"])
    assert len(table) == 4 and set(table.n) == {6}
    assert (table.ci_low <= table.value).all() and (table.value <= table.ci_high).all()
    # independent: embed the PNGs with open_clip directly, then the unbiased MMD over distinct prompt+seed units
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("evalkit-tiny-clip", pretrained=backbone.split("@")[1])
    images = run.images
    column = images.query("scheduler == 'euler' and steps == 8 and role == 'sweep'").sort_values(["prompt_id", "seed"])
    refs = images.query("role == 'reference'").sort_values(["prompt_id", "seed"])

    def embed(paths):
        from PIL import Image
        with torch.no_grad():
            e = model.encode_image(torch.stack([preprocess(Image.open(run.dir / p).convert("RGB")) for p in paths]))
        return torch.nn.functional.normalize(e.float(), dim=-1).double().numpy()

    expected = paired_by_loops(embed(column.path), embed(refs.path))
    assert table.loc[("euler", 8), "value"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["metrics"]["cmmd"]["backbone"] == backbone and summary["metrics"]["cmmd"]["kind"] == "realism"
    store = FeatureStore(next(RunDir(run.dir).features_root.iterdir()))
    assert store.load(column.sha256).shape == (6, 32)
    from evalkit.report.charts import plateau_figure
    from evalkit.store.read import ScoredRun

    figure = plateau_figure(ScoredRun.read(run.dir), "cmmd")
    assert {"euler 95% CI", "euler_a 95% CI"} <= {t["name"] for t in figure["data"]}
    assert "absolute quality: realism" in (run.dir / "report.html").read_text()


def test_cmmd_without_weights_is_skipped_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat sitting on a mat\n")
    run = evalkit.run(dict(schedulers=["euler"], steps=[2], seeds=2, reference_steps=30, prompts=str(prompts),
                           out=str(tmp_path / "run"), metrics=["ssim", "cmmd"]))
    why = run.score.skipped["cmmd"]
    assert why.startswith("missing weights: open_clip ViT-L-14-336/openai weights")
    assert "hf download timm/vit_large_patch14_clip_336.openai" in why
    # the distribution rule says why it could not judge: CMMD skipped, KID not asked for
    block = json.loads((run.dir / "summary.json").read_text())["min_steps"]
    assert block["distribution"] == {"metric": None, "why": f"no distribution metric was scored (cmmd: {why}; "
                                                           "kid is not among the scored metrics)"}
