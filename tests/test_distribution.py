"""The distribution rule for minimum useful steps (stochastic samplers included) and its self-test."""
from __future__ import annotations

import json

import numpy as np
import pytest

import evalkit
import fake_weights
from evalkit import selftest
from evalkit.metrics.fid import kid_kernel
from evalkit.minsteps import distribution
from evalkit.stats.mmd import paired_mmd2
from evalkit.config import resolve_config
from evalkit.stats.bootstrap import resample_counts
from evalkit.store.folder import RunDir

PROMPTS = "a cat sitting on a mat\nthree apples on a table\na landscape with mountains\n"


def test_paired_mmd2_is_the_u_statistic_over_distinct_units():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.0, size=(7, 5))
    k = kid_kernel
    h = np.array([[k(x[[i]], x[[j]])[0, 0] + k(y[[i]], y[[j]])[0, 0] - k(x[[i]], y[[j]])[0, 0] - k(x[[j]], y[[i]])[0, 0]
                   for j in range(7)] for i in range(7)])
    direct = np.mean([h[i, j] for i in range(7) for j in range(7) if i != j])
    blocks = k(x, x), k(y, y), k(x, y)
    assert paired_mmd2(*blocks, np.ones((1, 7)))[0] == pytest.approx(direct, rel=1e-12)
    # a bootstrap replicate = the same statistic over the distinct resampled index pairs (never a unit with itself)
    counts = resample_counts(7, 3, seed=4)
    draw = np.repeat(np.arange(7), counts[0].astype(int))
    pairs = [(a, b) for a in range(len(draw)) for b in range(len(draw)) if draw[a] != draw[b]]
    expected = np.mean([h[draw[a], draw[b]] for a, b in pairs])
    assert paired_mmd2(*blocks, counts)[0] == pytest.approx(expected, rel=1e-12)


def test_rule_finds_the_first_count_whose_distribution_matches_the_target():
    """Synthetic features coupled to the target per unit (as a column shares its references' starting noise):
    the target's own law from 8 steps up, shifted below it: the answer is 8."""
    rng = np.random.default_rng(0)
    n, d = 40, 6
    target = rng.normal(size=(n, d))
    shift = {1: 3.0, 2: 1.5, 4: 0.8, 8: 0.0, 16: 0.0}
    columns = {s: 0.9 * target + np.sqrt(1 - 0.81) * rng.normal(size=(n, d)) + shift[s] for s in shift}
    tolerance = distribution.noise_floor(target, [f"p{i % 4}" for i in range(n)], kid_kernel)
    evidence = distribution.distribution_evidence(columns, target, tolerance, kid_kernel)
    assert [e["pass"] for e in evidence] == [False, False, False, True, True]
    assert evidence[0]["distance"] > evidence[2]["distance"] > abs(evidence[4]["distance"])


