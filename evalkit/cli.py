"""The `evalkit` command: parses, calls the stages, maps errors to exit codes (0 ok, 1 gate failed, 2 bad input)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .config import check_plotly_js, open_run, parse_list, parse_tolerances, resolve_config, user_path
from .errors import EvalkitError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=False,
                  help="How many sampling steps, with which scheduler, are enough?")


def _sweep_overrides(model, schedulers, steps, seeds, prompts, out, batch_size, device, dtype, guidance, size,
                     reference_steps, reference_scheduler, negative_prompt, metrics, backbones, fid_reference,
                     certify=None, check_scheduler=None, prompt_format=None, prompt_columns=None, prompt_sample=None):
    return dict(model=model, schedulers=parse_list(schedulers) if schedulers else None, steps=steps, seeds=seeds,
                metrics=parse_list(metrics) if metrics else None, backbones=backbones, fid_reference=fid_reference,
                prompts=prompts, prompt_format=prompt_format, prompt_columns=prompt_columns,
                prompt_sample=prompt_sample, out=out, batch_size=batch_size, device=device, dtype=dtype,
                guidance=guidance, size=size, reference_steps=reference_steps, reference_scheduler=reference_scheduler,
                negative_prompt=negative_prompt, certify=certify, check_scheduler=check_scheduler)


_CONFIG = typer.Argument(None, help="A sweep config (.toml) or, for stage commands, a run folder.")
_MODEL = typer.Option(None, help="builtin:mixture | diffusers:ID_OR_PATH | python:MODULE:FACTORY")
_SCHEDULERS = typer.Option(None, help="Comma-separated scheduler names (see `evalkit schedulers`).")
_STEPS = typer.Option(None, help="Comma-separated step counts, e.g. 1,2,4,8,16.")
_SEEDS = typer.Option(None, help="Number of seeds (0..N-1) or a comma-separated list.")
_PROMPTS = typer.Option(None, help="Prompts: a .txt/.csv/.tsv/.jsonl file, a published suite (PartiPrompts, "
                                    "DrawBench, GenEval, HPDv2, T2I-CompBench: a file, folder or glob) or "
                                    "hf:NAME[:SPLIT] from the local Hugging Face cache.")
_PROMPT_FORMAT = typer.Option(None, help="auto (default: by columns or shape) | txt | csv | tsv | jsonl | "
                                         "partiprompts | drawbench | geneval | hpdv2 | t2i-compbench | hf")
_PROMPT_COLUMNS = typer.Option(None, help="role=column pairs naming the source's columns, e.g. "
                                          "prompt=caption,category=style (roles: prompt, category, challenge, id).")
_PROMPT_SAMPLE = typer.Option(None, help="A reproducible subset: N, or n=N,by=COLUMN,allocation=proportional|equal,"
                                         "seed=S (a bigger n keeps every earlier prompt).")
_OUT = typer.Option(None, help="Run folder (default reports/<model>).")
_BACKEND = typer.Option(None, help="Where render and score run: local (default) | ray.")
_RAY_ADDRESS = typer.Option(None, help="Ray cluster: unset starts a local one; auto | HOST:PORT joins one.")
_WORKERS = typer.Option(None, help="Ray workers, one model/backbone replica each (default: one per CPU or GPU share).")
_GPUS = typer.Option(None, help="GPUs per Ray worker (e.g. 1, or 0.5 to share a GPU).")
_CERTIFY = typer.Option(None, "--certify/--no-certify",
                        help="Check every reference against a second solution (default on; costs one more image "
                             "per prompt+seed at reference_steps).")
_CHECK_SCHEDULER = typer.Option(None, help="The solver of that second solution (default: the model family's).")
_PLOTLY_JS = typer.Option("inline", help="inline: plotly.js inside the HTML (one self-contained file) | shared: "
                                         "one plotly.min.js beside the HTML, loaded by relative path.")


def _execution(backend, ray_address, workers, gpus_per_worker) -> dict:
    return dict(backend=backend, ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker)


@app.command()
def run(config: Optional[str] = _CONFIG, model: Optional[str] = _MODEL, schedulers: Optional[str] = _SCHEDULERS,
        steps: Optional[str] = _STEPS, seeds: Optional[str] = _SEEDS, prompts: Optional[str] = _PROMPTS,
        prompt_format: Optional[str] = _PROMPT_FORMAT, prompt_columns: Optional[str] = _PROMPT_COLUMNS,
        prompt_sample: Optional[str] = _PROMPT_SAMPLE, out: Optional[str] = _OUT, batch_size: Optional[int] = typer.Option(None), device: Optional[str] = None,
        dtype: Optional[str] = None, guidance: Optional[float] = None, size: Optional[int] = None,
        reference_steps: Optional[int] = None, reference_scheduler: Optional[str] = None,
        certify: Optional[bool] = _CERTIFY, check_scheduler: Optional[str] = _CHECK_SCHEDULER,
        negative_prompt: Optional[str] = None,
        metrics: Optional[str] = typer.Option(None, help="Comma-separated metrics (default: all; `evalkit metrics`)."),
        backbones: Optional[str] = typer.Option(None, help="metric=backbone pairs, e.g. lpips=vgg."),
        fid_reference: Optional[str] = typer.Option(None, help="references | FOLDER of real images | STATS.npz"),
        backend: Optional[str] = _BACKEND, ray_address: Optional[str] = _RAY_ADDRESS,
        workers: Optional[int] = _WORKERS, gpus_per_worker: Optional[float] = _GPUS,
        progress: bool = typer.Option(True, help="Show a progress bar."), plotly_js: str = _PLOTLY_JS):
    """Render the sweep (resuming any earlier run in the same folder), score it, print the run folder."""
    check_plotly_js(plotly_js)
    resolved = resolve_config(_path(config), **_sweep_overrides(  # config errors come before the stages are imported
        model, schedulers, steps, seeds, prompts, out, batch_size, device, dtype, guidance, size,
        reference_steps, reference_scheduler, negative_prompt, metrics, backbones, fid_reference, certify,
        check_scheduler, prompt_format, prompt_columns, prompt_sample),
        **_execution(backend, ray_address, workers, gpus_per_worker))
    _INTERRUPTED_RUN.append(resolved.run_dir())
    from .api import run as run_sweep

    _report(run_sweep(resolved, progress=progress, plotly_js=plotly_js))


@app.command()
def render(config: Optional[str] = _CONFIG, backend: Optional[str] = _BACKEND,
           ray_address: Optional[str] = _RAY_ADDRESS, workers: Optional[int] = _WORKERS,
           gpus_per_worker: Optional[float] = _GPUS, progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Stage 1 only, for a config file or an existing run folder."""
    source = _stage_config(config, backend, ray_address, workers, gpus_per_worker)
    from .api import render as render_stage

    _report(render_stage(source, progress=progress))


