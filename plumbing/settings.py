"""The LLAMA3_* settings: one table, and the one place that reads them from the environment.

Each row says the variable, its default as the README shows it, whom it is for, and what it
means. From this table come:

- `read()`, the only reader of LLAMA3_* in the project outside the tests: the notebook's setup
  (plumbing/run_settings.py, which parses and decides), the checkpoint finder, the model-id
  lookup and the benchmarks all take their values from the frozen `Environment` it returns;
- the README's table (tests/test_settings_table.py compares the two);
- `make notebook`'s reset (`python -m plumbing.settings --unset`) and the tests' clean
  environment.

What each value may be, and the one sentence a wrong one gets, is said where it is parsed: the
`choose_*` functions of plumbing/run_settings.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

READERS = "readers"  # what a reader of the notebook sets: which model, which prompt, which machine
MAINTAINERS = "maintainers"  # overrides for measuring and testing; the defaults decide well


@dataclass(frozen=True)
class Setting:
    name: str
    shown: str  # the default as the README's table shows it
    default: str | None  # the value an unset variable stands for (None: unset means none)
    audience: str  # READERS or MAINTAINERS
    meaning: str


HITCHHIKER = "the Hitchhiker's question"
TABLE = (
    Setting("LLAMA3_CKPT", "`weights/llama3-tiny-hitchhiker`", "", READERS, "the model to read"),
    Setting("LLAMA3_DOWNLOAD", "`0`", "0", READERS, "download a model id not in the HF cache"),
    Setting("LLAMA3_DEVICE", "`auto`", "auto", READERS, "where to compute"),
    Setting("LLAMA3_DTYPE", "`auto`", "auto", READERS, "the number format to compute in"),
    Setting("LLAMA3_STREAM", "`auto`", "auto", MAINTAINERS, "read each weight at each use"),
    Setting("LLAMA3_PROMPT", HITCHHIKER, None, READERS, "the text to complete"),
    Setting("LLAMA3_PROMPT_FILE", "none", None, READERS, "a file whose text is the prompt"),
    Setting("LLAMA3_EXTRAS", "by size", "", READERS, "whether the demos run"),
    Setting("LLAMA3_ROPE_SCALE_FACTOR", "by rule", "", MAINTAINERS, "the scaled-RoPE factor"),
    Setting("LLAMA3_QUANTIZE", "`none`", "none", READERS, "int8 or int4 matrices"),
    Setting("LLAMA3_ONE_ROW", "`auto`", "auto", MAINTAINERS, "the kernel of one-row products"),
)
BY_NAME = {setting.name: setting for setting in TABLE}
# The table by name: each variable's default as the README's table gives it.
SETTINGS = {setting.name: setting.shown for setting in TABLE}


@dataclass(frozen=True)
class Environment:
    """The LLAMA3_* variables as they were when read: each one's text, or None where unset."""

    values: Mapping[str, str | None]

    def get(self, name: str) -> str | None:
        """The variable's text, or the table's default where it is unset (the one place the
        defaults are written)."""
        given = self.given(name)
        return BY_NAME[name].default if given is None else given

    def given(self, name: str) -> str | None:
        """The variable's text, or None where it is unset."""
        if name not in BY_NAME:
            raise KeyError(f"{name} is not a setting: plumbing/settings.py's TABLE lists them")
        return self.values[name]


def read() -> Environment:
    """Every LLAMA3_* variable of the table, from this process's environment, now."""
    return Environment(MappingProxyType({name: os.environ.get(name) for name in SETTINGS}))


def main() -> int:
    if sys.argv[1:] == ["--unset"]:  # for `env $(…)`: every setting removed
        print(" ".join(part for name in SETTINGS for part in ("-u", name)))
        return 0
    print("usage: python -m plumbing.settings --unset", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
