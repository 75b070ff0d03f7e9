"""SweepConfig: what to render, loaded from TOML and flags, validated with one-line errors."""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EvalkitError

DEFAULT_STEPS = (1, 2, 3, 4, 6, 8, 10, 15, 20, 25, 30, 40, 50)
DEFAULT_PROMPTS = "prompts/default.txt"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The execution backends (stages/executors.py registers one runner per name; config only needs the names,
# so validating a config imports no stage).
BACKENDS = ("local", "ray")
OWN_REFERENCES = "references"  # fid_reference: each column against its own units' high-step references
TOML_HEADER = "# resolved by evalkit: the exact sweep that produced this run folder"  # marks a run folder's config
DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPES = ("float32", "float16", "bfloat16")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
# A seed count beyond this is a typo, not a sweep: a million images per prompt and scheduler column is already
# far more than any distribution metric needs (FID's authors ask for 10k+ images in all).
MAX_SEED_COUNT = 1_000_000
PATH_KEYS = ("prompts", "out", "fid_reference")  # config values that name files or folders
HF_PREFIX = "hf:"  # prompts = "hf:NAME[:SPLIT]": a Hugging Face dataset in the local cache, not a path
# How a prompt source is read (sweep/prompts.py and sweep/suites.py hold one reader per name; config only needs the
# names, so validating a config imports no reader). "auto" recognises the format by the source's columns or shape.
PROMPT_FORMATS = ("auto", "txt", "csv", "tsv", "jsonl", "partiprompts", "drawbench", "geneval", "hpdv2",
                  "t2i-compbench", "hf")
PROMPT_ROLES = ("prompt", "category", "challenge", "id")  # prompt_columns: what each source column is to evalkit
SAMPLE_KEYS = ("n", "by", "allocation", "seed")  # prompt_sample
ALLOCATIONS = ("proportional", "equal")
# Largest image side: 4096 px already means 48 MiB of float32 pixels per image at each denoising step (plus the
# model's activations); no text-to-image model renders much beyond that natively, and a typo like 100000 px
# would need 120 GB for one image before anything fails.
MAX_SIZE = 4096


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. Every field is a TOML key of the same name; flags override the file."""

    model: str = "builtin:mixture"
    schedulers: tuple[str, ...] | None = None  # None: the model family's defaults (sweep/schedulers.py)
    steps: tuple[int, ...] = DEFAULT_STEPS
    seeds: tuple[int, ...] = (0, 1, 2, 3)  # `seeds = 4` in TOML or `--seeds 4` means 0..3
    prompts: str = DEFAULT_PROMPTS  # a file, a folder (or glob) of suite files, or "hf:NAME[:SPLIT]"
    prompt_format: str = "auto"  # PROMPT_FORMATS; auto: recognised by the source's columns or shape
    # the source's column for each of PROMPT_ROLES, e.g. {prompt = "caption"} (tables, jsonl and hf: sources)
    prompt_columns: dict[str, str] = field(default_factory=dict)
    # {} = every prompt; else {n, by, allocation, seed}: a reproducible stratified subset (sweep/sample.py)
    prompt_sample: dict[str, Any] = field(default_factory=dict)
    out: str | None = None  # default: reports/<model name>
    batch_size: int = 8
    device: str = "auto"  # auto: cuda if available, else mps, else cpu
    dtype: str = "float32"
    guidance: float | None = None  # None: the model's own default
    size: int | None = None  # square images; None: the model's own default
    negative_prompt: str | None = None
    # A common high-step reference per prompt+seed, rendered with a high-order deterministic
    # solver: more accurate than "the same scheduler at 1000 steps" (FIELD-NOTES) and one
    # reference per prompt+seed instead of one per scheduler. "same" = each scheduler's own.
    # None: the model family's (sweep/schedulers.py FAMILY_DEFAULTS)
    reference_scheduler: str | None = None
    reference_steps: int = 200
    # Certified references (stages/certify.py): every deterministic reference is checked against a second
    # solution of the same ODE from the same noise, by `check_scheduler` at reference_steps (None: the family's);
    # a unit whose two solutions disagree is left out of convergence metrics and fails the gate by default.
    certify: bool = True
    check_scheduler: str | None = None
    revision: str | None = None
    variant: str | None = None
    metrics: tuple[str, ...] = field(default=())  # score stage; () = every registered metric
    # metric -> backbone, e.g. {lpips = "vgg", clip_score = "ViT-L-14/openai"}; unset = the metric's default
    backbones: dict[str, str] = field(default_factory=dict)
    # what FID/KID compare each (scheduler, steps) set with: "references" (the high-step references),
    # a folder of real images, or an .npz with mu/sigma (FID only)
    fid_reference: str = OWN_REFERENCES
    # gating metric -> tolerance for minimum useful steps; empty = the documented defaults (minsteps/perseed.py)
    tolerances: dict[str, float] = field(default_factory=dict)
    # where render and score run (stages/executors.py); none of these change a result, only how fast it comes
    backend: str = "local"  # local | ray
    ray_address: str | None = None  # None: start a local Ray; "auto" or HOST:PORT: join that cluster
    workers: int | None = None  # Ray workers (model/backbone replicas); None: one per CPU, or per GPU share
    gpus_per_worker: float = 0.0

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("reports") / _slug(self.model)

    def prompts_path(self) -> Path:
        """The prompt file (or folder); the shipped default is found from any working directory."""
        path = Path(self.prompts)
        if self.prompts == DEFAULT_PROMPTS and not path.exists():
            return PROJECT_ROOT / DEFAULT_PROMPTS
        return path

    def prompts_source(self) -> str:
        """The prompts as a run folder records them: an absolute path, or the `hf:` dataset as written."""
        return self.prompts if is_hf_source(self.prompts) else str(self.prompts_path().resolve())


def is_hf_source(prompts: str) -> bool:
    return prompts.startswith(HF_PREFIX)


def hf_source(prompts: str) -> tuple[str, str | None]:
    """`hf:NAME[:SPLIT]` -> (NAME, SPLIT or None), or a one-line error saying how to write it."""
    name, _, split = prompts[len(HF_PREFIX):].partition(":")
    name, split = name.strip(), split.strip()
    if not name or ":" in split or name.count("/") > 1 or name.startswith("/") or name.endswith("/") \
            or (prompts.count(":") > 1 and not split):
        raise EvalkitError(f"prompts {prompts!r} is not a Hugging Face dataset name: write hf:NAME or hf:NAME:SPLIT, "
                           "e.g. hf:nateraw/parti-prompts:train")
    return name, split or None


KEYS = [f.name for f in dataclasses.fields(SweepConfig)]


def user_path(text: str | os.PathLike) -> Path:
    """A path as a user wrote it, resolved the one way evalkit resolves paths: `~` expanded (a quoted `"~/x"`, a
    `--flag=~/x` or a TOML value reaches evalkit unexpanded). Relative paths stay relative to the working
    directory (a config file's own relative paths are made relative to the file when it is read)."""
    return Path(text).expanduser()


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> SweepConfig:
    """Defaults < TOML file < overrides (flags). Relative paths in the file are relative to it."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_toml(user_path(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(values)


def make_config(values: dict[str, Any], source: str = "config") -> SweepConfig:
    unknown = [k for k in values if k not in KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EvalkitError(f"unknown key {unknown[0]!r} in {source}: {hint}valid keys are {', '.join(KEYS)}")
    v = dict(values)
    for name in ("schedulers", "metrics"):
        if v.get(name) is not None:  # schedulers None: the model family's defaults
            v[name] = tuple(_str_list(name, v[name]))
    if "steps" in v:
        v["steps"] = tuple(sorted(set(_positive_ints("steps", v["steps"]))))
    if "seeds" in v:
        v["seeds"] = _seeds(v["seeds"])
    for name in ("batch_size", "reference_steps", "size", "workers"):
        if v.get(name) is not None:
            v[name] = _positive_ints(name, [v[name]])[0]
    if "backbones" in v:
        v["backbones"] = _backbones(v["backbones"])
    if "tolerances" in v:
        v["tolerances"] = parse_tolerances(v["tolerances"])
    if v.get("prompt_format") is not None:
        v["prompt_format"] = _prompt_format(v["prompt_format"])
    if v.get("prompt_columns") is not None:
        v["prompt_columns"] = _prompt_columns(v["prompt_columns"])
    if v.get("prompt_sample") is not None:
        v["prompt_sample"] = parse_prompt_sample(v["prompt_sample"])
    if v.get("size") is not None and v["size"] > MAX_SIZE:
        raise EvalkitError(f"size {v['size']} px is too large (limit {MAX_SIZE}: one {v['size']}² image needs "
                           f"{3 * 4 * v['size'] ** 2 / 2**30:.0f} GiB of float32 pixels alone): use e.g. --size 512")
    if v.get("guidance") is not None:
        v["guidance"] = _number("guidance", v["guidance"])
    if "certify" in v and not isinstance(v["certify"], bool):
        raise EvalkitError(f"certify must be true or false, got {v['certify']!r}: e.g. certify = false (or "
                           "--no-certify) to skip the second solution of each reference")
    if "gpus_per_worker" in v:
        v["gpus_per_worker"] = _number("gpus_per_worker", v["gpus_per_worker"])
        if v["gpus_per_worker"] < 0:
            raise EvalkitError(f"gpus_per_worker must be >= 0, got {v['gpus_per_worker']:g}: e.g. 1, or 0.5 to share a GPU")
    if v.get("backend") is not None:
        if str(v["backend"]).lower() not in BACKENDS:
            raise EvalkitError(f"unknown backend {v['backend']!r}: use {' or '.join(BACKENDS)} "
                               "(--backend ray needs `pip install 'evalkit[ray]'`)")
        v["backend"] = str(v["backend"]).lower()
    _strings(v)
    if isinstance(v.get("device"), str) and not DEVICES.fullmatch(v["device"]):
        raise EvalkitError(f"unknown device {v['device']!r}: use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps")
    if isinstance(v.get("dtype"), str) and v["dtype"] not in DTYPES:
        raise EvalkitError(f"unknown dtype {v['dtype']!r}: use {', '.join(DTYPES)}")
    config = SweepConfig(**v)
    _check_prompt_source(config)
    if any(name.startswith("python:") for name in config.metrics):
        from .metrics.plugins import register_plugins  # imports the metrics registry: only when a plugin is named

        register_plugins(config.metrics)  # python:... metrics get their declared names in every stage and the gate
    if config.schedulers is not None and not config.schedulers:
        raise EvalkitError("schedulers is empty: name at least one (see `evalkit schedulers`)")
    if config.reference_steps <= max(config.steps):
        raise EvalkitError(
            f"reference_steps ({config.reference_steps}) must exceed the largest swept step count "
            f"({max(config.steps)}): raise reference_steps or drop the largest step counts"
        )
    return config


def resolve_config(config: SweepConfig | dict[str, Any] | str | os.PathLike | None = None,
                   **overrides: Any) -> SweepConfig:
    """A SweepConfig from any of the forms the stages take (a config, a dict, a file, None), plus overrides."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, SweepConfig):  # overrides are validated like any other value
        return make_config({**dataclasses.asdict(config), **overrides}) if overrides else config
    if isinstance(config, dict):
        return make_config({**config, **overrides})
    return load_config(config, **overrides)


def open_run(path: str | os.PathLike) -> SweepConfig:
    """The config of an existing run folder (for stage commands given a folder)."""
    folder = user_path(path)
    if not (folder / "config.toml").is_file():
        raise EvalkitError(f"{folder} is not a run folder (no config.toml): pass a run folder or a config file")
    return load_config(folder / "config.toml", out=str(folder))


def to_toml(config: SweepConfig) -> str:
    """The resolved config as TOML (None values are left out: they mean "model default")."""
    lines = [TOML_HEADER]
    for key in KEYS:
        value = getattr(config, key)
        if value is None:
            lines.append(f"# {key} = (model default)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


PLOTLY_JS = ("inline", "shared")  # report pages: plotly.js embedded in each, or one plotly.min.js beside them


def check_plotly_js(mode: str) -> str:
    if mode not in PLOTLY_JS:
        raise EvalkitError(f"unknown --plotly-js {mode!r}: use inline (one self-contained file) or shared")
    return mode


def parse_list(text: str) -> list[str]:
    """`a,b, c` (a flag value) -> ['a', 'b', 'c']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def read_toml(path: str | os.PathLike, what: str, without: str) -> dict[str, Any]:
    """A TOML file's table, or a one-line error saying the file is missing or where its syntax breaks."""
    path = user_path(path)
    if not path.is_file():
        raise EvalkitError(f"{what} {path} not found: pass an existing .toml file or {without}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{what} {path} is not valid TOML ({exc}): fix the syntax") from None


def _read_toml(path: Path) -> dict[str, Any]:
    values = read_toml(path, "config file", "no file for the defaults")
    unknown = [k for k in values if k not in KEYS]
    if unknown:
        make_config(values, source=str(path))  # raises the unknown-key error naming the file
    for key in PATH_KEYS:
        if key == "fid_reference" and values.get(key) == OWN_REFERENCES:
            continue
        if isinstance(values.get(key), str) and not user_path(values[key]).is_absolute():
            if not (key == "prompts" and (values[key] == DEFAULT_PROMPTS or is_hf_source(values[key]))):
                values[key] = str(path.parent / values[key])
    return values


def _strings(v: dict[str, Any]) -> None:
    """String-valued keys must hold strings; the paths among them are resolved (`user_path`)."""
    for name in ("model", "prompts", "prompt_format", "out", "device", "dtype", "negative_prompt",
                 "reference_scheduler", "check_scheduler", "revision", "variant", "fid_reference", "backend",
                 "ray_address"):
        if v.get(name) is not None and not isinstance(v[name], str):
            raise EvalkitError(f"{name} must be a string, got {v[name]!r}: quote it in the TOML file")
    for name in PATH_KEYS:
        if v.get(name) is not None and not (name == "fid_reference" and v[name] == OWN_REFERENCES) \
                and not (name == "prompts" and is_hf_source(v[name])):
            v[name] = str(user_path(v[name]))


def _str_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return parse_list(value)
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return [x.strip() for x in value]
    raise EvalkitError(f"{name} must be a list of names, got {value!r}: e.g. {name} = [\"euler\", \"ddim\"]")


def _positive_ints(name: str, value: Any) -> list[int]:
    items = parse_list(value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise EvalkitError(f"{name} must be positive integers, got {value!r}: e.g. {name} = [1, 2, 4, 8]")
    out = []
    for item in items:
        try:
            number = int(item) if isinstance(item, str) else item
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise EvalkitError(f"{name} must be positive integers, got {item!r}: use whole numbers ≥ 1")
        out.append(number)
    return out


def _seeds(value: Any) -> tuple[int, ...]:
    """An int N means seeds 0..N-1; a list is taken as given."""
    if isinstance(value, str) and "," not in value:
        value = value.strip()
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).lstrip("-").isdigit():
        count = int(value)
        if count > MAX_SEED_COUNT:
            raise EvalkitError(f"seeds = {count} is too many: a count N means seeds 0..N-1 (at most "
                               f"{MAX_SEED_COUNT:,}); use fewer, or list the seeds instead")
        if count < 1:
            raise EvalkitError(f"seeds must be at least 1, got {count}: use --seeds 4 or seeds = [0, 1, 2, 3]")
        return tuple(range(count))
    items = parse_list(value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise EvalkitError(f"seeds must be a count ≥ 1 or a list of integers, got {value!r}")
    seeds = []
    for item in items:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            raise EvalkitError(f"seeds must be integers, got {item!r}: e.g. seeds = [0, 1, 2, 3]") from None
        if seed < 0 or isinstance(item, (bool, float)):
            raise EvalkitError(f"seeds must be integers ≥ 0, got {item!r}")
        if seed > MAX_SEED:
            raise EvalkitError(f"seed {seed} is too large: torch generators take seeds up to 2**63-1 "
                               f"({MAX_SEED}); use smaller seeds")
        seeds.append(seed)
    if len(set(seeds)) != len(seeds):
        raise EvalkitError(f"seeds has duplicates: {seeds}; list each seed once")
    return tuple(seeds)


def _backbones(value: Any) -> dict[str, str]:
    """A TOML table, or `metric=backbone,metric=backbone` from a flag."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in parse_list(value)]
        if any(not sep or not k.strip() or not b.strip() for k, sep, b in pairs):
            raise EvalkitError(f"backbones must be metric=backbone pairs, got {value!r}: e.g. lpips=vgg")
        value = {k.strip(): b.strip() for k, _, b in pairs}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(b, str) for k, b in value.items()):
        raise EvalkitError(f"backbones must map metric names to backbone strings, got {value!r}: "
                           'e.g. backbones = { lpips = "vgg" }')
    return dict(value)


def _check_prompt_source(config: SweepConfig) -> None:
    """prompts, prompt_format and prompt_columns agree (each value alone was checked on the way in)."""
    hf = is_hf_source(config.prompts)
    if hf:
        hf_source(config.prompts)
    if hf and config.prompt_format not in ("auto", "hf"):
        raise EvalkitError(f"prompt_format {config.prompt_format!r} reads files, but prompts is {config.prompts!r}: "
                           'drop prompt_format (or set it to "hf") for a Hugging Face dataset')
    if config.prompt_format == "hf" and not hf:
        raise EvalkitError(f'prompt_format "hf" needs prompts = "hf:NAME[:SPLIT]", got {config.prompts!r}: name a '
                           "dataset in the local Hugging Face cache, or drop prompt_format")
    if config.prompt_columns and config.prompt_format in ("txt", "hpdv2", "t2i-compbench"):
        raise EvalkitError(f"prompt_columns names columns, but prompt_format {config.prompt_format!r} has none: use it "
                           "with csv, tsv, jsonl or hf: sources, or drop it")


def _prompt_format(value: Any) -> str:
    name = str(value).strip().lower() if isinstance(value, str) else value
    if name not in PROMPT_FORMATS:
        close = difflib.get_close_matches(str(name), PROMPT_FORMATS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EvalkitError(f"unknown prompt_format {value!r}: {hint}use one of {', '.join(PROMPT_FORMATS)}")
    return name


def _prompt_columns(value: Any) -> dict[str, str]:
    """{role: source column}, from a TOML table or `prompt=caption,category=style` from a flag."""
    example = 'e.g. prompt_columns = { prompt = "caption", category = "style" }'
    if isinstance(value, str):
        pairs = [part.partition("=") for part in parse_list(value)]
        if any(not sep or not k.strip() or not c.strip() for k, sep, c in pairs):
            raise EvalkitError(f"prompt_columns must be role=column pairs, got {value!r}: e.g. prompt=caption")
        value = {k.strip(): c.strip() for k, _, c in pairs}
    if not isinstance(value, dict) or not all(isinstance(c, str) and c.strip() for c in value.values()):
        raise EvalkitError(f"prompt_columns must map {', '.join(PROMPT_ROLES)} to column names, got {value!r}: "
                           f"{example}")
    for role in value:
        if role not in PROMPT_ROLES:
            close = difflib.get_close_matches(str(role), PROMPT_ROLES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise EvalkitError(f"unknown prompt_columns role {role!r}: {hint}map any of {', '.join(PROMPT_ROLES)} "
                               f"to a column, {example}")
    return {role: column.strip() for role, column in value.items()}


def parse_prompt_sample(value: Any) -> dict[str, Any]:
    """prompt_sample as {n, by?, allocation?, seed}: a TOML table, a count, or `n=200,by=category` from a flag."""
    example = 'e.g. prompt_sample = { n = 200, by = "category", allocation = "proportional", seed = 0 }'
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            value = {"n": text}
        else:
            pairs = [part.partition("=") for part in parse_list(text)]
            if not pairs or any(not sep or not k.strip() for k, sep, _ in pairs):
                raise EvalkitError(f"prompt_sample must be a count or key=value pairs, got {value!r}: e.g. "
                                   "--prompt-sample n=200,by=category")
            value = {k.strip(): v.strip() for k, _, v in pairs}
    elif isinstance(value, int) and not isinstance(value, bool):
        value = {"n": value}
    if not isinstance(value, dict):
        raise EvalkitError(f"prompt_sample must be a table, got {value!r}: {example}")
    if not value:
        return {}
    for key in value:
        if key not in SAMPLE_KEYS:
            close = difflib.get_close_matches(str(key), SAMPLE_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise EvalkitError(f"unknown prompt_sample key {key!r}: {hint}use {', '.join(SAMPLE_KEYS)}; {example}")
    if "n" not in value:
        raise EvalkitError(f"prompt_sample needs n, the number of prompts to take: {example}")
    sample: dict[str, Any] = {"n": _count("prompt_sample.n", value["n"], minimum=1)}
    by = value.get("by")
    if by is not None:
        if not isinstance(by, str) or not by.strip():
            raise EvalkitError(f"prompt_sample.by must name a column (category, challenge or a metadata column), "
                               f"got {by!r}: {example}")
        sample["by"] = by.strip()
    allocation = value.get("allocation")
    if allocation is not None:
        if allocation not in ALLOCATIONS:
            raise EvalkitError(f"unknown prompt_sample.allocation {allocation!r}: use {' or '.join(ALLOCATIONS)}")
        if by is None:
            raise EvalkitError(f"prompt_sample.allocation {allocation!r} needs prompt_sample.by, the column whose "
                               f"values are the strata: {example}")
    if by is not None:
        sample["allocation"] = allocation or ALLOCATIONS[0]
    sample["seed"] = _count("prompt_sample.seed", value.get("seed", 0), minimum=0)
    if sample["seed"] > MAX_SEED:
        raise EvalkitError(f"prompt_sample.seed {sample['seed']} is too large: use a seed up to 2**63-1")
    return sample


def _count(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
        raise EvalkitError(f"{name} must be a whole number ≥ {minimum}, got {value!r}")
    return number


def parse_tolerances(value: Any) -> dict[str, float]:
    """A TOML table, or `metric=value,...` from a flag; each tolerance a number > 0."""
    pairs = _backbones(value) if isinstance(value, str) else value
    if not isinstance(pairs, dict):
        raise EvalkitError(f"tolerances must map metric names to numbers, got {value!r}: e.g. tolerances = {{ ssim = 0.02 }}")
    out = {name: _number(f"tolerances.{name}", tol, example=0.05) for name, tol in pairs.items()}
    bad = [name for name, tol in out.items() if tol <= 0]
    if bad:
        raise EvalkitError(f"tolerance for {bad[0]} must be > 0, got {out[bad[0]]}: e.g. ssim = 0.02")
    return out


def _number(name: str, value: Any, example: float = 7.5) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise EvalkitError(f"{name} must be a number, got {value!r}: e.g. {name} = {example}") from None
    if not math.isfinite(number):
        raise EvalkitError(f"{name} must be a finite number, got {value!r}: e.g. {name} = {example}")
    return number


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower())
    return "-".join(part for part in keep.split("-") if part) or "run"