@app.command()
def score(config: Optional[str] = _CONFIG, backend: Optional[str] = _BACKEND,
          ray_address: Optional[str] = _RAY_ADDRESS, workers: Optional[int] = _WORKERS,
          gpus_per_worker: Optional[float] = _GPUS, progress: bool = typer.Option(True, help="Show progress bars.")):
    """Stage 2 only (renders anything missing first), for a config file or an existing run folder."""
    source = _stage_config(config, backend, ray_address, workers, gpus_per_worker)
    from .api import score as score_stage

    _report(score_stage(source, progress=progress))


def _path(text: str | None) -> Path | None:
    """A path argument or flag as the user typed it, resolved as evalkit resolves every path (config.user_path)."""
    return None if text is None else user_path(text)


def _source(config: str | None):
    """A CONFIG argument that may also be a run folder: the folder's config.toml, else the file (or None)."""
    path = _path(config)
    return open_run(path) if path is not None and path.is_dir() else path


def _stage_config(config, backend, ray_address, workers, gpus_per_worker):
    """A stage command's config (a file or a run folder's), validated before any stage is imported."""
    resolved = resolve_config(_source(config), **_execution(backend, ray_address, workers, gpus_per_worker))
    _INTERRUPTED_RUN.append(resolved.run_dir())
    return resolved


@app.command()
def report(run_dir: str = typer.Argument(..., help="A scored run folder."), plotly_js: str = _PLOTLY_JS):
    """Stage 3 only: write DIR/report.html (self-contained, opens offline)."""
    from .api import report as report_stage

    typer.echo(f"report: {report_stage(_path(run_dir), plotly_js)}")


@app.command()
def compare(runs: list[str] = typer.Argument(..., help="Scored run folders of one sweep, each RUN or RUN=label "
                                                        "(the first is the baseline)."),
            out: str = typer.Option("compare.html", help="The HTML file to write."),
            rules: Optional[str] = typer.Option(None, help="Gate rules file: the gate's verdict at the top."),
            steps: Optional[str] = typer.Option(None, help="Step counts in the image strip, e.g. 4,8 "
                                                           "(default: up to 5 spread over the sweep)."),
            plotly_js: str = _PLOTLY_JS):
    """One HTML report comparing runs of the same prompts and seeds (e.g. two models, or two releases)."""
    from .report.compare import write_comparison

    written = write_comparison(runs, _path(out), rules=_path(rules), strip_steps=steps, plotly_js=plotly_js)
    typer.echo(f"comparison: {written}")


