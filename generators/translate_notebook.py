"""Make a translated edition of the notebook from the English one and i18n/<language>.json.

    python -m generators.translate_notebook zh           # write llama3-from-scratch.zh.ipynb
    # what needs translating, with the English text
    python -m generators.translate_notebook zh --todo

The English notebook is the one source of truth. The translated edition is a copy of it —
the same cells, ids, code and stored outputs — in which each markdown cell's text is
replaced by its translation. So the code and outputs cannot differ, and `make notebook`
regenerates the edition after every re-execution.

i18n/<language>.json holds, for each English markdown cell in notebook order, its `id`, the
translation as a list of lines, and `en_sha256`: the first 16 hex digits of the SHA-256 of
the English text it translates. Edit an English cell and its stored hash no longer matches:
this script then refuses to write the edition and names the cell (tests/test_translations.py
fails the same way) until the translation is updated. `--todo` prints each such cell's
current English text and the hash to store with the new translation.

A translation must also keep what is not prose: the same image paths, formulas ($…$, $$…$$),
code spans and fenced code as its English cell, and links to headings that exist in its
own edition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import nbformat

from plumbing.run_notebook import NOTEBOOK as ENGLISH
from plumbing.run_notebook import REPO_DIR

LANGUAGES = {"zh": "Chinese"}
# What proves a cell is written in the language: one character of its script.
SCRIPT_OF = {"zh": re.compile(r"[\u4e00-\u9fff]")}


def edition_path(language: str) -> Path:
    return ENGLISH.with_name(f"{ENGLISH.stem}.{language}.ipynb")


def translation_path(language: str) -> Path:
    return REPO_DIR / "i18n" / f"{language}.json"


def english_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def markdown_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "markdown"]


def read_translations(language: str) -> list[dict]:
    """The entries of i18n/<language>.json, each {"id", "en_sha256", "text"} (text joined)."""
    path = translation_path(language)
    if not path.exists():
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        {"id": e["id"], "en_sha256": e["en_sha256"], "text": "\n".join(e[language])}
        for e in entries
    ]


def write_translations(language: str, entries: list[dict]) -> None:
    """Store entries one line per JSON string, so that a changed sentence is a one-line diff."""
    cells = [
        {"id": e["id"], "en_sha256": e["en_sha256"], language: e["text"].split("\n")}
        for e in entries
    ]
    document = {
        "about": f"{LANGUAGES[language]} text of llama3-from-scratch.ipynb's markdown cells; "
        "see generators/translate_notebook.py. Regenerate the edition with `python -m "
        f"generators.translate_notebook {language}`.",
        "cells": cells,
    }
    path = translation_path(language)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# ---- what a translation must keep -------------------------------------------------------

FENCED = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE_MATH = re.compile(r"\$([^$\n]+?)\$")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)")
HEADING_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(#([^)]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def kept_markup(text: str) -> dict[str, Counter]:
    """The parts of a markdown text that a translation must carry over unchanged, by kind."""
    fenced = FENCED.findall(text)
    rest = FENCED.sub(" ", text)
    spans = [match.group(2) for match in CODE_SPAN.finditer(rest)]
    rest = CODE_SPAN.sub(" ", rest)
    display = DISPLAY_MATH.findall(rest)
    rest = DISPLAY_MATH.sub(" ", rest)
    return {
        "fenced code": Counter(fenced),
        "code spans": Counter(spans),
        "formulas": Counter(display) + Counter(INLINE_MATH.findall(rest)),
        "images": Counter(IMAGE.findall(text)),
    }


def heading_anchor(heading: str) -> str:
    """The anchor Jupyter gives a heading: its text without markdown marks, spaces as '-'."""
    return re.sub(r"[`*_]", "", heading).strip().replace(" ", "-")


def anchors(notebook) -> set[str]:
    return {
        heading_anchor(h) for cell in markdown_cells(notebook) for h in HEADING.findall(cell.source)
    }


def broken_heading_links(notebook) -> list[str]:
    """'cell id: #anchor' for every link to a heading that this notebook does not have."""
    known = anchors(notebook)
    return [
        f"{cell.id}: #{target}"
        for cell in markdown_cells(notebook)
        for target in HEADING_LINK.findall(cell.source)
        if target not in known
    ]


def markup_differences(english: str, translated: str) -> list[str]:
    """One line per kind of kept markup that differs between an English text and its translation."""
    ours, theirs = kept_markup(english), kept_markup(translated)
    found = []
    for kind in ours:
        missing, extra = ours[kind] - theirs[kind], theirs[kind] - ours[kind]
        if missing or extra:
            found.append(f"{kind}: missing {sorted(missing)}, not in the English {sorted(extra)}")
    return found


def problems(english_notebook, entries: list[dict], language: str) -> list[str]:
    """Everything that keeps `entries` from being a complete, current translation; [] when none."""
    by_id = {entry["id"]: entry for entry in entries}
    english = markdown_cells(english_notebook)
    found = []
    for cell in english:
        entry = by_id.get(cell.id)
        if entry is None:
            found.append(f"cell {cell.id!r}: no translation")
        elif entry["en_sha256"] != english_hash(cell.source):
            found.append(
                f"cell {cell.id!r}: the English text changed since it was translated (hash "
                f"{english_hash(cell.source)}, translation's {entry['en_sha256']})"
            )
        else:
            if not SCRIPT_OF[language].search(entry["text"]):
                found.append(f"cell {cell.id!r}: the translation has no {LANGUAGES[language]} text")
            found += [
                f"cell {cell.id!r}: {difference}"
                for difference in markup_differences(cell.source, entry["text"])
            ]
    english_ids = {cell.id for cell in english}
    found += [
        f"cell {entry['id']!r}: translated, but the English notebook has no such markdown cell"
        for entry in entries
        if entry["id"] not in english_ids
    ]
    return found


def build(english_notebook, entries: list[dict]):
    """The translated edition: a copy of the English notebook with each markdown cell's text
    replaced."""
    by_id = {entry["id"]: entry["text"] for entry in entries}
    edition = nbformat.from_dict(json.loads(json.dumps(english_notebook)))
    for cell in markdown_cells(edition):
        cell.source = by_id[cell.id]
    return edition


def render(notebook) -> str:
    """The notebook as nbformat writes it to disk (what is committed)."""
    return nbformat.writes(notebook) + "\n"


def todo(english_notebook, entries: list[dict]) -> str:
    by_id = {entry["id"]: entry for entry in entries}
    parts = []
    for cell in markdown_cells(english_notebook):
        entry = by_id.get(cell.id)
        if entry is None or entry["en_sha256"] != english_hash(cell.source):
            state = "new" if entry is None else "changed"
            parts.append(
                f'--- cell "{cell.id}" ({state}), store "en_sha256": '
                f'"{english_hash(cell.source)}"\n{cell.source}\n'
            )
            if entry is not None:
                parts.append(
                    f"--- its current translation, of an older English text:\n{entry['text']}\n"
                )
    return (
        "\n".join(parts) or "nothing to translate: every markdown cell's translation is current\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("language", choices=sorted(LANGUAGES))
    parser.add_argument(
        "--todo",
        action="store_true",
        help="print the English cells whose translation is missing or stale",
    )
    args = parser.parse_args()

    english = nbformat.read(ENGLISH, as_version=4)
    entries = read_translations(args.language)
    if args.todo:
        print(todo(english, entries), end="")
        return 0
    found = problems(english, entries, args.language)
    if found:
        print(
            f"not writing {edition_path(args.language).name}: "
            f"{translation_path(args.language).relative_to(REPO_DIR)} needs work",
            file=sys.stderr,
        )
        print("\n".join(f"  {line}" for line in found), file=sys.stderr)
        print(
            f"`python -m generators.translate_notebook {args.language} --todo` prints the English "
            "text of each cell to translate.",
            file=sys.stderr,
        )
        return 1
    edition = build(english, entries)
    broken = broken_heading_links(edition)
    if broken:
        print(
            "not writing: links to headings the edition does not have:\n  " + "\n  ".join(broken),
            file=sys.stderr,
        )
        return 1
    edition_path(args.language).write_text(render(edition), encoding="utf-8")
    print(
        f"wrote {edition_path(args.language).name} from {ENGLISH.name} and "
        f"{translation_path(args.language).relative_to(REPO_DIR)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
