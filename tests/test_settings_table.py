"""The LLAMA3_* settings come from one table (plumbing.run_settings.SETTINGS): the README's
table lists exactly those, with the same defaults; `make notebook` clears every one of them;
and every LLAMA3_* name the plumbing reads is in the table."""

from __future__ import annotations

import re
import subprocess
import sys

from plumbing import REPO_DIR
from plumbing.run_settings import SETTINGS


def test_the_readme_table_is_the_settings_table():
    readme = (REPO_DIR / "README.md").read_text()
    rows = re.findall(r"^\| `(LLAMA3_[A-Z_]+)` \| ([^|]+) \|", readme, flags=re.MULTILINE)
    assert {name: default.strip() for name, default in rows} == SETTINGS


def test_every_setting_the_code_reads_is_in_the_table():
    read = set()
    for path in [*(REPO_DIR / "plumbing").glob("*.py"), REPO_DIR / "tokenizer_setup.py"]:
        read |= set(re.findall(r"environ(?:\.get)?\(\s*\"(LLAMA3_[A-Z_]+)\"", path.read_text()))
    assert read and read <= set(SETTINGS), read - set(SETTINGS)


def test_make_notebook_clears_every_setting():
    unset = subprocess.run(
        [sys.executable, "-m", "plumbing.run_settings", "--unset"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert unset == [part for name in SETTINGS for part in ("-u", name)]
    makefile = (REPO_DIR / "Makefile").read_text()
    assert "env $$($(BIN)/python -m plumbing.run_settings --unset)" in makefile
