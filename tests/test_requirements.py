"""`make run` needs requirements.txt and nothing else, for every layout the README promises.

The test environment also has transformers, which pulls in packages (safetensors among
them) that a reader's `make run` environment never gets; so nothing here trusts what
happens to be importable. Two checks:

- every package that the notebook, its helpers and the runner import, at module level or
  inside a function, comes with requirements.txt: the packages it names and, by their
  installed metadata, everything those require (fast, in every `make test`);
- `fresh_env` (CI runs it after `make test`, `make test-fresh-env`): a new virtual
  environment gets the CPU torch and `pip install -r requirements.txt`, nothing more, and
  `make run`'s runner prints "42" on the embedded Meta folder and on a Hugging Face folder
  written by transformers' `save_pretrained`.

And a package that is missing anyway is one sentence that names the fix.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from plumbing import friendly_errors
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.run_notebook import NOTEBOOK, REPO_DIR
from testbeds.hf_folder import save_with_transformers
from tests.support.notebook_values import setup_source

FIRST_PARTY = {path.stem for path in REPO_DIR.glob("*.py")} | {
    "plumbing",
    "generators",
    "tools",
    "tests",
    "testbeds",
    "benchmarks",
}


def imports_in(source: str) -> set[str]:
    """The dotted name of every module `source` imports, anywhere in it (`from a import b`: a and
    a.b)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def first_party_file(dotted: str) -> Path | None:
    """The project's file for a dotted module name (a module or a package's __init__), if any."""
    path = REPO_DIR.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def modules_make_run_imports() -> dict[str, set[str]]:
    """{third-party module: the files that import it} for the notebook, its helpers and the
    runner."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    sources = {
        NOTEBOOK.name: "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    }
    sources["plumbing/run_notebook.py"] = (REPO_DIR / "plumbing" / "run_notebook.py").read_text()
    seen, third_party = set(sources), {}
    while sources:
        where, source = sources.popitem()
        for dotted in imports_in(source):
            top = dotted.split(".")[0]
            if top in FIRST_PARTY:
                path = first_party_file(dotted)
                if path is not None and str(path.relative_to(REPO_DIR)) not in seen:
                    seen.add(str(path.relative_to(REPO_DIR)))
                    sources[str(path.relative_to(REPO_DIR))] = path.read_text()
            elif top not in sys.stdlib_module_names:
                third_party.setdefault(top, set()).add(where)
    return third_party


def distributions_requirements_bring(path: Path = friendly_errors.REQUIREMENTS) -> set[str]:
    """The packages requirements.txt names and, by their installed metadata, all they require."""
    todo = [canonicalize_name(name) for name in friendly_errors.requirements(path)]
    found = set()
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return found


def test_every_package_make_run_imports_comes_with_requirements_txt():
    brought = distributions_requirements_bring()
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(modules_make_run_imports().items()):
        distributions = {canonicalize_name(name) for name in providers.get(module, [module])}
        if not distributions & brought:
            missing.append(
                f"{', '.join(sorted(files))} import(s) {module} (package "
                f"{'/'.join(sorted(distributions))})"
            )
    assert not missing, "requirements.txt does not bring: " + "; ".join(missing)


def test_the_scan_sees_what_the_helpers_import():
    # the check above can fail: it sees the helpers' own third-party imports
    third_party = modules_make_run_imports()
    assert {"torch", "tiktoken", "safetensors", "regex", "matplotlib", "nbclient"} <= set(
        third_party
    )
    assert "plumbing/hf_checkpoint.py" in third_party["safetensors"]


def test_a_requirement_left_out_is_named(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        friendly_errors.REQUIREMENTS.read_text().replace("safetensors", "# safetensors")
    )
    assert "safetensors" not in distributions_requirements_bring(requirements)


def test_a_missing_or_old_package_is_one_sentence(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch>=2.4\nno-such-package-xyz>=1.0  # a comment\nnumpy>=999\n")
    with pytest.raises(friendly_errors.SetupError) as error:
        friendly_errors.check_requirements(requirements)
    message = str(error.value)
    assert (
        "no-such-package-xyz is not installed" in message
        and "numpy is " in message
        and "older than 999" in message
    )
    assert "torch" not in message.split(" (in ")[0]
    assert message.endswith(f"{friendly_errors.INSTALL_FIX}.") and "\n" not in message
    friendly_errors.check_requirements()  # this environment has everything requirements.txt names


def test_the_setup_cell_names_the_fix_for_a_module_that_will_not_import(tmp_path):
    # A package whose metadata is there but which fails to import (a broken install): the
    # setup cell stops with one line that names the fix, not a traceback.
    (tmp_path / "safetensors").mkdir()
    (tmp_path / "safetensors" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'safetensors'\", name='safetensors')\n"
    )
    setup = setup_source()
    code = (
        f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
        "from IPython import get_ipython\n"
        f"get_ipython().run_cell({setup!r})\n"
    )
    script = tmp_path / "run.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", str(script)],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert (
        f"ModuleNotFoundError: No module named 'safetensors': {friendly_errors.INSTALL_FIX}."
        in output
    ), output
    assert "Traceback" not in output and "hf_checkpoint.py" not in output, output


def run_in(python: Path, settings: dict[str, str], out: Path) -> str:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("LLAMA3_")
    } | settings
    result = subprocess.run(
        [str(python), "-m", "plumbing.run_notebook", "--out", str(out)],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, (
        f"make run with {settings}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.mark.fresh_env
def test_make_run_with_requirements_txt_alone_on_meta_and_hugging_face_folders(tmp_path):
    environment = tmp_path / "run-env"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    torch_version = importlib.metadata.version("torch").split("+")[0]
    subprocess.run(
        [*pip, f"torch=={torch_version}"], check=True, timeout=1800
    )  # the CPU build first, as the README says
    subprocess.run([*pip, "-r", str(REPO_DIR / "requirements.txt")], check=True, timeout=1800)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {canonicalize_name(package["name"]) for package in json.loads(listed)}
    assert (
        "transformers" not in installed and "pytest" not in installed
    )  # nothing of the tests' own

    hf_folder = save_with_transformers(EMBEDDED_CHECKPOINT, tmp_path / "hf")
    # `make run` as a reader runs it, every cell: the demos too (the one run of them on a
    # Hugging Face folder), with nothing but requirements.txt installed.
    for name, folder in {"meta": EMBEDDED_CHECKPOINT, "huggingface": hf_folder}.items():
        stdout = run_in(python, {"LLAMA3_CKPT": str(folder)}, tmp_path / f"{name}.ipynb")
        assert "next token id: 2983\ndecoded: '42'" in stdout, f"{name} folder:\n{stdout[-2000:]}"
