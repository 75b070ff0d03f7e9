"""evalkit: how many sampling steps, with which scheduler, are enough?"""
from .config import SweepConfig, load_config
from .errors import EvalkitError
from .runner import Run, render, report, run, score

__version__ = "0.1.0"
__all__ = ["EvalkitError", "Run", "SweepConfig", "load_config", "render", "report", "run", "score", "__version__"]
