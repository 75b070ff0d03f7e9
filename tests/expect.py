"""The assertion every bad-input test makes: exit 2, one line on stderr starting `error: `, no traceback, and the
fragments that name the problem and its fix."""
from __future__ import annotations


def one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def one_line(result: tuple[int, str, str], *fragments: str) -> str:
    """The same, for what the `evalkit_cli` fixture returns: (exit code, stdout, stderr)."""
    code, _, err = result
    return one_line_error(code, err, *fragments)
