"""The notebook defines every name its contract declares (testbeds/notebook_contract.py), read
from its source: no kernel, so a renamed name fails here in a second, in `make quick`, not
deep inside a kernel run.

Top level is what a kernel's globals hold after Run All: assignments, definitions, imports,
loop and `with … as` targets, also inside a top-level `if`, `for`, `while`, `with` or `try`,
never inside a function or class.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from testbeds.notebook_contract import CONTRACT, ContractError, NotebookGlobals
from testbeds.notebook_kernel import NOTEBOOK_UNDER_TEST


def bound_names(target: ast.AST) -> list[str]:
    """The names an assignment target binds (`a`, `a, b`, `*rest`), not `a[i]` or `a.b`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in bound_names(element)]
    if isinstance(target, ast.Starred):
        return bound_names(target.value)
    return []


def top_level_names(statements: list[ast.stmt]) -> set[str]:
    names = set()
    for node in statements:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Assign):
            names.update(name for target in node.targets for name in bound_names(target))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
            names.update(bound_names(node.target))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.With | ast.AsyncWith):
            names.update(
                name
                for item in node.items
                if item.optional_vars is not None
                for name in bound_names(item.optional_vars)
            )
        for field in ("body", "orelse", "finalbody"):  # if, for, while, with, try: same scope
            names |= top_level_names(getattr(node, field, []))
        for handler in getattr(node, "handlers", []):
            names |= top_level_names(handler.body)
    return names


def notebook_names(path: Path) -> set[str]:
    cells = nbformat.read(path, as_version=4).cells
    return {
        name
        for cell in cells
        if cell.cell_type == "code"
        for name in top_level_names(ast.parse(cell.source, filename=cell.get("id", "cell")).body)
    }


def test_the_notebook_defines_its_contract():
    missing = sorted(set(CONTRACT) - notebook_names(NOTEBOOK_UNDER_TEST))
    assert not missing, (
        f"{NOTEBOOK_UNDER_TEST.name} does not define {', '.join(missing)} at top level, which "
        "testbeds/notebook_contract.py declares: rename them there too (and where they are read)"
    )


def test_every_name_says_what_it_holds():
    assert all(meaning.strip() for meaning in CONTRACT.values())


def test_top_level_is_what_the_kernel_keeps():
    source = """
import math as m, os.path
a, (b, *c) = 1, (2, 3)
d: int = 4
if True:
    e = 5
else:
    from x import f
try:
    pass
except Exception:
    g = 6
for h in []:
    pass
with open("x") as (i, j):
    pass
def k():
    inner = 1
class L:
    inner_too = 2
m.x = 7
"""
    assert top_level_names(ast.parse(source).body) == set("abcdefghijkL") | {"m", "os"}


def test_reading_through_the_contract():
    kernel = {"dim": 64}
    nb = NotebookGlobals(kernel)
    assert nb["dim"] == 64
    nb["n_layers"] = 4
    assert kernel["n_layers"] == 4
    with pytest.raises(ContractError, match=r"'n_heads' .* testbeds/notebook_contract.py"):
        nb["n_heads"]
    with pytest.raises(ContractError, match=r"'not_declared' is not in the notebook's contract"):
        nb["not_declared"]
