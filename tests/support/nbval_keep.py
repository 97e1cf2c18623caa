"""A pytest plugin for a child nbval run: it writes the notebook as nbval executed it.

nbval compares each cell's outputs with the stored ones and keeps what the cell printed
(`IPyNbCell.test_outputs`). With `-p tests.support.nbval_keep` and NBVAL_KEEP=PATH, the
notebook is written to PATH at the end of the run, every code cell holding the outputs of
this execution (none where it did not run), so that one execution both checks the stored
outputs and serves the tests that read what cells printed (tests/support/shared_runs.py).
"""

from __future__ import annotations

import copy
import os

import nbformat


def pytest_sessionfinish(session):
    path = os.environ.get("NBVAL_KEEP")
    ran = [item for item in session.items if hasattr(item, "test_outputs")]
    if not path or not ran:
        return
    outputs = {id(item.cell): item.test_outputs for item in ran}
    notebook = ran[0].parent.nb
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = copy.deepcopy(outputs.get(id(cell)) or [])
    nbformat.write(notebook, path)
