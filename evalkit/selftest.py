"""`evalkit selftest`: the plateau logic checked against ground truth on the exact models, for both families.

On builtin:mixture (DDPM family) and builtin:mixture-flow (flow matching) the image every deterministic
scheduler converges to is computable (a tight ODE solve from the same noise). For each family the same rule
and tolerances that judge the harness's sweep against its high-step reference are applied to the same sweep
against that ground truth; the two answers must agree to within one swept step count per scheduler.

Reference certification is checked on every run: the units it leaves uncertified must be exactly those whose
reference is wrong (stages/certify.py's bound, applied to the reference and the ground truth). With the default
references nothing is wrong or flagged; builtin:mixture-early (every prompt picks its picture near t = 1) is also
run with a deliberately weak reference, Karras spacing at 50 steps, which draws another picture for some units:
certification must flag exactly those, and the answers, judged without them, must still match the ground truth's.

It drives whole runs (render, score, report) through the api, so it sits beside the CLI, above every stage:
minsteps/ supplies the rule it checks and must not import the api.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .api import run, score
from .config import SweepConfig
from .metrics import METRICS
from .metrics.base import MetricOptions
from .minsteps.answer import summarize_min_steps
from .minsteps.distribution import PIXEL, Distance, judge_schedulers
from .minsteps.perseed import default_tolerances
from .models import load_model
from .store.files import atomic_write, make_dirs
from .store.folder import RunDir
from .store.read import ScoredRun
from .store.tables import CORRECTED, UNCERTIFIED, UNCHECKED, UNIT_COLUMN, with_references
from .stages.certify import agree, distances
from .stages.features import feature_store
from .stages.workers import load_images
from .stats.bootstrap import bootstrap_means
from .sweep.schedulers import FAMILY_DEFAULTS, SCHEDULERS

METRIC = "ssim"  # weight-free, so the self-test runs on any machine
MODELS = {"ddpm": "builtin:mixture", "flow": "builtin:mixture-flow"}  # family -> its exact model
EARLY = "builtin:mixture-early"  # flow family; every prompt's picture is chosen near t = 1
# A reference that steps over that choice (bench/README.md, "Reference solvers"): wrong on some units of EARLY
WEAK_REFERENCE, WEAK_STEPS = "flow_dpmpp_2m_karras", 50


def selftest(config: SweepConfig) -> tuple[list[dict[str, Any]], bool]:
    """Rows (family, scheduler, harness, truth, match, rule) and whether every row matched (None: not judged).

    A config that names schedulers checks their families; one that names none checks both, with each family's
    defaults (DDPM: the default sweep's deterministic schedulers; flow: every deterministic flow solver in the
    registry). Each family's sweep is its own run folder, `<out>/<family>`; the DDPM family's stochastic
    samplers are checked by the distribution rule in `<out>/stochastic`.
    """
    rows = []
    named = {SCHEDULERS.get(name).family for name in config.schedulers or ()}
    for family, model in MODELS.items():
        if named and family not in named:  # a config that names schedulers checks only their families
            continue
        rows += [{"family": family, **row} for row in _selftest_one(family_config(config, family, model))]
    if not named or "flow" in named:
        rows += [{"family": "early", **row} for row in _selftest_one(early_config(config))]
    # stochastic samplers: the distribution rule against exact samples of builtin:mixture's distribution
    stochastic = tuple(s for s in (config.schedulers or FAMILY_DEFAULTS["ddpm"].schedulers)
                       if SCHEDULERS.get(s).stochastic and SCHEDULERS.get(s).family == "ddpm")
    rows += [{"family": "ddpm", **row} for row in stochastic_selftest(
        dataclasses.replace(config, schedulers=stochastic), RunDir(config.run_dir() / "ddpm"))]
    return rows, all(r["match"] is not False for r in rows)  # None: the rule could not judge, said in the row


def family_config(config: SweepConfig, family: str, model: str) -> SweepConfig:
    """The config's sweep on one family's exact model: its deterministic schedulers of that family (none named:
    DDPM's default deterministic ones, or every deterministic flow solver), its reference scheduler if it fits the
    family ("same" always does; otherwise None, so the run fills in the family's default), in `<out>/<family>`."""
    deterministic = [s.name for s in SCHEDULERS if s.family == family and not s.stochastic]
    chosen = [n for n in (SCHEDULERS.canonical(n) for n in config.schedulers or ()) if n in deterministic]
    if not chosen:
        chosen = [n for n in FAMILY_DEFAULTS[family].schedulers if n in deterministic] if family == "ddpm" \
            else deterministic
    reference = config.reference_scheduler
    if reference not in (None, "same") and SCHEDULERS.get(reference).family != family:
        reference = None
    return dataclasses.replace(config, model=model, metrics=(METRIC,), schedulers=tuple(chosen),
                               reference_scheduler=reference, out=str(config.run_dir() / family))


def early_config(config: SweepConfig) -> SweepConfig:
    """The flow family's sweep on builtin:mixture-early, below WEAK_STEPS, against the weak reference, certified."""
    steps = tuple(n for n in config.steps if n < WEAK_STEPS) or (1, 2, 4, 8)
    return dataclasses.replace(family_config(config, "flow", EARLY), steps=steps, reference_scheduler=WEAK_REFERENCE,
                               reference_steps=WEAK_STEPS, certify=True, check_scheduler=None,
                               out=str(config.run_dir() / "early"))


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The selftest table as printed by the CLI: a header, then one line per (family, scheduler)."""
    lines = [f"{'family':<8}{'scheduler':<22}{'harness':>9}{'truth':>9}  {'match':<7}"
             "rule (match: within one swept step count)"]
    for r in rows:
        match = {True: "yes", False: "NO"}.get(r["match"], "n/a")
        lines.append(f"{r['family']:<8}{r['scheduler']:<22}{str(r['harness']):>9}{str(r['truth']):>9}  {match:<7}"
                     f"{r.get('rule', '')} {r.get('why', '')}".rstrip())
    return lines


def _selftest_one(config: SweepConfig) -> list[dict[str, Any]]:
    """Rows (scheduler, harness, truth, match) for one exact model."""
    tolerance = {METRIC: (config.tolerances or default_tolerances())[METRIC]}
    scored = ScoredRun.read(run(dataclasses.replace(config, tolerances=tolerance)).dir)
    harness = scored.min_steps()["schedulers"]
    images, sweep = scored.images, scored.sweep
    folder = RunDir(scored.dir)  # images are opened by key, never by a row's `path`
    truth_paths = ground_truth_images(folder, sweep, config)
    scorer = METRICS.get(METRIC).build(MetricOptions())
    values = []
    for start in range(0, len(sweep), 64):
        chunk = sweep.iloc[start:start + 64]
        with torch.no_grad():
            scores = scorer.score(load_images(folder.image_path(k) for k in chunk.key),
                                  load_images(truth_paths[(r.prompt_id, r.seed)] for r in chunk.itertuples()))
        values += [(r.prompt_id, r.seed, r.scheduler, r.steps, METRIC, float(v)) for r, v in zip(chunk.itertuples(), scores)]
    values = pd.DataFrame(values, columns=[*UNIT_COLUMN, "metric", "value"])
    truth = summarize_min_steps(bootstrap_means(values), values, images, tolerance)["schedulers"]
    steps = sorted(config.steps)
    rows = [_row(s, harness[s]["min_steps"], truth[s]["min_steps"], steps, "per-seed convergence (ssim)")
            for s in sorted(truth)]
    return rows + [certification_row(scored, folder, truth_paths)]


def certification_row(scored: ScoredRun, folder: RunDir, truth: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """Units whose check disagreed with their reference (then corrected or uncertified) vs units whose reference is
    wrong (stages/certify.py's bound applied to the reference and the ground truth): they must be the same units,
    and every reference that stands after certification (the check, for a corrected one) must be right."""
    refs = scored.certification

    def wrong(keys: pd.Series) -> set[tuple[str, int]]:
        ssim, _, mean = distances(load_images(folder.image_path(k) for k in keys),
                                  load_images(truth[(p, s)] for p, s in zip(refs.prompt_id, refs.seed)))
        return {(p, int(s)) for p, s, a, m in zip(refs.prompt_id, refs.seed, ssim.tolist(), mean.tolist())
                if not agree(a, m)}

    flagged = {(p, int(s)) for p, s, status in zip(refs.prompt_id, refs.seed, refs.status)
               if status in (CORRECTED, UNCERTIFIED)}
    standing = refs.key.where(refs.status != CORRECTED, refs.check_key)
    unjudged = set(zip(refs.prompt_id[refs.status == UNCERTIFIED], refs.seed[refs.status == UNCERTIFIED]))
    truly, still = wrong(refs.key), wrong(standing) - {(p, int(s)) for p, s in unjudged}
    counts = {status: int((refs.status == status).sum()) for status in (CORRECTED, UNCERTIFIED, UNCHECKED)}
    names = ", ".join(f"{p}/{s}" for p, s in sorted(flagged | truly)[:6])
    return {"scheduler": f"references x{len(refs)}", "harness": len(flagged), "truth": len(truly),
            "match": flagged == truly and not still and not counts[UNCHECKED],
            "rule": "certification (flagged vs wrong units)",
            "why": ", ".join(f"{n} {status}" for status, n in counts.items() if n) + (f": {names}" if names else "")
                   + (f"; still wrong after correction: {len(still)}" if still else "")}


def ground_truth_images(run: RunDir, sweep: pd.DataFrame, config: SweepConfig) -> dict[tuple[str, int], Any]:
    """One quantised ground-truth PNG per prompt+seed, cached by everything that determines it."""
    model = load_model(config.model)
    pipe = model.pipe
    guidance = config.guidance if config.guidance is not None else model.default_guidance
    size = config.size or model.default_size
    folder = make_dirs(run.groundtruth_dir)
    paths = {}
    for unit in sweep[["prompt_id", "seed", "prompt"]].drop_duplicates(["prompt_id", "seed"]).itertuples():
        ident = json.dumps([model.identity, unit.prompt, unit.seed, guidance, size, config.negative_prompt])
        path = folder / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.png"
        if not _readable(path):  # missing, or a corrupt cache entry: computed again
            pixels = pipe.ground_truth(unit.prompt, unit.seed, guidance_scale=guidance, height=size, width=size,
                                       negative_prompt=config.negative_prompt)
            buffer = io.BytesIO()
            Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB").save(buffer, format="PNG")
            atomic_write(path, buffer.getvalue())
        paths[(unit.prompt_id, unit.seed)] = path
    return paths


def _readable(path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Stochastic samplers: the distribution rule against the exact distribution
# ----------------------------------------------------------------------------------------------------------

def stochastic_selftest(config: SweepConfig, truth_cache: RunDir) -> list[dict[str, Any]]:
    """Rows (scheduler, harness, truth, match, rule) for the sweep's stochastic samplers.

    The harness judges each sampler by the distribution rule (minsteps/distribution.py) against its high-step
    references. The truth applies the same rule with the target replaced by exact samples of the true
    distribution: for each prompt+seed, the probability-flow ODE solved to 1e-9 from the unit's own starting
    noise (`ground_truth_images`). The exact flow carries the Gaussian start to the model's distribution, so
    these are exact draws (up to the schedule's sigma_min = 0.029: the posterior mean there, 1.4% of the range
    less grain), made without any diffusers scheduler. Distance: KID's kernel on Inception features when
    those weights are present (then summary.json's own answer is the harness's), else the weight-free pixel
    RBF (distribution.PIXEL) on both sides; each row names it."""
    stochastic = tuple(s for s in config.schedulers if SCHEDULERS.get(s).stochastic)
    if config.guidance is not None and config.guidance > 1.0:  # guided ODE and SDE flows sample different laws
        return [{"scheduler": s, "harness": None, "truth": None, "match": None, "rule": "distribution",
                 "why": f"not checked: with guidance {config.guidance:g} the ODE's law is not the sampler's"}
                for s in stochastic]
    learned = not METRICS.get("kid").missing_weights(MetricOptions())
    if not stochastic:
        return []
    # no report for this sub-run: the rows are the output
    result = score(dataclasses.replace(config, model="builtin:mixture", schedulers=stochastic,
                                       metrics=("kid",) if learned else (METRIC,),
                                       out=str(config.run_dir() / "stochastic")))
    config, images = result.config, result.images  # resolved: the family's reference scheduler filled in
    pairs = with_references(images, config)
    truth = ground_truth_images(truth_cache, pairs, config)
    shas = {unit: hashlib.sha256(path.read_bytes()).hexdigest() for unit, path in truth.items()}
    pairs["truth_sha256"] = [shas[(p, s)] for p, s in zip(pairs.prompt_id, pairs.seed)]
    features, distance, harness = _harness(result, pairs, {shas[u]: path for u, path in truth.items()}, learned)
    exact = judge_schedulers(features, pairs, distance, target_column="truth_sha256")
    rows = [_row(s, harness[s]["min_steps"], exact[s]["min_steps"], sorted(config.steps),
                 f"distribution ({distance.name})")
            for s in sorted(exact)]
    for row in rows:  # a rule that could not judge checks nothing: say so instead of a vacuous match
        if "evidence" not in harness[row["scheduler"]]:
            row.update(match=None, why=f"not checked: {harness[row['scheduler']].get('why')}")
    return rows


def _harness(result: Any, pairs: pd.DataFrame, truth: dict[str, Any], learned: bool) -> tuple[Any, Distance, dict]:
    """The features both sides are measured with (truth images: sha -> path), the distance, and the harness's own
    answer per sampler: summary.json's when KID judged the run, else the same rule on the pixel kernel."""
    if learned:
        kid = METRICS.get("kid")
        store = feature_store(RunDir(result.dir), kid, MetricOptions())
        store.compute(kid, MetricOptions(batch_size=result.config.batch_size), list(truth.items()))
        harness = {s: e["distribution"] for s, e in result.summary["min_steps"]["schedulers"].items()}
        return store.load, Distance.of("kid"), harness
    folder = RunDir(result.dir)
    paths = {sha: folder.image_path(k) for sha, k in zip(result.images.sha256, result.images.key)} | truth

    def pixels(keys: list[str]) -> Any:
        return load_images(paths[k] for k in keys).flatten(1).double().numpy() / 255.0

    return pixels, PIXEL, judge_schedulers(pixels, pairs, PIXEL)


def _row(scheduler: str, ours: int | None, true: int | None, steps: list[int], rule: str) -> dict[str, Any]:
    """Agreement within one swept step count (None: not reached within the sweep, which must agree exactly)."""
    match = ours == true or (ours is not None and true is not None and abs(steps.index(ours) - steps.index(true)) <= 1)
    return {"scheduler": scheduler, "harness": ours, "truth": true, "match": match, "rule": rule}
