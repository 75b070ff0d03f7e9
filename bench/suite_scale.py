"""Large prompt suites stay fast: planning and report time against the number of prompts (goal: no worse than linear).

  planning  what `evalkit render` does before its first image: evalkit.api.render itself, stopped where it calls
            render_jobs (the prompt file read, the model loaded and the sweep resolved and checked, the RenderJobs
            with their content keys, the run folder's config and tables written)
  report    `evalkit.report.write_report` on a scored run folder of N prompts (the real code path: ScoredRun.read,
            every section, the grid's thumbnails, report.html written), report.html's size, and the seconds headless
            Chromium takes to open it and draw every chart

The prompts are synthetic, short and unique (a PartiPrompts-format TSV: Prompt, Category, Challenge, Note; 12
categories, 11 challenge levels). The scored folders are built once per N (not timed): a small real sweep of
`builtin:mixture` (BASE_PROMPTS prompts, SWEEP) is rendered and scored (ssim + psnr), then its tables are scaled to
N prompts by reusing its images: prompt i's rows are those of real prompt i % BASE_PROMPTS under new keys, each
PNG hard-linked as images/<new key>.png (readers verify every sha256); per-image scores are the real ones with each
prompt's distance to the plateau scaled by its own seeded factor (so prompts differ in steps to plateau);
set_scores and summary.json are the real run's (every section, min steps included, has real content).
growth = t(10N) / t(N) / 10: 1 is linear, below 1 is fixed costs being spread.

usage: python bench/suite_scale.py [--sizes 100,1000,10000] [--repeats 3]
       python bench/suite_scale.py --parti FILE [--count 1632]   # only write a PartiPrompts-format TSV
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

CATEGORIES = {  # PartiPrompts' 12 categories, each with subjects a prompt of it would name
    "Abstract": ["concentric circles", "a smooth gradient", "a checkerboard pattern", "swirling lines", "floating cubes",
                 "interlocking rings", "a spiral of dots", "shattered glass shapes", "soft color fields", "a maze"],
    "Animals": ["a ginger kitten", "an orange fish", "a sleepy fox", "a heron", "a pair of otters", "a tabby cat",
                "a golden retriever", "a sea turtle", "a barn owl", "a small rabbit", "a red panda", "a koi fish"],
    "Artifacts": ["an old brass key", "a leather backpack", "a ceramic teapot", "a pocket watch", "a wooden chair",
                  "a paper lantern", "a vintage camera", "a glass bottle", "a typewriter", "a woven basket"],
    "Arts": ["a marble statue", "a stained glass window", "a charcoal sketch", "a bronze sculpture", "a mosaic",
             "a watercolor of hills", "an oil painting of waves", "a woodcut print", "a clay figurine"],
    "Food & Beverage": ["three apples", "a bowl of ramen", "a stack of pancakes", "a cup of espresso", "a lemon tart",
                        "a slice of pizza", "a glass of orange juice", "a plate of dumplings", "a loaf of bread"],
    "Illustrations": ["a cartoon robot", "a storybook dragon", "a comic hero", "a children's book bear",
                      "a flat vector city", "an ink drawing of a castle", "a sticker of a cactus", "a pixel-art knight"],
    "Indoor Scenes": ["a cozy reading nook", "a sunlit kitchen", "a quiet library", "a cluttered workshop",
                      "a hotel lobby", "a greenhouse", "an empty classroom", "a candle-lit dining room"],
    "Outdoor Scenes": ["the sun setting over rolling hills", "waves breaking on a quiet beach",
                       "snow-capped mountain peaks", "a foggy pine forest", "a desert canyon", "a rocky coastline",
                       "a field of sunflowers", "a frozen lake", "a waterfall in a jungle"],
    "People": ["a smiling face", "a hiker standing in tall grass", "an old fisherman", "a street musician",
               "a chef at work", "two children playing", "a dancer mid-leap", "a woman reading", "a cyclist"],
    "Produce & Plants": ["a potted fern", "a basket of tomatoes", "a cherry blossom branch", "a row of cabbages",
                         "a bonsai tree", "a bunch of grapes", "a sunflower", "wild mushrooms", "a lemon tree"],
    "Vehicles": ["a red bicycle", "a vintage car", "a steam locomotive", "a sailboat", "a yellow taxi",
                 "a hot air balloon", "a cargo ship", "a motor scooter", "a fire truck", "a biplane"],
    "World Knowledge": ["the Eiffel Tower", "the Great Wall", "a red STOP sign", "a chalkboard that reads HELLO",
                        "the Sydney Opera House", "a Japanese torii gate", "the pyramids of Giza", "Big Ben"],
}
# PartiPrompts' 11 challenge levels
CHALLENGES = ["Basic", "Complex", "Fine-grained Detail", "Imagination", "Linguistic Structures", "Perspective",
              "Properties & Positioning", "Quantity", "Simple Detail", "Style & Format", "Writing & Symbols"]
MODIFIERS = ["", "small ", "large ", "weathered ", "bright ", "dusty ", "glossy ", "tiny ", "ancient ", "colorful "]
SETTINGS = ["", "at dawn", "at noon", "at dusk", "at night", "in the rain", "in the snow", "under a clear sky",
            "on a white table", "in soft light", "in fog", "by a window", "in a city street", "near the sea"]
STYLES = ["", "photo", "studio portrait", "oil painting", "watercolor", "pencil sketch", "3d render",
          "35mm film", "wide shot", "close-up", "isometric view", "in the style of a postcard"]


def synthetic_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` unique short prompts, PartiPrompts-style rows, categories and challenges cycled so each holds a share."""
    rng, rows, seen = random.Random(seed), [], set()
    names = list(CATEGORIES)
    for _ in range(50 * count):  # the vocabulary holds ~100,000 distinct prompts: far below that, few draws repeat
        if len(rows) == count:
            break
        category = names[len(rows) % len(names)]
        subject = rng.choice(CATEGORIES[category])
        modifier = rng.choice(MODIFIERS) if subject.startswith(("a ", "an ")) else ""
        if modifier:  # "a small ..." / "an ancient ...": re-article after the modifier
            word = subject.split(" ", 1)[1]
            subject = ("an " if modifier[0] in "aeiou" else "a ") + modifier + word
        parts = [subject, rng.choice(SETTINGS)]
        style = rng.choice(STYLES)
        text = " ".join(p for p in parts if p) + (f", {style}" if style else "")
        if text in seen:
            continue
        seen.add(text)
        challenge = CHALLENGES[rng.randrange(len(CHALLENGES))]
        rows.append({"Prompt": text, "Category": category, "Challenge": challenge, "Note": ""})
    if len(rows) < count:
        raise SystemExit(f"the synthetic vocabulary ran out of unique prompts at {len(rows)} of {count}")
    return rows


