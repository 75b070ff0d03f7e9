"""`prompts = "hf:NAME[:SPLIT]"`: a Hugging Face dataset already in the local `datasets` cache, read offline.

Through the real `datasets` library (the optional extra `evalkit[suites]`), with the hub switched off for the
call: `load_dataset` then finds the Arrow files a download left under $HF_DATASETS_CACHE (default
$HF_HOME/datasets) in <ORG>___<NAME>/<config>/<version>/<revision>/. Nothing is ever downloaded; a dataset not in
the cache is one line with the command that fetches it on a connected machine. Columns map to prompts as a table's
do (sweep/suites.py): `prompt` (or prompt_columns), the suites recognised by their columns, the rest as metadata.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..config import hf_source
from ..metrics.base import hf_home
from ..errors import EvalkitError
from .suites import Records, record_of, table_roles

INSTALL = "pip install 'evalkit[suites]'"
MEDIA = ("Image", "Audio", "Video", "Pdf")  # feature types that are no prompt metadata


def datasets_cache() -> Path:
    """The datasets cache, resolved now (`datasets` freezes it at import time)."""
    explicit = os.environ.get("HF_DATASETS_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    return hf_home() / "datasets"


def fetch_command(name: str, split: str | None) -> str:
    """What puts `name` in the cache evalkit reads, run on a connected machine with the same HF_HOME."""
    args = f"'{name}'" + (f", split='{split}'" if split else "")
    return f"HF_HOME=<same HF_HOME> python -c \"import datasets; datasets.load_dataset({args})\""


def read_hub(source: str, prompt_format: str = "auto", columns: dict[str, str] | None = None) -> Records:
    """Every row of the dataset's split, as records (row = the row's index in the split)."""
    name, split = hf_source(source)
    dataset = _load(name, split)
    features = getattr(dataset, "features", None) or {}
    fields = [c for c in dataset.column_names if type(features.get(c)).__name__ not in MEDIA]
    what = f"hf dataset {name} (split {dataset.split})"
    fmt, roles, _ = table_roles(fields, "hf", "auto", columns or {}, what)
    records = [record_of(row, roles, f"{dataset.split}[{index}]", index, source, fields)
               for index, row in enumerate(dataset.select_columns(fields).to_list())]
    return Records(fmt, (f"{name}:{dataset.split}",), records)


def _load(name: str, split: str | None):
    try:
        import datasets
    except ImportError:
        raise EvalkitError(f"prompts = 'hf:{name}' needs the datasets library: {INSTALL}") from None
    cache = datasets_cache()
    missing = (f"hf dataset {name} is not in the local datasets cache ({cache}): fetch it on a connected machine "
               f"with `{fetch_command(name, split)}` and copy its folder under {cache} here (evalkit never downloads)")
    with _offline(datasets):
        try:
            loaded = datasets.load_dataset(name, split=split, cache_dir=str(cache))
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError):
            raise EvalkitError(missing) from None
        except ValueError as exc:
            raise EvalkitError(_value_error(name, split, exc)) from None
        except Exception as exc:  # anything else `datasets` raises: its first line, and where evalkit looked
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise EvalkitError(f"can't read hf dataset {name} from the local cache {cache} ({type(exc).__name__}: "
                               f"{first[:200]}): fetch it again with `{fetch_command(name, split)}`") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            raise EvalkitError(f"hf dataset {name} has splits {', '.join(splits)}: name one, e.g. "
                               f"prompts = \"hf:{name}:{splits[0]}\"")
        loaded = loaded[splits[0]]
    return loaded


def _value_error(name: str, split: str | None, exc: ValueError) -> str:
    text = " ".join(str(exc).split())
    if "Unknown split" in text:
        return f"hf dataset {name} has no split {split!r} ({text}): write hf:{name}:SPLIT with one of them"
    if "multiple" in text and "configurations" in text:
        return (f"hf dataset {name} has several configurations in the local cache ({text[:200]}): evalkit reads a "
                "dataset with one; keep only the one you mean under " + str(datasets_cache()))
    return f"can't read hf dataset {name} from the local cache ({text[:200]}): fetch it again with " \
           f"`{fetch_command(name, split)}`"


@contextlib.contextmanager
def _offline(datasets) -> Iterator[None]:
    """The hub switched off for one call: the environment variables (read by code that reads them late) and the
    values `datasets` and `huggingface_hub` froze when they were imported; datasets' own log lines silenced."""
    import huggingface_hub.constants as hub_constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    verbosity = datasets.logging.get_verbosity()
    bars = datasets.utils.are_progress_bars_disabled()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    datasets.logging.set_verbosity_error()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        datasets.logging.set_verbosity(verbosity)
        if not bars:
            datasets.utils.enable_progress_bars()
