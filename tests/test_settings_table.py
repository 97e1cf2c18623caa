"""The LLAMA3_* settings come from one table (plumbing/settings.py): the README's table lists
exactly those, with the same defaults and the same audience; `make notebook` clears every one
of them; and only plumbing/settings.py reads them from the environment."""

from __future__ import annotations

import re
import subprocess
import sys

from plumbing import REPO_DIR
from plumbing.settings import MAINTAINERS, READERS, SETTINGS, TABLE, Environment


def test_the_readme_table_is_the_settings_table():
    readme = (REPO_DIR / "README.md").read_text()
    rows = re.findall(r"^\| `(LLAMA3_[A-Z_]+)` \| ([^|]+) \|", readme, flags=re.MULTILINE)
    assert {name: default.strip() for name, default in rows} == SETTINGS


def test_the_readme_says_whom_each_setting_is_for():
    readme = (REPO_DIR / "README.md").read_text()
    said = {}
    for audience, heading in ((READERS, "For readers"), (MAINTAINERS, "For maintainers")):
        section = readme.split(f"**{heading}**", 1)[1].split("\n\n", 2)[1]
        said |= dict.fromkeys(re.findall(r"^\| `(LLAMA3_[A-Z_]+)` \|", section, re.M), audience)
    assert said == {setting.name: setting.audience for setting in TABLE}


def test_only_the_settings_module_reads_them_from_the_environment():
    # os.environ["LLAMA3_…"], os.environ.get("LLAMA3_…") or os.getenv("LLAMA3_…") reads a
    # setting; only plumbing/settings.py may (it reads them all, by the table's names).
    folders = ("plumbing", "benchmarks", "generators", "tools", "testbeds")
    paths = [REPO_DIR / "tokenizer_setup.py"]
    paths += [path for folder in folders for path in (REPO_DIR / folder).glob("*.py")]
    readers = [
        path.relative_to(REPO_DIR).as_posix()
        for path in paths
        if re.search(r"(environ\[|environ\.get\(|getenv\()\s*\"LLAMA3_", path.read_text())
    ]
    assert readers == [], f"{readers} read LLAMA3_* from the environment: use plumbing.settings"


def test_each_default_is_written_once():
    # The table holds what an unset variable stands for; no reader writes a default of its own.
    for path in [*(REPO_DIR / "plumbing").glob("*.py"), *(REPO_DIR / "benchmarks").glob("*.py")]:
        second_default = re.findall(r"read\(\)\.get\(\"(LLAMA3_[A-Z_]+)\",", path.read_text())
        assert not second_default, f"{path.name} writes a default for {second_default}"
    environment = Environment({name: None for name in SETTINGS})
    assert [environment.get(setting.name) for setting in TABLE] == [
        setting.default for setting in TABLE
    ]
    assert environment.given("LLAMA3_DEVICE") is None


def test_make_notebook_clears_every_setting():
    unset = subprocess.run(
        [sys.executable, "-m", "plumbing.settings", "--unset"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert unset == [part for name in SETTINGS for part in ("-u", name)]
    makefile = (REPO_DIR / "Makefile").read_text()
    assert "env $$($(BIN)/python -m plumbing.settings --unset)" in makefile
