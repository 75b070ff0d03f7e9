"""evalkit: how many sampling steps, with which scheduler, are enough?

`evalkit.run(config)` (and `render`, `score`, `Run`) are evalkit.api's, imported on first use so that
`evalkit --help` and config errors answer without loading torch, diffusers or pandas. Stage 3 alone is
`evalkit.report.write_report(run_dir)` (the report package; `evalkit.run` writes the report itself).
"""
from .config import SweepConfig, load_config
from .errors import EvalkitError

__version__ = "0.1.0"
__all__ = ["EvalkitError", "Run", "SweepConfig", "load_config", "render", "run", "score", "__version__"]
_API = ("Run", "render", "run", "score")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
