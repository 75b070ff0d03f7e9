"""Gate statistics for set metrics: a joint unit-bootstrap CI, pass on its worse bound, one target only."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evalkit
import fake_weights
from evalkit.errors import EvalkitError
from evalkit.gate import gate_main
from evalkit.gate.rules import Rule
from evalkit.gate.sets import judge_set_regression
from evalkit.metrics import METRICS
from evalkit.metrics.base import MetricOptions
from evalkit.metrics.fid import frechet_distance_fast
from evalkit.stages.features import feature_store
from evalkit.store.folder import RunDir
from evalkit.store.read import ScoredRun

PROMPTS = "a ginger cat sleeping on a wool blanket\na small orange fish swimming in a glass bowl\n"
WORSE = "python:plugins.worse_mixture:make_pipeline"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Runs scored against one folder of 'real' images (the exact model's high-step renders), and one against
    its own references."""
    root = tmp_path_factory.mktemp("setgate")
    (root / "prompts.txt").write_text(PROMPTS)
    home = root / "torch_home"
    fake_weights.write_inception_fid(home)
    sweep = {"schedulers": ["euler"], "steps": [3, 15], "seeds": 3, "prompts": str(root / "prompts.txt"),
             "reference_steps": 30, "metrics": ["fid", "kid"], "device": "cpu"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        own = evalkit.score({**sweep, "out": str(root / "own")}).dir
        real = root / "real"
        real.mkdir()
        images = pd.read_parquet(own / "images.parquet")
        for path in images[images.role == "reference"].path:
            shutil.copy(own / path, real / Path(path).name)
        target = {"fid_reference": str(real)}
        out = {name: evalkit.score({**sweep, **extra, **target, "out": str(root / name)}).dir
               for name, extra in {"base": {}, "same": {}, "worse": {"model": WORSE}}.items()}
    return {**out, "own": own, "root": root}


def rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_set_metric_regression_rows_have_a_ci_and_identical_runs_pass(runs, tmp_path, capsys):
    code = gate_main(runs["base"], runs["same"], rules=rules(tmp_path, "[[regression]]\nmetric = 'fid'\nmax_drop = 0\n"
                                                             "[[regression]]\nmetric = 'kid'\nmax_drop = 0\n"))
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert out.count("regression fid euler@") == 2 and out.count("regression kid euler@") == 2
    assert "6 units resampled jointly in both runs" in out and "[0, 0]" in out  # same images: every replicate 0


def test_point_values_match_an_independent_fid_and_a_worse_model_fails_on_the_bound(runs, tmp_path):
    base, worse = ScoredRun.read(runs["base"]), ScoredRun.read(runs["worse"])
    rule = Rule("regression", "test", metric="fid", limit=0.0)
    [outcome] = judge_set_regression(rule, base, worse, [("euler", 15)])
    # the baseline's value is the FID of its 6 column images against the folder, as score computed it
    assert outcome.baseline == pytest.approx(base.set_value("fid", ("euler", 15)), rel=1e-9)
    spec = METRICS.get("fid")
    store = feature_store(RunDir(runs["base"]), spec, MetricOptions())
    images = pd.read_parquet(runs["base"] / "images.parquet")
    column = images[(images.role == "sweep") & (images.steps == 15)]
    real = images[images.role == "reference"]
    assert outcome.baseline == pytest.approx(frechet_distance_fast(store.load(column.sha256), store.load(real.sha256)),
                                             rel=1e-9)
    lo, hi = outcome.ci
    assert outcome.delta < 0 and lo <= outcome.delta <= hi  # delta oriented: negative = worse FID
    assert not outcome.passed and "beyond max_drop" in outcome.message
    # judged on the worse bound, not the mean: a max_drop between the two still fails
    between = (-outcome.delta - lo) / 2  # the mean's drop is within it, the bound's drop is not
    [loose] = judge_set_regression(Rule("regression", "t", metric="fid", limit=between), base, worse, [("euler", 15)])
    assert -outcome.delta < between < -lo and not loose.passed
    [wide] = judge_set_regression(Rule("regression", "t", metric="fid", limit=-lo + 1e-9), base, worse, [("euler", 15)])
    assert wide.passed


def test_band_rows_on_set_metrics_report_the_ci(runs, tmp_path, capsys):
    table = pd.read_parquet(runs["worse"] / "set_scores.parquet").set_index(["metric", "steps"])
    row = table.loc[("kid", 15)]
    code = gate_main(None, runs["worse"], thresholds_only=True,
                     rules=rules(tmp_path, f"[[band]]\nmetric = 'kid'\nscheduler = 'euler'\nsteps = 15\n"
                                           f"lo = 0\nhi = {row.value * 2}\n"))
    out = capsys.readouterr().out
    assert code == 0 and f"[{row.ci_low:.4g}, {row.ci_high:.4g}]" in out


def test_different_targets_or_backbones_are_refused(runs, tmp_path, evalkit_cli):
    fid = rules(tmp_path, "[[regression]]\nmetric = 'fid'\nmax_drop = 0\n")
    code, _, err = evalkit_cli(["gate", "--baseline", str(runs["own"]), "--candidate", str(runs["base"]),
                                "--rules", str(fid)])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "fid was scored against different targets (fid_reference 'references' vs" in err
    other = runs["root"] / "other-backbone"
    shutil.copytree(runs["same"], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["metrics"]["kid"]["backbone"] = "some other inception"
    (other / "summary.json").write_text(json.dumps(summary))
    code, _, err = evalkit_cli(["gate", "--baseline", str(runs["base"]), "--candidate", str(other),
                                "--rules", str(fid)])
    assert code == 2 and "kid backbone" in err and len(err.strip().splitlines()) == 1


def test_missing_cached_features_are_a_one_line_error(runs, tmp_path):
    broken = runs["root"] / "no-features"
    shutil.copytree(runs["same"], broken)
    shutil.rmtree(RunDir(broken).features_root)
    with pytest.raises(EvalkitError, match="cached fid feature file"):
        judge_set_regression(Rule("regression", "t", metric="fid"), ScoredRun.read(runs["base"]), ScoredRun.read(broken),
                             [("euler", 15)])
    assert np.isfinite(ScoredRun.read(runs["base"]).set_value("fid", ("euler", 15)))


def test_cmmd_on_a_configured_backbone_is_gated_from_the_runs_own_embedding_cache(tmp_path, capsys):
    """The gate reads the feature folder score wrote for the run's cmmd backbone (not the default's)."""
    from fake_clip import backbone_string, save_tiny_clip

    (tmp_path / "prompts.txt").write_text(PROMPTS)
    backbone = backbone_string(save_tiny_clip(tmp_path / "clip"))
    sweep = {"schedulers": ["euler"], "steps": [3, 15], "seeds": 3, "prompts": str(tmp_path / "prompts.txt"),
             "reference_steps": 30, "metrics": ["cmmd"], "backbones": {"cmmd": backbone}}
    base, same = (evalkit.score({**sweep, "out": str(tmp_path / name)}).dir for name in ("base", "same"))
    code = gate_main(base, same, rules=rules(tmp_path, "[[regression]]\nmetric = 'cmmd'\nmax_drop = 0\n"))
    out = capsys.readouterr().out
    assert code == 0 and out.count("regression cmmd euler@") == 2 and "6 units resampled jointly" in out
