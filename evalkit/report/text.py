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


class Notes:
    """Long reasons stated once: a table cell names each by a numbered link, the list under the table states it.

    A cell's text is split into its clauses ("; " outside parentheses). A clause longer than LONG characters is
    shown by its gist (`_head`) and a link to its note, numbered in order of first use; the same text cited again gets the same number. A reason the page already states elsewhere (`stated`: text
    -> (anchor id, link text), e.g. a skipped metric's fetch command in the run header) is replaced by a link to it
    wherever it occurs, so it is never repeated. One instance may serve several tables of a page: each lists, under
    it, the notes it cited first, and cites the earlier ones by their number."""

    LONG = 80

    def __init__(self, prefix: str, stated: dict[str, tuple[str, str]] | None = None):
        self.prefix = prefix
        self.stated = sorted((stated or {}).items(), key=lambda item: -len(item[0]))  # longest first
        self.numbers: dict[str, int] = {}
        self.listed: set[str] = set()

    def cell(self, text: Any) -> str:
        """`text` as HTML for a table cell: escaped, stated reasons linked, long clauses cited."""
        text, links = str(text), []
        for reason, (anchor, label) in self.stated:
            if reason and reason in text:
                text = text.replace(reason, f"\0{len(links)}\0")
                links.append((anchor, label))
        return "; ".join(self._clause(clause, links) for clause in clauses(text))

    def cite(self, text: str) -> str:
        number = self.numbers.setdefault(text, len(self.numbers) + 1)
        return f'<sup><a href="#{self.prefix}-{number}">[{number}]</a></sup>'

    def items(self) -> str:
        """The notes cited since the last list, each once, as the list that goes under the table ("" when none)."""
        new = [(text, n) for text, n in self.numbers.items() if text not in self.listed]
        self.listed.update(text for text, _ in new)
        items = "".join(f'<li id="{self.prefix}-{n}">{esc(text)}</li>' for text, n in new)
        start = f' start="{new[0][1]}"' if new and new[0][1] != 1 else ""  # numbers run on from the last list
        return f'<ol class="notes"{start}>{items}</ol>' if items else ""

    def _clause(self, clause: str, links: list[tuple[str, str]]) -> str:
        parts = clause.split("\0")  # text, link index, text, ...
        if len(parts) == 1 and len(clause) > self.LONG:
            return esc(_head(clause)) + self.cite(clause)
        return "".join(esc(part) if i % 2 == 0 else f'<a href="#{links[int(part)][0]}">{esc(links[int(part)][1])}</a>'
                       for i, part in enumerate(parts))


def clauses(text: str) -> list[str]:
    """`text` split at "; " outside parentheses."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth <= 0 and text.startswith("; ", i):
            out.append(text[start:i])
            start = i + 2
    return out + [text[start:]]


def _head(clause: str, words: int = 6) -> str:
    """A long clause's gist: the text before its first parenthesis when that is short, else up to its first ": ",
    else its first `words` words + …"""
    for mark, limit in ((" (", 60), (": ", 40)):
        head = clause.split(mark, 1)[0]
        if len(head) < len(clause) and len(head) <= limit:
            return head
    return " ".join(clause.split()[:words]) + "…"
