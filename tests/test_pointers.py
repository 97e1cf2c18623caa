"""Every pointer resolves: the files and sections that the READMEs, docs/ and the notebook name.

The convention (docs/testing.md#pointers):

- a file or folder is named by its path from the repository's root, `plumbing/one_row.py`;
  a Markdown link in docs/ is relative to docs/, as Markdown links are;
- a section of a Markdown file is named by its heading's anchor as GitHub writes it, after
  the file: `docs/performance.md#decoding`, as a link in Markdown
  (`[Decoding](docs/performance.md#decoding)`), as plain text in a docstring;
- a section of the notebook is named by its heading's words (those before a colon suffice) in
  double quotes after the word section: the section "Fewer bytes per weight".

Other ways of naming a section (`§`, or a file then a quoted name) are refused, so that each
pointer stays one the test can follow. File paths are checked in the READMEs, docs/ and both
cell kinds of the English notebook (the Chinese edition is generated from it); section
pointers also in the Python files of the repository. Kernel-free and fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_DIR / "llama3-from-scratch.ipynb"
MARKDOWN = [REPO_DIR / "README.md", REPO_DIR / "README.zh.md", *sorted(REPO_DIR.glob("docs/*.md"))]
PYTHON_FOLDERS = ("plumbing", "benchmarks", "tools", "generators", "tests", "testbeds")
TOP_FOLDERS = "plumbing|docs|benchmarks|images|tests|testbeds|tools|generators|weights|i18n"

LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
PATH = re.compile(rf"(?<![\w./-])((?:{TOP_FOLDERS})/[\w./-]*\w)(#[\w-]+)?")
ROOT_FILE = re.compile(r"(?<![\w./-])((?:README(?:\.zh)?\.md|[\w.-]+\.ipynb))(#[\w-]+)?")
SECTION = re.compile(r"\bsections? [\"“]([^\"”\n]+)[\"”]", re.IGNORECASE)
OTHER_STYLES = re.compile(r"§|\b(?:README(?:\.zh)?|[\w/]+\.md)\)?, [\"“]")
FENCE = re.compile(r"^\s*(```|~~~)")


def headings(markdown: str) -> list[str]:
    """The headings' words, outside fenced code."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.append(heading.group(1))
    return found


def jupyter_anchor(heading: str) -> str:
    """The anchor Jupyter gives a heading (as generators/translate_notebook.py writes it)."""
    return re.sub(r"[`*_]", "", heading).strip().replace(" ", "-")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: links and marks dropped, lower case,
    punctuation dropped, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def github_anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    for heading in headings(path.read_text()):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def notebook_cells(path: Path = NOTEBOOK) -> list[tuple[str, str, str]]:
    """(cell id, cell kind, source) of every cell."""
    cells = json.loads(path.read_text())["cells"]
    return [(c.get("id", "?"), c["cell_type"], "".join(c["source"])) for c in cells]


def notebook_headings() -> set[str]:
    """Each heading's words, and those before its colon: "Fewer bytes per weight"."""
    words = {
        re.sub(r"[`*_]", "", heading).strip()
        for _, kind, source in notebook_cells()
        if kind == "markdown"
        for heading in headings(source)
    }
    return words | {heading.split(": ")[0] for heading in words}


def sources() -> list[tuple[str, str, Path]]:
    """(where, text, the folder its relative links start from) of every text checked for paths."""
    found = [(m.relative_to(REPO_DIR).as_posix(), m.read_text(), m.parent) for m in MARKDOWN]
    for cell_id, kind, source in notebook_cells():
        found.append((f"{NOTEBOOK.name}, cell {cell_id} ({kind})", source, REPO_DIR))
    return found


def python_files() -> list[Path]:
    return [
        path
        for folder in PYTHON_FOLDERS
        for path in sorted((REPO_DIR / folder).rglob("*.py"))
        if ".venv" not in path.parts and path != Path(__file__)  # this file breaks them on purpose
    ]


