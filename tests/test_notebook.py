"""Every cell of the notebook, re-executed, prints what its stored output shows.

This is nbval's own pass, `pytest llama3-from-scratch.ipynb`: the machine's own kernels, the
`auto` dtype, no setting given. Under `make test` it runs beside the other tests
(tests/support/shared_runs.py) instead of cell after cell in pytest's process, and each cell
is one test here, with nbval's message where it failed. The other kernel families and dtypes:
tests/test_stored_outputs.py.
"""

from __future__ import annotations

import nbformat
import pytest

from plumbing.run_notebook import NOTEBOOK

CELLS = [
    f"Cell {number}"
    for number, _ in enumerate(
        cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"
    )
]


@pytest.mark.parametrize("cell", CELLS)
def test_the_cell_prints_its_stored_output(own_nbval_pass, cell):
    assert cell in own_nbval_pass, f"nbval did not run {cell}"
    assert own_nbval_pass[cell] is None, own_nbval_pass[cell]


def test_nbval_ran_every_cell(own_nbval_pass):
    assert sorted(own_nbval_pass) == sorted(CELLS)