@app.command()
def metrics():
    """List the metrics registry."""
    from .metrics import METRICS
    from .metrics.base import MetricOptions

    for spec in METRICS:
        missing = spec.missing_weights(MetricOptions())
        state = "ready" if not missing else "missing weights: " + "; ".join(f"{w.path()} (fetch: {w.fetch})"
                                                                            for w in missing)
        better = "higher is better" if spec.higher_is_better else "lower is better"
        typer.echo(f"{spec.name:<12}{spec.inputs:<17}{spec.kind:<13}{better:<18}{spec.backbone}")
        typer.echo(f"{'':<12}preprocessing: {spec.preprocessing}; {state}")


@app.command("min-steps")
def min_steps(config: Optional[str] = _CONFIG,
              tolerance: Optional[list[str]] = typer.Option(None, help="metric=value, repeatable (e.g. ssim=0.05)."),
              search: str = typer.Option("exhaustive", help="exhaustive (the whole sweep) | adaptive (bisection)."),
              out: Optional[str] = _OUT):
    """Minimum useful step count per scheduler, as JSON on stdout (also written to summary.json)."""
    import json

    source = resolve_config(_source(config))
    tolerances = parse_tolerances(",".join(tolerance)) if tolerance else None
    if search == "adaptive":
        from .minsteps.search import adaptive_min_steps

        result = adaptive_min_steps(source, tolerances=tolerances, out=out)
        cost = result["cost"]
        typer.echo(f"adaptive search: {cost['images_rendered']} new images; sweep NFE {cost['sweep_nfe']} vs "
                   f"{cost['exhaustive_sweep_nfe']} exhaustive ({cost['nfe_ratio']:.0%})", err=True)
    elif search == "exhaustive":
        from .api import run as run_sweep

        result = run_sweep(source, out=out, tolerances=tolerances).summary["min_steps"]
    else:
        raise EvalkitError(f"unknown search {search!r}: use --search exhaustive or --search adaptive")
    keep = ("min_steps", "reached", "why", "nfe", "seconds_per_image", "quality", "evidence", "evaluated_steps")
    typer.echo(json.dumps({name: {k: entry[k] for k in keep if k in entry}
                           for name, entry in result["schedulers"].items()}, indent=2))


@app.command()
def gate(baseline: Optional[str] = typer.Option(None, help="The run folder to compare against."),
         candidate: str = typer.Option(..., help="The run folder being judged."),
         rules: Optional[str] = typer.Option(None, help="Rules file (TOML); default: regressions and min steps."),
         junit: Optional[str] = typer.Option(None, help="Write JUnit XML here (one testcase per rule)."),
         markdown: Optional[str] = typer.Option(None, help="Write a PR-comment summary here."),
         thresholds_only: bool = typer.Option(False, help="Judge the candidate on \\[\\[band]] rules alone.")):
    """Release gate: exit 0 if every rule passes, 1 if any fails, 2 on bad input."""
    from .gate import gate_main

    raise typer.Exit(gate_main(_path(baseline), _path(candidate), rules=_path(rules), junit=_path(junit),
                               markdown=_path(markdown), thresholds_only=thresholds_only))


