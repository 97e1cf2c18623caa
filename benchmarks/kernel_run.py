"""Execute the notebook, then one function of benchmarks/in_kernel.py in its kernel: its figures.

    python -m benchmarks.kernel_run SETTINGS FUNCTION ARGUMENTS

SETTINGS is a JSON object of LLAMA3_* variables, ARGUMENTS a JSON list; the figures print as
one JSON line. A benchmark that measures the memory of a whole notebook run measures this
process and its kernel, so it imports no more than `make run`'s driver does: nbformat and
plumbing.run_notebook, about 24 MB of anonymous memory, and not torch (about 0.27 GB).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import nbformat

from plumbing.run_notebook import NOTEBOOK, execute


def run_in_kernel(settings: dict[str, str], function: str, *arguments) -> dict:
    """Execute the notebook, then benchmarks/in_kernel.FUNCTION in its kernel; its figures."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "figures.json"
        call = ", ".join(["globals()", *map(repr, arguments), repr(str(out))])
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        code = f"from benchmarks import in_kernel\nin_kernel.{function}({call})"
        notebook.cells.append(nbformat.v4.new_code_cell(code))
        execute(notebook, settings, timeout=7200)
        return json.loads(out.read_text())


def main() -> int:
    settings, function, arguments = sys.argv[1], sys.argv[2], sys.argv[3]
    print(json.dumps(run_in_kernel(json.loads(settings), function, *json.loads(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