def write_suite(path: Path, count: int, seed: int = 0) -> Path:
    """A PartiPrompts-format TSV (Prompt, Category, Challenge, Note) of `count` unique synthetic prompts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Prompt", "Category", "Challenge", "Note"], delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(synthetic_rows(count, seed))
    return path


SWEEP = dict(schedulers=["euler", "euler_a", "dpmpp_2m_karras"], steps=[2, 4, 8, 15, 25, 40], seeds="1")
BASE_PROMPTS = 12  # prompts of the real run whose images and scores the scaled folders reuse


class Planned(Exception):
    """Raised where `evalkit render` would start rendering: planning is done."""


def plan_seconds(prompts: Path, out: Path) -> tuple[float, dict[str, float], int]:
    """What `evalkit render` does before its first image: evalkit.api.render itself, stopped where it calls
    render_jobs (config, prompt file read, model and sweep resolved and checked, jobs planned, the run folder's
    config, prompts and jobs tables written). Its steps are timed apart by wrapping them where api.render calls them."""
    import evalkit.api as api

    parts: dict[str, float] = {}

    def timed_part(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    def stop(run_dir, jobs, *args, **kwargs):
        raise Planned(len(jobs))

    steps = {"read prompts": next((n for n in ("run_prompts", "load_prompts") if hasattr(api, n)), None),
             "prepare": "prepare_sweep", "plan_jobs": "plan_jobs"}
    originals = {n: getattr(api, n) for n in [*steps.values(), "render_jobs"] if n}
    for label, name in steps.items():
        if name:
            setattr(api, name, timed_part(label, originals[name]))
    api.render_jobs = stop
    start = time.perf_counter()
    try:
        api.render({**SWEEP, "prompts": str(prompts), "out": str(out)})
        raise RuntimeError("evalkit.api.render no longer calls render_jobs: update bench/suite_scale.py")
    except Planned as planned:
        seconds, jobs = time.perf_counter() - start, planned.args[0]
    finally:
        for name, function in originals.items():
            setattr(api, name, function)
    parts["rest"] = seconds - sum(parts.values())
    return seconds, parts, jobs


def base_run(root: Path) -> Path:
    """The real run the scaled folders reuse: BASE_PROMPTS prompts of the suite, SWEEP, ssim + psnr."""
    import evalkit

    prompts = write_suite(root / "base.tsv", BASE_PROMPTS)
    return evalkit.run({**SWEEP, "prompts": str(prompts), "out": str(root / "base"), "metrics": ["ssim", "psnr"],
                        "seeds": 1}).dir


def new_key(key: str, index: int) -> str:
    return hashlib.sha256(f"{key}/{index}".encode()).hexdigest()[:24]


def scaled_run(base: Path, count: int, root: Path) -> Path:
    """A scored run folder of `count` suite prompts made from `base`'s tables and PNGs (see the module docstring)."""
    import numpy as np
    import pandas as pd

    from evalkit.store.folder import RunDir

    out = RunDir(root / f"scaled-{count}")
    out.images_dir.mkdir(parents=True)
    suite = write_suite(root / f"suite-{count}.tsv", count)
    rows = synthetic_rows(count)
    images = pd.read_parquet(base / "images.parquet")
    jobs = pd.read_parquet(base / "jobs.parquet")
    images = jobs.merge(images, on="key")  # the current sweep, in plan order
    groups = [rows for _, rows in images.groupby("prompt_id", sort=True)]
    frames, keymap = [], {}
    for i in range(count):  # prompt i reuses base prompt i % BASE_PROMPTS's images
        rows_i = groups[i % len(groups)]
        keys = [new_key(k, i) for k in rows_i.key]
        keymap.update({(k, i): n for k, n in zip(rows_i.key, keys)})
        frames.append(rows_i.assign(key=keys, prompt_id=f"p{i:03d}", prompt=rows[i]["Prompt"],
                                    category=rows[i]["Category"], challenge=rows[i]["Challenge"],
                                    path=[f"images/{k}.png" for k in keys], base_key=rows_i.key.to_numpy(), unit=i))
    table = pd.concat(frames, ignore_index=True)
    for old, new in zip(table.base_key, table.key):
        os.link(base / "images" / f"{old}.png", out.images_dir / f"{new}.png")
    table.drop(columns=["base_key", "unit"]).to_parquet(out.images_table, index=False)
    # jobs in plan order: sweep (scheduler, steps, prompt), then references, then checks, as plan_jobs lists them
    order = {role: i for i, role in enumerate(["sweep", "reference", "check"])}
    ranked = table.assign(r=table.role.map(order)).sort_values(["r", "scheduler", "steps", "unit"], kind="stable")
    pd.DataFrame({"key": ranked.key}).to_parquet(out.jobs_table, index=False)
    scores = pd.read_parquet(base / "scores.parquet")
    summary = json.loads((base / "summary.json").read_text())
    rng = np.random.default_rng(0)
    joined = table[["key", "base_key", "unit"]].merge(scores, left_on="base_key", right_on="key",
                                                      suffixes=("", "_base"))
    z = rng.normal(size=(count, 2))[joined.unit.to_numpy(), (joined.metric == "psnr").to_numpy().astype(int)]
    perfect = joined.metric.map(lambda m: summary["metrics"][m].get("perfect") or np.nan).to_numpy(float)
    value = joined.value.to_numpy(float)
    finite = np.isfinite(perfect) & np.isfinite(value)
    # each prompt's distance to the plateau scaled by its own factor: hard and easy prompts, converged ones stay so
    value = np.where(finite, perfect - (perfect - value) * np.exp(0.5 * z), value * np.exp(0.02 * z))
    pd.DataFrame({"key": joined.key, "metric": joined.metric, "value": value}).to_parquet(out.scores_table,
                                                                                        index=False)
    out.set_scores_table.write_bytes((base / "set_scores.parquet").read_bytes())
    refs = [rows for _, rows in pd.read_parquet(base / "references.parquet").groupby("prompt_id", sort=True)]
    cert = []
    for i in range(count):
        rows_i = refs[i % len(refs)]
        mapped = {c: [keymap.get((k, i)) if isinstance(k, str) else k for k in rows_i[c]]
                  for c in ("key", "check_key", "tiebreak_key")}
        cert.append(rows_i.assign(prompt_id=f"p{i:03d}", **mapped))
    pd.concat(cert, ignore_index=True).to_parquet(out.references_table, index=False)
    config = (base / "config.toml").read_text().replace(str((base.parent / "base.tsv").resolve()), str(suite.resolve()))
    out.config_file.write_text(config)
    summary["config"]["prompts"] = str(suite.resolve())
    out.write_summary(summary)
    return out.path


