"""Execute the notebook headless — the project's one notebook runner.

    python -m plumbing.run_notebook [--out build/llama3-from-scratch.executed.ipynb] [--inplace]

From the command line (`make run`, `make notebook`): one progress line per cell, then the
prediction. The executed copy goes to build/ (ignored by git) unless --inplace is given,
which overwrites the committed notebook. Either way it is normalized: stable execution
counts, no timing metadata, stream chunks merged. The LLAMA3_* variables pass through.

From Python (tests, benchmarks): `execute(notebook, settings)` runs a notebook node in a
fresh kernel whose LLAMA3_* variables are exactly `settings` — the caller's own are set
aside for that kernel, and this process's environment is never changed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from plumbing import REPO_DIR
from plumbing.friendly_errors import INSTALL_FIX

NOTEBOOK = REPO_DIR / "llama3-from-scratch.ipynb"


class ProgressClient(NotebookClient):
    """A NotebookClient that prints one line per code cell as it runs."""

    def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        return self._timed(
            super().async_execute_cell(cell, cell_index, *args, **kwargs), cell, cell_index
        )

    async def _timed(self, coroutine, cell, cell_index):
        started = time.perf_counter()
        result = await coroutine
        if cell.cell_type == "code":
            first_line = next(
                (line for line in cell.source.splitlines() if not line.startswith("#")), ""
            )
            print(
                f"cell {cell_index:3d}  {time.perf_counter() - started:6.2f} s  {first_line[:70]}",
                flush=True,
            )
        return result


def kernel_environment(settings: dict[str, str] | None) -> dict[str, str]:
    """This process's environment, with LLAMA3_* replaced by `settings` (None: passed through)."""
    if settings is None:
        return dict(os.environ)
    return {
        name: value for name, value in os.environ.items() if not name.startswith("LLAMA3_")
    } | settings


def execute(
    notebook, settings: dict[str, str] | None = None, timeout: int = 1200, progress: bool = False
) -> None:
    """Run every cell of `notebook` (a NotebookNode, changed in place) in a fresh kernel in the repo
    folder.

    Raises nbclient's CellExecutionError at the first failing cell, like Run All.
    """
    client_class = ProgressClient if progress else NotebookClient
    client = client_class(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO_DIR)}},
    )
    # The kernel's own log (a warning about local TCP) would only clutter the output.
    client.execute(env=kernel_environment(settings), stderr=subprocess.DEVNULL)


def normalize(notebook) -> None:
    """Make an executed notebook byte-stable: what nbval compares and GitHub shows, nothing else.

    Like `nbstripout --keep-output --keep-count`, plus merging the stream chunks that
    timing splits differently on every run.
    """
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for cell in notebook.cells:
        cell.metadata = {key: value for key, value in cell.metadata.items() if key == "tags"}
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            if (
                merged
                and output.output_type == "stream"
                and merged[-1].output_type == "stream"
                and merged[-1].name == output.name
            ):
                merged[-1].text += output.text
            else:
                merged.append(output)
        cell.outputs = merged


def text_of(cell) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO_DIR / "build" / "llama3-from-scratch.executed.ipynb"
    )
    parser.add_argument("--inplace", action="store_true", help="overwrite the committed notebook")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    try:
        execute(notebook, timeout=args.timeout, progress=True)
    except CellExecutionError as error:
        fix = f": {INSTALL_FIX}." if error.ename == "ModuleNotFoundError" else ""
        print(f"stopped: {error.ename}: {error.evalue}{fix}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    normalize(notebook)
    out = NOTEBOOK if args.inplace else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)
    answer = next(
        (
            text_of(c)
            for c in notebook.cells
            if c.cell_type == "code" and "next token id:" in text_of(c)
        ),
        "",
    )
    print(answer.strip())
    print(
        f"executed in {elapsed:.1f} s -> "
        f"{out.relative_to(REPO_DIR) if out.is_relative_to(REPO_DIR) else out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
