"""evalkit: how many sampling steps, with which scheduler, are enough?

The stages (and torch, diffusers, pandas behind them) are imported on first use, so that
`evalkit --help` and config errors answer at once; `import evalkit; evalkit.run(...)` works as before.
"""
import sys
import types

from .config import SweepConfig, load_config
from .errors import EvalkitError

__version__ = "0.1.0"
__all__ = ["EvalkitError", "Run", "SweepConfig", "load_config", "render", "report", "run", "score", "__version__"]
_STAGES = ("Run", "render", "report", "run", "score")


def __getattr__(name: str):
    if name in _STAGES:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`evalkit.render`, `evalkit.score` and `evalkit.report` are the stage functions, whose modules share their
    names: loading such a submodule must not rebind the package attribute to the module (Python's import does)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _STAGES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