@app.command()
def recommend(run_dir: str = typer.Argument(..., help="A scored run folder."),
              metric: Optional[str] = typer.Option(None, help="Quality metric shown and ranked (default: lpips, "
                                                                "else ssim, else psnr)."),
              max_seconds: Optional[float] = typer.Option(None, help="Budget: best quality at most S s/image."),
              max_nfe: Optional[float] = typer.Option(None, help="Budget: best quality at most N NFE per image."),
              cost: str = typer.Option("nfe", help="Without a budget, cheapest by: nfe | seconds."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")):
    """The cheapest (scheduler, steps) that meets the min-steps bar, or the best quality within a budget."""
    import json

    from .report.recommend import recommend as pick, recommendation_text
    from .store.read import ScoredRun

    result = pick(ScoredRun.read(_path(run_dir)), metric, max_seconds=max_seconds, max_nfe=max_nfe, cost=cost)
    typer.echo(json.dumps(result, indent=2) if as_json else recommendation_text(result))


@app.command()
def selftest(config: Optional[str] = _CONFIG, seeds: Optional[str] = _SEEDS, out: Optional[str] = _OUT,
             progress: bool = typer.Option(False, help="Show a progress bar.")):
    """Check the min-steps logic against the exact model's ground truth; exit 0 if every scheduler matches."""
    resolved = resolve_config(_path(config), seeds=seeds, out=out or "reports/selftest")
    from .selftest import format_rows, selftest as run_selftest

    rows, ok = run_selftest(resolved)
    for line in format_rows(rows):
        typer.echo(line)
    typer.echo("selftest passed" if ok else "selftest FAILED: the harness's minimum steps disagree with ground truth")
    raise typer.Exit(0 if ok else 1)


@app.command()
def doctor():
    """Environment, devices, and per metric: the weight files it needs, where it looked, found or missing."""
    import os

    import torch

    from .metrics import METRICS
    from .metrics.base import MetricOptions, torch_home
    from .stages.summary import versions

    for name, version in versions().items():
        typer.echo(f"{name:<16}{version}")
    typer.echo(f"{'cuda':<16}{torch.cuda.is_available()} ({torch.cuda.device_count()} device(s))")
    typer.echo(f"{'TORCH_HOME':<16}{torch_home()}")
    typer.echo(f"{'HF_HOME':<16}{os.environ.get('HF_HOME', '~/.cache/huggingface (default)')}")
    typer.echo(f"{'HF_HUB_OFFLINE':<16}{os.environ.get('HF_HUB_OFFLINE', '(unset)')}")
    for spec in METRICS:
        files = spec.weights(MetricOptions())
        typer.echo(f"\n{spec.name}: {'ready' if all(w.found() for w in files) else 'SKIPPED (missing weights)'}"
                   f"{'' if files else ' (needs no weights)'}")
        for w in files:
            typer.echo(f"  {'found  ' if w.found() else 'missing'} {w.description}: {w.path()}")
            if not w.found():
                typer.echo(f"          fetch: {w.fetch}")


@app.command()
def schedulers():
    """List the scheduler registry."""
    from .sweep.schedulers import SCHEDULERS

    typer.echo(f"{'name':<24}{'family':<8}{'display name':<20}{'diffusers class':<34}notes")
    for spec in SCHEDULERS:
        ok, why = spec.available()
        notes = ", ".join(x for x in ["stochastic" if spec.stochastic else "", spec.notes, "" if ok else why] if x)
        typer.echo(f"{spec.name:<24}{spec.family:<8}{spec.display:<20}{spec.cls_name or '(as shipped)':<34}{notes}")


@app.command()
def models():
    """List the model backends."""
    from .models import BACKENDS

    for backend in BACKENDS:
        typer.echo(f"{backend.name:<12}{backend.usage}")


def _report(result) -> None:
    stats = result.stats
    typer.echo(f"rendered {stats.rendered} new image(s); {stats.planned} planned; "
               f"{len(result.images)} on disk for this sweep")
    if stats.replaced:
        typer.echo(f"re-rendered {stats.replaced} image(s) whose PNG no longer matched its sha256 in images.parquet")
    if result.score is not None:
        computed = ", ".join(f"{name} {count}" for name, count in result.score.computed.items())
        typer.echo(f"scored new images: {computed or 'none'}")
        for name, why in result.score.skipped.items():
            typer.echo(f"skipped {name}: {why}")
        for warning in result.score.warnings:
            typer.echo(f"warning: {warning}")
    typer.echo(f"run folder: {result.dir}")
    if getattr(result, "report", None) is not None:
        typer.echo(f"report: {result.report}")


_INTERRUPTED_RUN: list[Path] = []  # the run folder a stage command works in, for the Ctrl-C message


def _interrupted() -> str:
    """What a Ctrl-C leaves: every finished batch's PNGs and rows (written atomically), and how to resume."""
    if not _INTERRUPTED_RUN:
        return "interrupted"
    folder = _INTERRUPTED_RUN[-1]
    kept = len(list((folder / "images").glob("*.png"))) if (folder / "images").is_dir() else 0
    return (f"interrupted: {kept} finished image(s) are kept in {folder} (cached scores too); "
            "rerun the same command to resume: only missing images render")


def _usage_line(exc: Exception) -> str:
    """A click usage error as one line: what is wrong, then where the command's usage is explained."""
    message = " ".join(str(exc.format_message()).split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "evalkit"
    return f"{message}: see `{command} --help`"


def main() -> None:
    """Console entry point: EvalkitError -> one line on stderr, exit 2, no traceback."""
    _INTERRUPTED_RUN.clear()
    try:
        code = app(standalone_mode=False, prog_name="evalkit")
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside the command (typer handles it inside: see below)
        typer.echo(_interrupted(), err=True)
        sys.exit(130)
    except Exception as exc:
        # usage errors from typer's (vendored) click: one line like every other bad input, exit 2
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            typer.echo(f"error: {_usage_line(exc)}", err=True)
            sys.exit(2 if exc.exit_code else 0)
        if type(exc).__name__ == "Abort":  # Ctrl-C as plain click reports it
            typer.echo(_interrupted(), err=True)
            sys.exit(130)
        raise
    if code == 130:  # Ctrl-C: typer turns KeyboardInterrupt into Exit(130), returned under standalone_mode=False
        typer.echo(_interrupted(), err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
