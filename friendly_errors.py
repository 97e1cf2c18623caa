"""One sentence that names the fix, instead of a traceback — plumbing only.

Every helper raises `SetupError` (or a subclass) for a mistake a reader can fix: a
wrong folder, a damaged file, an unknown setting. In Jupyter, `show_as_one_line()`
makes those errors print as that one sentence; Run All still stops at the cell.
"""

from __future__ import annotations

import sys


class SetupError(ValueError):
    """A checkpoint, tokenizer or setting that cannot be used; the message says how to fix it."""


def show_as_one_line() -> None:
    """In IPython/Jupyter, show SetupErrors as their one sentence instead of a traceback."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 — defined only inside IPython
    except NameError:
        return

    def one_line(shell, kind, value, traceback, tb_offset=None):
        print(f"{kind.__name__}: {value}", file=sys.stderr)

    shell.set_custom_exc((SetupError,), one_line)