def timed(repeats: int, work) -> tuple[float, object]:
    """The median wall time of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report_parts(folder: Path) -> tuple[float, float]:
    """Seconds to read the folder (ScoredRun.read) and to render the page from it (render_report), apart."""
    from evalkit.report.html import render_report
    from evalkit.store.read import ScoredRun

    start = time.perf_counter()
    data = ScoredRun.read(folder)
    read = time.perf_counter() - start
    render_report(data, plotly_tag="<script></script>")
    return read, time.perf_counter() - start - read


CHROMIUM = Path("/usr/bin/chromium")


def browser_seconds(page: Path, repeats: int) -> float | None:
    """Median seconds for headless Chromium to open `page` and draw every chart (as tests/test_report_browser.py
    opens it: system chromium, network blocked); None without chromium or playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.is_file():
        return None
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
            tab = context.new_page()
            start = time.perf_counter()
            tab.goto(page.as_uri(), wait_until="load", timeout=300_000)
            tab.wait_for_function("[...document.querySelectorAll('.chart')].every(c => c.querySelector('.main-svg'))",
                                  timeout=300_000)
            times.append(time.perf_counter() - start)
            context.close()
        browser.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parti", type=Path, help="only write a PartiPrompts-format TSV of --count prompts here")
    parser.add_argument("--count", type=int, default=1632)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.parti:
        write_suite(args.parti, args.count)
        print(f"wrote {args.count} prompts to {args.parti}")
        return
    import torch

    from _common import machine
    from evalkit.report import write_report

    torch.set_num_threads(1)
    print(machine())
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        base = base_run(tmp)
        print(f"base run ({BASE_PROMPTS} prompts, {SWEEP['schedulers']} x {SWEEP['steps']}, 1 seed, ssim + psnr, "
              f"rendered and scored): {time.perf_counter() - start:.1f} s")
        plan_seconds(write_suite(tmp / "warm.tsv", 10), tmp / "warm")  # imports and the model, once
        results = {}
        for n in sizes:
            suite = write_suite(tmp / f"plan-{n}.tsv", n)
            plan, (_, parts, jobs) = timed(args.repeats, lambda: plan_seconds(suite, tmp / f"plan-{n}"))
            start = time.perf_counter()
            folder = scaled_run(base, n, tmp)
            built = time.perf_counter() - start
            report, path = timed(args.repeats, lambda: write_report(folder))
            read, render = report_parts(folder)
            results[n] = dict(plan=plan, report=report, jobs=jobs, size=path.stat().st_size, read=read, render=render,
                              parts=parts, built=built, load=browser_seconds(path, args.repeats))
            print(f"  N={n}: {jobs} jobs planned; scaled folder built in {built:.1f} s (not timed)", flush=True)
        print(f"median of {args.repeats}; growth = t(10N) / t(N) / 10 (1 = linear, goal <= ~1)")
        print(f"{'prompts':>8} {'jobs':>8} {'plan s':>8} {'ms/prompt':>9} {'growth':>7} {'report s':>9} "
              f"{'ms/prompt':>9} {'growth':>7} {'read s':>7} {'page s':>7} {'report.html':>12} {'open s':>7}")
        for i, n in enumerate(sizes):
            r, prev = results[n], results[sizes[i - 1]] if i else None
            growth = (lambda key: f"{r[key] / prev[key] / (n / sizes[i - 1]):7.2f}") if prev else (lambda key: f"{'':>7}")
            print(f"{n:>8} {r['jobs']:>8} {r['plan']:>8.2f} {1000 * r['plan'] / n:>9.3f} {growth('plan')} "
                  f"{r['report']:>9.2f} {1000 * r['report'] / n:>9.3f} {growth('report')} {r['read']:>7.2f} "
                  f"{r['render']:>7.2f} {r['size'] / 1e6:>9.2f} MB "
                  + (f"{r['load']:>7.2f}" if r["load"] is not None else f"{'n/a':>7}"))
        print("read s / page s: ScoredRun.read (every table checked, every PNG's sha256 verified) / render_report; "
              "open s: headless Chromium opening report.html until every chart is drawn (n/a: no chromium)")
        print("planning by part (last repeat), s: " + "; ".join(
            f"N={n}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[n]["parts"].items()) for n in sizes))


if __name__ == "__main__":
    main()
