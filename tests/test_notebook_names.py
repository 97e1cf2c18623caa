"""Every name the tests and benchmarks read from the notebook's kernel (`nb["name"]` in the
functions they send or call there, testbeds/notebook_kernel.py) is one the notebook defines,
read from the sources: no kernel, so a renamed name fails here in a second, in `make quick`,
naming the file that reads it, not deep inside a kernel run.

Top level is what a kernel's globals hold after Run All: assignments, definitions, imports,
loop and `with … as` targets, also inside a top-level `if`, `for`, `while`, `with` or `try`,
never inside a function or class.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from plumbing import REPO_DIR
from testbeds.notebook_kernel import (
    NOTEBOOK_UNDER_TEST,
    KernelGlobals,
    NotebookNameError,
    in_kernel,
    run_sent,
    sent_sources,
)

# The files whose functions read the notebook's kernel: the tests' own (sent there) and the
# benchmarks' (imported there).
READERS = sorted([*REPO_DIR.glob("tests/**/*.py"), REPO_DIR / "benchmarks" / "kernel_figures.py"])


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


def read_names(source: str) -> set[str]:
    """The names `nb["name"]` reads or sets, and `nb.update(name=…)` sets, in `source`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "nb"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            names.add(node.slice.value)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "nb"
        ):
            names.update(keyword.arg for keyword in node.keywords if keyword.arg)
    return names


def test_every_name_read_from_the_kernel_is_one_the_notebook_defines():
    defined = notebook_names(NOTEBOOK_UNDER_TEST)
    read = {path: read_names(path.read_text(encoding="utf-8")) for path in READERS}
    assert sum(map(len, read.values())) > 80  # the readers were found
    missing = {
        str(path.relative_to(REPO_DIR)): sorted(names - defined)
        for path, names in read.items()
        if names - defined
    }
    assert not missing, (
        f"{NOTEBOOK_UNDER_TEST.name} does not define these names at top level, which these "
        f"files read from its kernel: {missing}; rename them there too"
    )


def test_the_names_read_are_found_in_a_function_sent_to_the_kernel():
    source = """
def reader(nb, path):
    a = nb["dim"] * nb["n_layers"]
    nb["rms_norm"] = None
    nb.update(settings=1, device=2)
    other = {"x": 1}["x"]
"""
    assert read_names(source) == {"dim", "n_layers", "rms_norm", "settings", "device"}


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


def test_a_name_the_notebook_lacks_is_one_sentence():
    kernel = {"dim": 64}
    nb = KernelGlobals(kernel)
    assert nb["dim"] == 64
    nb["n_layers"] = 4
    assert kernel["n_layers"] == 4
    with pytest.raises(NotebookNameError, match=r"^the notebook's kernel has no 'n_heads': "):
        nb["n_heads"]


@in_kernel
def _helper(x):
    return x + 1


@in_kernel(uses=(_helper,))
def _sent(nb, path):
    return _helper(nb["dim"]) / 0  # line numbers: the traceback shows this file's line


def _not_marked(nb, path):
    return None


def test_a_sent_function_runs_with_what_it_uses_under_its_own_file_and_lines():
    sources = sent_sources([_sent])
    assert [source.split("\n")[1] for _, source, _ in sources] == [
        "def _helper(x):",
        "def _sent(nb, path):",
    ]
    namespace = run_sent(sources)
    with pytest.raises(ZeroDivisionError) as raised:
        namespace["_sent"](KernelGlobals({"dim": 63}), "unused")
    where = raised.traceback[-1]
    assert Path(str(where.path)) == Path(__file__)
    assert where.lineno + 1 == _sent.__code__.co_firstlineno + 2  # `return …`, 0-based lineno


def test_only_marked_functions_are_sent():
    with pytest.raises(TypeError, match="_not_marked is not marked @in_kernel"):
        sent_sources([_not_marked])
