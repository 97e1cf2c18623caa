"""One sentence that names the fix, instead of a traceback — plumbing only.

Every helper raises `SetupError` (or a subclass) for a mistake a reader can fix: a
wrong folder, a damaged file, an unknown setting, a missing package. In Jupyter,
`show_as_one_line()` makes those errors, and a module that cannot be imported, print as
one sentence; Run All still stops at the cell. Standard library only, so that it works
before anything else is known to be installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

from plumbing import REPO_DIR

REQUIREMENTS = REPO_DIR / "requirements.txt"
INSTALL_FIX = (
    "install the notebook's packages into this Python with `pip install -r requirements.txt` "
    "(make run does it in .venv)"
)


class SetupError(ValueError):
    """A checkpoint, tokenizer or setting that cannot be used; the message says how to fix it."""


class CheckpointError(SetupError):
    """The checkpoint or one of its files is not usable; the message says why."""


def show_as_one_line() -> None:
    """In IPython/Jupyter, show SetupErrors and missing modules as one sentence, no traceback."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 — defined only inside IPython
    except NameError:
        return

    def one_line(shell, kind, value, traceback, tb_offset=None):
        print(one_sentence(value), file=sys.stderr)

    shell.set_custom_exc((SetupError, ModuleNotFoundError), one_line)


def one_sentence(error: BaseException) -> str:
    """The line a reader sees for an error: the SetupError's sentence, or the missing module and the
    fix."""
    if isinstance(error, ModuleNotFoundError):
        return f"{type(error).__name__}: {error}: {INSTALL_FIX}."
    return f"{type(error).__name__}: {error}"


def requirements(path: Path = REQUIREMENTS) -> dict[str, tuple[int, ...]]:
    """The packages requirements.txt names, each with its lowest version (empty tuple: any)."""
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:(>=|==|~=)\s*([0-9][0-9.]*))?", line
        )
        if match is None:
            raise SetupError(f"{path}: cannot read the line {line!r}: write it as name>=version.")
        name, _, version = match.groups()
        found[name] = version_tuple(version or "")
    return found


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.13.0+cpu' → (2, 13, 0): the leading numbers, enough to compare with a lower bound."""
    numbers = re.match(r"[0-9]+(?:\.[0-9]+)*", version)
    return tuple(int(part) for part in numbers.group().split(".")) if numbers else ()


def check_requirements(path: Path = REQUIREMENTS) -> None:
    """Raise one sentence naming every package of requirements.txt that is missing or too old."""
    problems = []
    for name, lowest in requirements(path).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        if version_tuple(installed) < lowest:
            problems.append(f"{name} is {installed}, older than {'.'.join(map(str, lowest))}")
    if problems:
        raise SetupError(f"{'; '.join(problems)} (in {sys.executable}): {INSTALL_FIX}.")
