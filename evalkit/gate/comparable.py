"""Whether two runs can be compared: the gate and `evalkit compare` refuse runs of different sweeps."""
from __future__ import annotations

from ..errors import EvalkitError
from ..store.read import ScoredRun
from .rules import columns_text


def check_comparable(base: ScoredRun, cand: ScoredRun) -> None:
    """Raise one EvalkitError naming every difference that makes a paired comparison meaningless."""
    diffs = []
    b, c = base.config, cand.config
    if set(b.seeds) != set(c.seeds):
        diffs.append(f"seeds {_list(sorted(b.seeds))} vs {_list(sorted(c.seeds))}")
    diffs += _prompt_diffs(_prompts(base), _prompts(cand))
    sizes = [sorted({(int(w), int(h)) for w, h in zip(r.sweep.width, r.sweep.height)}) for r in (base, cand)]
    if sizes[0] != sizes[1]:
        diffs.append(f"image size {_sizes(sizes[0])} vs {_sizes(sizes[1])}")
    for key in ("guidance", "negative_prompt", "reference_scheduler", "reference_steps", "tolerances"):
        if getattr(b, key) != getattr(c, key):
            diffs.append(f"{key} {getattr(b, key)!r} vs {getattr(c, key)!r}")
    metrics_b, metrics_c = base.summary.get("metrics", {}), cand.summary.get("metrics", {})
    for name in sorted(set(metrics_b) & set(metrics_c)):
        if metrics_b[name].get("backbone") != metrics_c[name].get("backbone"):
            diffs.append(f"{name} backbone {metrics_b[name].get('backbone')!r} vs {metrics_c[name].get('backbone')!r}")
    columns = [{(s, int(n)) for s, n in zip(r.sweep.scheduler, r.sweep.steps)} for r in (base, cand)]
    if not columns[0] & columns[1]:
        diffs.append(f"no shared (scheduler, steps) columns ({columns_text(columns[0])} vs {columns_text(columns[1])})")
    if diffs:
        raise EvalkitError(f"not comparable: {'; '.join(diffs)}: use the same sweep config for both runs "
                           "(only the model may differ)")


def _prompts(run: ScoredRun) -> dict[str, str]:
    return dict(zip(run.sweep.prompt_id, run.sweep.prompt))


def _prompt_diffs(a: dict[str, str], b: dict[str, str]) -> list[str]:
    out = []
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a:
        out.append(f"prompts only in baseline: {', '.join(only_a)}")
    if only_b:
        out.append(f"prompts only in candidate: {', '.join(only_b)}")
    changed = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    if changed:
        out.append(f"prompts differ at {', '.join(changed)}")
    return out


def _list(items: list) -> str:
    return "[" + ",".join(str(x) for x in items) + "]"


def _sizes(sizes: list[tuple[int, int]]) -> str:
    return ",".join(f"{w}x{h}" for w, h in sizes) or "none"
