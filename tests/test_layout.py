"""The house rules that a glance at the repository should confirm.

- the root holds the notebooks, the READMEs, tokenizer_setup.py, the requirements, the
  Makefile, pyproject.toml, the LICENSE and folders: at most 12 tracked files;
- the plumbing's imports run one way, in the order plumbing/__init__.py lists, and no
  module of the project's own imports anything inside a function (which would hide a
  circle, or a missing package, until that function runs);
- the README is a map, at most 200 lines; the details live in docs/;
- no code cell of the notebook runs past 25 lines, and none uses `global`: one idea a cell;
- tests/ is the tests' own: what benchmarks, generators and tools share with them lives in
  testbeds/, which loads no reference model (fairscale, llama_models) when imported; the
  helper that runs the notebook for a benchmark imports no torch, so that a benchmark of a
  whole run's memory measures what `make run`'s driver holds.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess

import pytest

from plumbing import REPO_DIR

PLUMBING = REPO_DIR / "plumbing"


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=REPO_DIR, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return result.stdout.split()


def test_the_root_holds_few_files():
    root = sorted(name for name in tracked_files() if "/" not in name)
    assert len(root) <= 12, f"{len(root)} tracked files at the root: {root}"


def plumbing_order() -> list[str]:
    """The modules in the order plumbing/__init__.py's docstring lists them."""
    docstring = ast.get_docstring(ast.parse((PLUMBING / "__init__.py").read_text()))
    return re.findall(r"^    (\w+)\s", docstring, flags=re.MULTILINE)


def project_imports(path) -> list[tuple[str, bool]]:
    """(module of plumbing it imports, whether inside a function) for each import in `path`."""
    found = []
    tree = ast.parse(path.read_text())
    in_function = {
        id(node)
        for top in ast.walk(tree)
        if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(top)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "plumbing"
        ):
            names = (
                [node.module.split(".")[1]]
                if "." in node.module
                else [alias.name for alias in node.names]
            )
            found += [(name, id(node) in in_function) for name in names]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found += [("", True)] if id(node) in in_function else []
    return found


def test_plumbing_lists_every_module_it_has():
    assert sorted(plumbing_order()) == sorted(
        path.stem for path in PLUMBING.glob("*.py") if path.stem != "__init__"
    )


def test_plumbing_imports_run_one_way():
    order = plumbing_order()
    backwards = []
    for module in order:
        for imported, _ in project_imports(PLUMBING / f"{module}.py"):
            if imported in order and order.index(imported) >= order.index(module):
                backwards.append(f"{module} imports {imported}")
    assert not backwards, "; ".join(backwards)


@pytest.mark.parametrize(
    "path",
    sorted(PLUMBING.glob("*.py")) + [REPO_DIR / "tokenizer_setup.py"],
    ids=lambda path: path.name,
)
def test_no_import_inside_a_function(path):
    inside = [name or "a module" for name, in_function in project_imports(path) if in_function]
    assert not inside, f"{path.name} imports {inside} inside a function"


def test_the_readme_is_a_map():
    lines = (REPO_DIR / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"


def imported_modules(path) -> set[str]:
    """The top-level module names `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("folder", ["plumbing", "benchmarks", "generators", "tools", "testbeds"])
def test_only_tests_import_tests(folder):
    importing = sorted(
        path.name for path in (REPO_DIR / folder).glob("*.py") if "tests" in imported_modules(path)
    )
    assert not importing, f"{folder}/ {importing} import tests/: move what they need to testbeds/"


# The one exception: the Chinese edition's tests check what that generator writes, by its own
# functions.
GENERATOR_UNDER_TEST = {"test_translations.py": {"generators"}}


def test_tests_import_neither_benchmarks_nor_generators():
    # What tests share with benchmarks and generators lives in testbeds/; a benchmark the
    # tests check (benchmarks/floor_forward.py) is run as its users run it.
    importing = {}
    for path in sorted((REPO_DIR / "tests").rglob("*.py")):
        found = imported_modules(path) & {"benchmarks", "generators"}
        found -= GENERATOR_UNDER_TEST.get(path.name, set())
        if found:
            importing[path.relative_to(REPO_DIR).as_posix()] = sorted(found)
    assert not importing, f"{importing}: move what they share to testbeds/"


def test_testbeds_load_no_reference_model():
    loading = {
        path.name: sorted(imported_modules(path) & {"fairscale", "llama_models"})
        for path in (REPO_DIR / "testbeds").glob("*.py")
    }
    assert not any(loading.values()), {name: found for name, found in loading.items() if found}


def test_the_notebook_kernel_helper_imports_no_torch():
    assert "torch" not in imported_modules(REPO_DIR / "testbeds" / "notebook_kernel.py")


def test_every_cell_is_short_and_uses_no_global():
    notebook = json.loads((REPO_DIR / "llama3-from-scratch.ipynb").read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines = source.count("\n") + 1
            assert lines <= 25, f"cell {cell.get('id')} has {lines} lines: split it at an idea"
            assert not re.search(r"^\s*global ", source, re.M), f"cell {cell.get('id')}: global"
