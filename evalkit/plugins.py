"""python:MODULE:FACTORY plugins, model or metric: code evalkit does not own, imported and run under one guard.

`plugin_factory` imports the module and finds FACTORY; `plugin_code` runs any of the plugin's code (import,
factory, pipeline call, score) so that whatever it raises is one line naming the plugin and the fix, and a
`sys.exit` in it never ends evalkit with status 0. What a plugin returns is checked where its kind is defined
(models/base.py `check_images`, metrics/plugins.py `plugin_values`).
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import EvalkitError

PREFIX = "python:"


def is_plugin(name: str) -> bool:
    return name.startswith(PREFIX)


@contextlib.contextmanager
def plugin_code(source: str, who: str, doing: str, then: str) -> Iterator[None]:
    """Run a python: plugin's own code: whatever it raises becomes one line naming `who` (e.g. "model
    python:m:f"), what it did, and `then` (the fix, or how to resume). The one guard for plugin code, here and
    on Ray workers alike (the EvalkitError crosses to the driver as such; see executors._worker_error).

    - SystemExit: `sys.exit(0)` (or `python:sys:exit` as a factory) must not end `evalkit run` with status 0,
      which a release pipeline reads as success, nor kill a Ray worker: it becomes an EvalkitError (exit 2).
    - KeyboardInterrupt passes: it is the user's Ctrl-C (exit 130, "interrupted ... rerun to resume").
    - An EvalkitError passes: it is already one line (e.g. from evalkit code the plugin calls).
    - Anything else (any BaseException) becomes an EvalkitError with its type, first line and the plugin's
      file:line, since the traceback is not shown.
    """
    try:
        yield
    except (KeyboardInterrupt, EvalkitError):
        raise
    except SystemExit as exc:
        call = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
        success = " (evalkit would have exited 0, as if it had succeeded)" if exc.code in (None, 0) else ""
        raise EvalkitError(f"{who} called {call} {doing}: plugin code must raise an exception, not end the "
                           f"process{success}; {then}") from None
    except BaseException as exc:  # noqa: BLE001 - the plugin's failure is the user's input problem
        text, where = str(exc).strip(), _plugin_frame(exc, source)
        first = text.splitlines()[0] if text else "no message"
        raise EvalkitError(f"{who} raised {type(exc).__name__} {doing} ({first}{f', at {where}' if where else ''}): "
                           f"{then}") from None


def _plugin_frame(exc: BaseException, source: str) -> str:
    """FILE:LINE of the innermost frame in the plugin's module (where to look, as no traceback is shown)."""
    module = sys.modules.get(source[len(PREFIX):].partition(":")[0])
    path = getattr(module, "__file__", None)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if path and f.filename == path]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def plugin_factory(source: str, kind: str, usage: str) -> tuple[Any, Any]:
    """(MODULE, FACTORY) of python:MODULE:FACTORY (`source`, well-formed), the module imported under the guard."""
    module_name, _, factory_name = source[len(PREFIX):].partition(":")
    with plugin_code(source, f"module {module_name!r} for {kind} {source}", "at import",
                     f"fix the module (try `python -c 'import {module_name}'`)"):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EvalkitError(f"can't import module {module_name!r} for {kind} {source} ({exc}): install it or add "
                               "its folder to PYTHONPATH") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EvalkitError(f"module {module_name!r} has no callable {factory_name!r}: check the FACTORY part of "
                           f"{usage}")
    return module, factory


def fix_factory(source: str) -> str:
    """How to reproduce a factory's failure outside evalkit."""
    module_name, _, factory_name = source[len(PREFIX):].partition(":")
    return f"fix it (try `python -c 'import {module_name}; {module_name}.{factory_name}()'`)"