@pytest.fixture(scope="module")
def kid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "prompts.txt").write_text(PROMPTS)
    home = root / "torch_home"
    fake_weights.write_inception_fid(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        run = evalkit.run({"prompts": str(root / "prompts.txt"), "seeds": 2, "steps": [1, 4, 15],
                           "schedulers": ["euler", "euler_a"], "metrics": ["ssim", "kid"], "reference_steps": 30,
                           "out": str(root / "run")})
    return run


def test_every_scheduler_gets_an_answer_with_its_rule_named(kid_run):
    block = json.loads((kid_run.dir / "summary.json").read_text())["min_steps"]
    assert "Distribution rule" in block["rule"] and block["distribution"]["metric"] == "kid"
    entries = block["schedulers"]
    assert set(entries) == {"euler", "euler_a"}
    assert set(entries["euler"]["rules"]) == {"per-seed convergence", "distribution"}
    assert set(entries["euler_a"]["rules"]) == {"distribution"}  # never judged per seed
    for name, entry in entries.items():
        dist = entry["distribution"]
        assert dist["metric"] == "kid" and dist["n"] == 6 and dist["tolerance"] > 0
        assert [e["steps"] for e in dist["evidence"]] == [1, 4, 15]
        assert not dist["evidence"][0]["pass"]  # one step is pure noise for Euler-family samplers
        assert dist["evidence"][0]["distance"] > dist["evidence"][-1]["distance"]
        # the answer is the rule's (a count, or why not), and names the rule(s) that decided it
        assert (entry["min_steps"] is not None) == entry["reached"]
        assert entry["reached"] or "distribution" in entry["why"] or "per-seed" in entry["why"]
        assert entry["judged_by"] and set(entry["judged_by"]) <= set(entry["rules"])
    report = (kid_run.dir / "report.html").read_text()
    assert "distribution" in report and "per-seed convergence" in report


@pytest.fixture(scope="module")
def cmmd_run(tmp_path_factory):
    from fake_clip import backbone_string, save_tiny_clip

    root = tmp_path_factory.mktemp("dist-cmmd")
    (root / "prompts.txt").write_text(PROMPTS)
    backbone = backbone_string(save_tiny_clip(root / "clip"))
    return evalkit.run({"prompts": str(root / "prompts.txt"), "seeds": 2, "steps": [1, 4, 15],
                        "schedulers": ["euler", "euler_a"], "metrics": ["ssim", "cmmd"], "reference_steps": 30,
                        "backbones": {"cmmd": backbone}, "out": str(root / "run")})


def test_cmmd_judges_every_scheduler_when_scored(cmmd_run):
    block = json.loads((cmmd_run.dir / "summary.json").read_text())["min_steps"]
    backbone = cmmd_run.config.backbones["cmmd"]
    assert block["distribution"] == {"metric": "cmmd", "backbone": backbone, "rule": distribution.rule_text(
        distribution.Distance.of("cmmd"), backbone)}
    assert f"cmmd: CMMD's Gaussian RBF kernel (sigma 10, x1000) on L2-normalised CLIP image embeddings, backbone " \
           f"{backbone}" in block["rule"]
    entries = block["schedulers"]
    assert set(entries["euler"]["rules"]) == {"per-seed convergence", "distribution"}
    assert set(entries["euler_a"]["rules"]) == {"distribution"}
    for entry in entries.values():
        dist = entry["distribution"]
        assert dist["metric"] == "cmmd" and dist["n"] == 6 and dist["tolerance"] > 0
        assert dist["distance"].startswith("paired MMD^2, CMMD's Gaussian RBF")
        assert [e["steps"] for e in dist["evidence"]] == [1, 4, 15]
        assert (entry["min_steps"] is not None) == entry["reached"] and entry["judged_by"]
    # D is the paired U-statistic of CMMD's kernel on the embeddings score cached, checked by loops
    from evalkit.metrics.cmmd import scaled_kernel
    from evalkit.stages.features import feature_store
    from evalkit.store.tables import with_references

    spec = evalkit.metrics.METRICS.get("cmmd")
    store = feature_store(RunDir(cmmd_run.dir), spec, evalkit.metrics.base.MetricOptions(backbone=backbone))
    pairs = with_references(cmmd_run.images, cmmd_run.config)
    column = pairs[(pairs.scheduler == "euler_a") & (pairs.steps == 15)].sort_values(["prompt_id", "seed"])
    x, y = store.load(column.sha256), store.load(column.reference_sha256)
    n = len(x)

    def k(a, b):
        return float(scaled_kernel(a[None], b[None])[0, 0])

    direct = sum(k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
                 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert entries["euler_a"]["distribution"]["evidence"][-1]["distance"] == pytest.approx(direct, rel=1e-9)
    report = (cmmd_run.dir / "report.html").read_text()
    assert "distribution (cmmd)" in report and "CMMD&#x27;s Gaussian RBF kernel" in report


def test_cmmd_is_chosen_over_kid_when_both_are_scored(cmmd_run):
    """The first scored of JUDGES judges: with KID also scored the answer is still CMMD's (the KID column here is a
    stand-in; only which metric judges is under test, and KID's features are never read)."""
    import dataclasses


    both = dataclasses.replace(cmmd_run.score, set_scores={"kid": cmmd_run.score.set_scores["cmmd"],
                                                           **cmmd_run.score.set_scores})
    block = distribution.judge_run(RunDir(cmmd_run.dir), cmmd_run.images, cmmd_run.config, both)
    assert distribution.JUDGES == ("cmmd", "kid") and block["metric"] == "cmmd"
    summary = json.loads((cmmd_run.dir / "summary.json").read_text())["min_steps"]["schedulers"]
    assert block["schedulers"]["euler_a"]["evidence"] == summary["euler_a"]["distribution"]["evidence"]


def test_without_a_distribution_metric_the_rule_says_so(tmp_path):
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    run = evalkit.score({"prompts": str(tmp_path / "prompts.txt"), "seeds": 2, "steps": [2, 4],
                       "schedulers": ["euler_a"], "metrics": ["ssim"], "reference_steps": 10,
                       "out": str(tmp_path / "run")})
    entry = json.loads((run.dir / "summary.json").read_text())["min_steps"]["schedulers"]["euler_a"]
    assert entry["min_steps"] is None and entry["rules"] == {}
    assert "stochastic" in entry["why"] and ("no distribution metric was scored (cmmd is not among the scored metrics; "
                                             "kid is not among the scored metrics)") in entry["why"]


@pytest.fixture(scope="module")
def selftest_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("selftest")
    (root / "prompts.txt").write_text(PROMPTS)
    return resolve_config({"prompts": str(root / "prompts.txt"), "seeds": 4, "steps": [2, 4, 8, 15, 30],
                           "schedulers": ["euler", "dpmpp_2m_sde_karras", "euler_a"], "reference_steps": 60,
                           "out": str(root / "run")})


def test_selftest_checks_stochastic_samplers_against_the_exact_distribution(selftest_config, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no Inception: the weight-free distance
    rows, ok = selftest.selftest(selftest_config)
    print("\n".join(str(r) for r in rows))
    # the flow family is checked in its own tests; the references row checks certification (tests/test_certify.py)
    by = {r["scheduler"]: r for r in rows if r["family"] == "ddpm" and not r["scheduler"].startswith("references")}
    assert ok and set(by) == {"euler", "dpmpp_2m_sde_karras", "euler_a"}
    assert by["euler"]["rule"] == "per-seed convergence (ssim)"
    for name in ("dpmpp_2m_sde_karras", "euler_a"):
        assert by[name]["rule"] == "distribution (pixel-mmd)" and by[name]["match"]
    # the SDE solver reaches the exact law within the sweep, but not at its first count (the rule discriminates)
    assert 2 < by["dpmpp_2m_sde_karras"]["harness"] and by["dpmpp_2m_sde_karras"]["truth"] is not None

    # a harness whose answer for a stochastic sampler is forced wrong (one step suffices) must fail
    real = distribution.judge_schedulers

    def claims_one_step(features, sweep, metric, target_column="reference_sha256"):
        out = real(features, sweep, metric, target_column)
        if target_column == "reference_sha256":
            out = {s: {**e, "min_steps": 2, "reached": True} for s, e in out.items()}
        return out

    monkeypatch.setattr(selftest, "judge_schedulers", claims_one_step)
    rows, ok = selftest.selftest(selftest_config)
    assert not ok and [r["scheduler"] for r in rows if r["match"] is False] == ["dpmpp_2m_sde_karras", "euler_a"]
