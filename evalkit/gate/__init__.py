"""The release gate: judge a candidate run folder against a baseline (or against absolute bands), exit 0/1.

`gate_main(baseline, candidate, rules=None, junit=None, markdown=None, thresholds_only=False)` prints a
table and returns the exit code (0 every rule instance passes, 1 any fails); bad input raises
`EvalkitError` (exit 2 in the CLI).

Comparability: both runs must share prompts (ids and text), seeds, image size, guidance, negative prompt,
reference scheduler and steps, min-steps tolerances and metric backbones, and at least one
(scheduler, steps) column. The model may differ: that is what is being gated.

Rules file (TOML); every table is optional, every key below is the whole set of allowed keys:

    [[regression]]            # paired: candidate vs baseline image of the same (prompt, seed) unit
    metric = "ssim"           # a metric scored in both runs
    scheduler = "*"           # a scheduler name, or "*" (default) = every shared scheduler
    steps = "*"               # an int, or "*" (default) = every shared step count
    max_drop = 0.01           # required, >= 0, in the metric's units
    category = "Vehicles"     # optional: only the units of this prompt category (a suite's; per-image metrics)

    [[min_steps]]
    scheduler = "*"           # default "*"
    max_increase = 0          # required, >= 0: candidate's minimum useful steps minus baseline's
    category = "Vehicles"     # optional: the category's own answer (summary.json min_steps.categories)

    [[band]]                  # MLPerf-style absolute band on the candidate's set_scores value
    metric = "clip_score"
    scheduler = "euler"       # or "*"
    steps = 20                # or "*"
    lo = 31.5                 # required, lo <= value <= hi passes
    hi = 40.0

regression: delta = candidate - baseline per unit, sign flipped for lower-is-better metrics so negative =
worse; its mean gets a 95% percentile-bootstrap CI over (prompt, seed) units (2000 replicates, seeded, all
columns of a metric resampled with the same units, as in stats/bootstrap.py). PASS iff the worse CI bound shows a drop
of at most max_drop (judged on the bound, not the mean). Set metrics (FID/KID) have no per-unit values: their CI
comes from resampling the shared units jointly in both runs and recomputing the metric from the cached features
(gate/sets.py); runs scored against different targets (fid_reference) are refused. A band rule reports the
candidate's own 95% interval from set_scores (it passes on the value, as MLPerf's bands do). A "*" scheduler
skips columns flagged `not-convergent` (stochastic samplers on convergence metrics); name the scheduler to gate
them anyway.

min_steps: from summary.json. A scheduler that reached the plateau in the baseline but not in the candidate
fails; one that reaches it in neither passes (with a note). With `category`, the category's own answers are
compared; a category too small to judge (minsteps/categories.py MIN_UNITS) in either run compares nothing, and a
category neither run has is bad input (exit 2), as is `category` on a set metric (FID/KID/CMMD judge whole runs).

    [[broken_images]]         # always applied: without this table, max_broken = 0 for every scheduler
    scheduler = "*"           # a swept scheduler, "references", or "*" (default) = each of them
    max_broken = 0            # non-finite or blank images the candidate may have there (default 0)

broken_images: a broken image has no scores (it is never compared with anything), so without this rule a
model returning NaN could pass every other rule. To accept some, relax it explicitly in the rules file.

    [[uncertified_references]]  # always applied: without this table, max_uncertified = 0
    max_uncertified = 0         # references of the candidate no second solution confirms (default 0)

uncertified_references: a unit whose reference and check disagree, with no tie-break siding with either
(stages/certify.py), has no convergence values: every convergence verdict rests on the other units. References a
tie-break corrected are named in the outcome's message but pass. A candidate scored with certify = false passes
this rule with a message saying its references were not checked.

A gate that compares nothing (e.g. every swept scheduler stochastic, so "*" regression rules on convergence
metrics skip every column and neither run reaches minimum steps) is bad input, exit 2: gate such sweeps on
FID/KID or clip_score, or name the scheduler in the rule.

Without a rules file: a regression rule per per-image metric scored in both runs that has a default
tolerance (minsteps.perseed.default_tolerances(), used as max_drop; e.g. psnr has none and is not gated), over every
shared column, plus `min_steps` with max_increase 0 for every scheduler. With `thresholds_only`, one run
(the candidate) is judged on the file's [[band]] rules only.

Layout: rules.py (the rules file and the defaults), comparable.py (may two runs be compared), judge.py and
sets.py (per-image and set-metric judging), outcome.py (typed results), outputs.py (console, markdown, JUnit),
main.py (`gate_main`, what `evalkit gate` runs).
"""
from .main import gate_main

__all__ = ["gate_main"]
