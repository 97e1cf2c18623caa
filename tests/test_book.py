"""The book's shape: a straight, short path from the top to "42".

A newcomer reads from the title to the answer in one line, as the seed walkthrough has it;
what a first reading does not need (the BPE from scratch, the family and file layouts, long
inputs, the machine's details) comes after the answer. These budgets keep it so: a cell or a
line added to the path has to earn its place, or go after the answer.
"""

from __future__ import annotations

import nbformat

from plumbing.run_notebook import NOTEBOOK

# The path's budget: about 70 cells and 250 non-blank lines of code (258 today), and no code
# cell a reader must scroll through.
MOST_CELLS = 70
MOST_CODE_LINES = 260
MOST_LINES_IN_A_CELL = 20
# The sections of the path, in the order the reader meets them.
PATH_SECTIONS = [
    "## Prelims",
    "## The tokenizer",
    "## Reading the model file, tensor by tensor",
    "## Sizes derived from `params.json`",
    "## Embedding: a row lookup",
    "## RMSNorm",
    "## Layer 0: attention",
    "## Layer 0: the SwiGLU feed-forward network",
    "## The layer as one function",
    "## Every layer",
    "## Final norm and output projection",
    "## The answer",
]


def path_to_the_answer(cells=None):
    cells = cells or nbformat.read(NOTEBOOK, as_version=4).cells
    ids = [cell.get("id") for cell in cells]
    return cells[: ids.index("answer-code") + 1]


def code_lines(cell) -> list[str]:
    return [line for line in cell.source.splitlines() if line.strip()]


def budget_overruns(path) -> list[str]:
    code = [cell for cell in path if cell.cell_type == "code"]
    n_lines = sum(len(code_lines(cell)) for cell in code)
    overruns = [f"{len(path)} cells (at most {MOST_CELLS})"] if len(path) > MOST_CELLS else []
    if n_lines > MOST_CODE_LINES:
        overruns.append(f"{n_lines} lines of code (at most {MOST_CODE_LINES})")
    overruns += [
        f"cell {cell.get('id')}: {len(cell.source.splitlines())} lines"
        for cell in code
        if len(cell.source.splitlines()) > MOST_LINES_IN_A_CELL
    ]
    return overruns


def test_the_path_to_42_keeps_its_budget():
    overruns = budget_overruns(path_to_the_answer())
    assert not overruns, "the path to the answer grew: " + "; ".join(overruns)


def test_a_path_past_its_budget_is_named():
    # the check itself: one more cell of code, and a cell too long to read at a glance
    path = path_to_the_answer()
    long_cell = nbformat.v4.new_code_cell("\n".join(f"x{i} = {i}" for i in range(21)))
    long_cell["id"] = "too-long"
    overruns = budget_overruns([*path, long_cell])
    assert f"{len(path) + 1} cells (at most {MOST_CELLS})" in overruns[0]
    assert "cell too-long: 21 lines" in overruns


def test_the_path_holds_the_lesson_in_order_and_nothing_else():
    headings = [
        line
        for cell in path_to_the_answer()
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    ]
    assert headings == PATH_SECTIONS
