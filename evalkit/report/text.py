"""How user text and numbers are written into a page: the section modules (html, references, compare) share these,
so a prompt is escaped, and a number formatted, the same way everywhere."""
from __future__ import annotations

import html
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, spec: str = ".4g") -> str:
    """A number in `spec`, or "—" where there is none (None, NaN: a value nothing was measured for)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if number != number else format(number, spec)
