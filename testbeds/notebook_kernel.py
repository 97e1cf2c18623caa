"""Execute the notebook unchanged, then call functions in its kernel on its own objects: the one
way tests and benchmarks read what the notebook computed.

A call is `FUNCTION(nb, *arguments, path)` in a cell appended after the notebook's last one,
where `nb` is the kernel's globals (`KernelGlobals`) and `path` a file for the function's
results. A test's function lives in the test's own file and is sent to the kernel as source
(`in_kernel`): a test module's imports (pytest, transformers, peft …) never load there. The
benchmarks' functions are imported there by module name (benchmarks/kernel_figures.py).

    python -m testbeds.notebook_kernel SETTINGS MODULE FUNCTION ARGUMENTS

SETTINGS is a JSON object of LLAMA3_* variables, ARGUMENTS a JSON list; the function's figures
(a JSON file) print as one JSON line. A benchmark that measures the memory of a whole notebook
run measures this process and its kernel, so this module imports no more than `make run`'s
driver does: nbformat and plumbing.run_notebook, about 24 MB of anonymous memory, and not torch
(about 0.27 GB).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import nbformat

from plumbing import run_notebook
from plumbing.run_notebook import NOTEBOOK

# tools/check_mutations.py points this at deliberately broken copies to prove the tests can fail.
NOTEBOOK_UNDER_TEST = Path(os.environ.get("NOTEBOOK_UNDER_TEST", NOTEBOOK))

# The settings most tests run the notebook with: float32 on the CPU, as the references compute.
FLOAT32_CPU = {"LLAMA3_DTYPE": "float32", "LLAMA3_DEVICE": "cpu"}
# For runs that only read the lesson's tensors: the demos (more prompts, generation, the logit
# lens, learning) are skipped. On a ~100M-parameter random test checkpoint they cost about 40 s
# of a 50 s run; each test checkpoint shape still runs them once, in test_parity.
TENSORS_ONLY = {**FLOAT32_CPU, "LLAMA3_EXTRAS": "0"}

# The canonical prompt as Llama 3's tokenizer encodes it, <|begin_of_text|> first (Meta's ids).
# fmt: off
CANONICAL_TOKENS = [
    128000, 1820, 4320, 311, 279, 17139, 3488, 315, 2324, 11, 279, 15861, 11, 323, 4395, 374, 220,
]
# fmt: on


class NotebookNameError(LookupError):
    """A function in the kernel read a name the notebook does not define."""


class KernelGlobals(MutableMapping):
    """The notebook's globals, as the functions sent to its kernel read and set them: a name the
    notebook does not define fails as one sentence, not as a KeyError deep inside the kernel.

    `namespace` is the kernel's own dict, for what must run in it (`exec` of a cell's source).
    """

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def __getitem__(self, name: str):
        try:
            return self.namespace[name]
        except KeyError:
            raise NotebookNameError(
                f"the notebook's kernel has no {name!r}: the notebook renamed or removed it, or "
                "the section that defines it did not run (LLAMA3_EXTRAS=0 skips the demos)"
            ) from None

    def __setitem__(self, name: str, value) -> None:
        self.namespace[name] = value

    def __delitem__(self, name: str) -> None:
        del self.namespace[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.namespace)

    def __len__(self) -> int:
        return len(self.namespace)


def in_kernel(function=None, *, uses: tuple = ()):
    """Marks a test's function (or class) as one that runs in the notebook's kernel: its source,
    and first that of each of `uses` (other such functions it calls), is sent there.

    What it reads of the notebook it reads through `nb`; what it imports it imports in its body
    (the kernel has only torch, json, contextmanager and these two names to start with)."""

    def mark(sent):
        sent.kernel_uses = tuple(uses)
        return sent

    return mark(function) if function is not None else mark


# What a sent function's source finds in its namespace before it is run.
SENT_PRELUDE = (
    "import json\n"
    "from contextlib import contextmanager\n"
    "import torch\n"
    "from testbeds.notebook_kernel import KernelGlobals, in_kernel\n"
)


def sent_sources(functions: list[Callable]) -> list[tuple[str, str, int]]:
    """(file, source, first line) of each function to send, those it uses first, each once."""
    ordered: list[Callable] = []

    def visit(function):
        for used in getattr(function, "kernel_uses", ()):
            visit(used)
        if function not in ordered:
            ordered.append(function)

    for function in functions:
        if not hasattr(function, "kernel_uses"):
            raise TypeError(f"{function.__qualname__} is not marked @in_kernel")
        visit(function)
    sources = []
    for function in ordered:
        lines, first = inspect.getsourcelines(function)
        sources.append((inspect.getsourcefile(function), textwrap.dedent("".join(lines)), first))
    return sources


def run_sent(sources: list[tuple[str, str, int]]) -> dict:
    """In the kernel: the sent functions, each compiled under its own file and line numbers
    (a traceback shows the test's own lines), in one namespace."""
    namespace: dict = {}
    exec(SENT_PRELUDE, namespace)
    flags = annotations.compiler_flag  # (the __future__ feature) annotations stay strings
    for file, source, first in sources:
        padded = "\n" * (first - 1) + source
        exec(compile(padded, file, "exec", flags=flags, dont_inherit=True), namespace)
    return namespace


def calls_cell(calls: list[tuple], workdir: Path, module: str | None = None) -> str:
    """The cell that calls FUNCTION(nb, *arguments, workdir / NAME) for each (FUNCTION,
    *arguments) of `calls`: FUNCTION a function marked `in_kernel` (sent as source), or the name
    of a function of `module` (imported there)."""
    lines = ["from testbeds.notebook_kernel import KernelGlobals, run_sent"]
    sent = [function for function, *_ in calls if callable(function)]
    if sent:
        lines.append(f"_sent = run_sent({sent_sources(sent)!r})")
    if module is not None:
        package, _, name = module.rpartition(".")
        lines.append(
            f"from {package} import {name} as _module" if package else f"import {name} as _module"
        )
    for function, *arguments in calls:
        name = function.__name__ if callable(function) else function
        where = f"_sent[{name!r}]" if callable(function) else f"_module.{name}"
        arguments = [*arguments, str(workdir / name)]
        listed = ", ".join(["KernelGlobals(globals())", *map(repr, arguments)])
        lines.append(f"{where}({listed})")
    return "\n".join(lines)


def run_and_call(
    settings: dict[str, str],
    calls: list[tuple],
    workdir: Path,
    timeout: int = 1200,
    module: str | None = None,
):
    """Execute the notebook with these LLAMA3_* settings, then each call of `calls` in its kernel
    (see `calls_cell`); returns the executed notebook. Each function writes its results to
    workdir / its name."""
    notebook = nbformat.read(NOTEBOOK_UNDER_TEST, as_version=4)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    notebook.cells.append(nbformat.v4.new_code_cell(calls_cell(calls, workdir, module)))
    run_notebook.execute(notebook, settings, timeout=timeout)
    return notebook


def figures(
    settings: dict[str, str], module: str, function: str, *arguments, timeout: int = 7200
) -> dict:
    """Execute the notebook, then MODULE.FUNCTION in its kernel; the figures it wrote as JSON."""
    with tempfile.TemporaryDirectory() as scratch:
        run_and_call(settings, [(function, *arguments)], Path(scratch), timeout, module)
        return json.loads((Path(scratch) / function).read_text())


def main() -> int:
    settings, module, function, arguments = sys.argv[1:5]
    print(json.dumps(figures(json.loads(settings), module, function, *json.loads(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