def broken_target(target: Path, anchor: str | None) -> str | None:
    """Why a pointer to target (and anchor, without its '#') does not resolve, or None."""
    if not target.exists():
        return "no such file"
    if not anchor:
        return None
    if target.suffix == ".md" and anchor not in github_anchors(target):
        return f"no heading with the anchor #{anchor} in {target.name}"
    if target.suffix == ".ipynb":
        cells = notebook_cells(target)
        anchors = {
            jupyter_anchor(h) for _, kind, s in cells if kind == "markdown" for h in headings(s)
        }
        if anchor not in anchors:
            return f"no heading with the anchor #{anchor} in {target.name}"
    return None


def broken_pointers(where: str, text: str, base: Path, *, paths: bool = True) -> list[str]:
    """Each pointer in text that does not resolve, as 'where: pointer (why)'."""
    broken = []
    if paths:
        for match in LINK.finditer(text):
            target = match.group(1)
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address; a heading of the same page (tested for the notebook
                # by tests/test_translations.py)
            file, _, anchor = target.partition("#")
            if why := broken_target(base / file, anchor):
                broken.append(f"{where}: {target} ({why})")
        for pattern in (PATH, ROOT_FILE):
            for match in pattern.finditer(text):
                file, anchor = match.group(1), (match.group(2) or "#")[1:]
                if why := broken_target(REPO_DIR / file, anchor):
                    broken.append(f"{where}: {match.group(0)} ({why})")
    else:  # a docstring: only the paths that name a section
        for match in PATH.finditer(text):
            if match.group(2) and (
                why := broken_target(REPO_DIR / match.group(1), match.group(2)[1:])
            ):
                broken.append(f"{where}: {match.group(0)} ({why})")
    sections = notebook_headings()
    for match in SECTION.finditer(text):
        if re.sub(r"[`*_]", "", match.group(1)).strip() not in sections:
            broken.append(f'{where}: section "{match.group(1)}" (no such heading in the notebook)')
    for match in OTHER_STYLES.finditer(text):
        line = text[: match.start()].count("\n") + 1
        broken.append(
            f"{where}, line {line}: {match.group(0)!r} (name a section as FILE#anchor, "
            'or a notebook section as section "Heading")'
        )
    return list(dict.fromkeys(broken))


def test_every_pointer_in_the_readmes_docs_and_notebook_resolves():
    broken = [b for where, text, base in sources() for b in broken_pointers(where, text, base)]
    assert broken == [], "\n".join(broken)


def test_every_section_pointer_in_the_code_resolves():
    broken = [
        b
        for path in python_files()
        for b in broken_pointers(
            path.relative_to(REPO_DIR).as_posix(), path.read_text(), path.parent, paths=False
        )
    ]
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize(
    "text, why",
    [
        ("see `plumbing/no_such_module.py`", "no such file"),
        ("[figures](docs/performance.md#no-such-section)", "no heading with the anchor"),
        ("docs/performance.md#no-such-section", "no heading with the anchor"),
        ('the section "No such section"', "no such heading in the notebook"),
        ('(docs/performance.md, "Decoding")', "name a section as FILE#anchor"),
        ("§ Decoding", "name a section as FILE#anchor"),
    ],
)
def test_a_pointer_into_the_void_is_found(text, why):
    broken = broken_pointers("here", text, REPO_DIR)
    assert len(broken) == 1 and why in broken[0], broken


def test_good_pointers_pass():
    text = (
        "`plumbing/one_row.py`, [Decoding](docs/performance.md#decoding), "
        'docs/performance.md#gguf-files-beside-llamacpp, the section "Fewer bytes per weight", '
        "README.md#two-commands, [tests](tests/), ![a](images/rope.png)"
    )
    assert broken_pointers("here", text, REPO_DIR) == []


def test_anchors_are_githubs():
    assert github_anchor("GGUF files beside llama.cpp") == "gguf-files-beside-llamacpp"
    assert github_anchor("One-row products from the file's bytes") == (
        "one-row-products-from-the-files-bytes"
    )
    assert github_anchor("Speed, memory, and when it goes wrong") == (
        "speed-memory-and-when-it-goes-wrong"
    )
