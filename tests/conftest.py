"""Shared test fixtures: run the notebook itself and read its tensors back."""

from __future__ import annotations

import ctypes
import os

import pytest
import torch
from llama_models.llama3.tokenizer import Tokenizer

import tokenizer_setup
from plumbing import run_notebook, run_settings
from plumbing.run_notebook import NOTEBOOK
from tests.support import shared_runs

_reader_settings = pytest.MonkeyPatch()
# Every execution of the notebook in this process is counted (shared_runs.summary).
run_notebook.execute = shared_runs.counting(run_notebook.execute)
SHARED = shared_runs.SHARED
# The fixtures that read shared executions, each started (SHARED's method of the same name) as
# soon as the tests are known.
STARTERS = (
    "own_nbval_pass",
    "own_pass_memory",
    "embedded_run",
    "reexecutions",
    "any_prompt_runs",
    "runs",
)


def pytest_configure(config):
    # One thread for this process and every kernel it starts: on two cores, with the shared
    # executions running beside the tests, two threads each would only wait for each other.
    torch.set_num_threads(1)
    _reader_settings.setenv("OMP_NUM_THREADS", "1")
    keep_freed_buffers()
    # nbval's kernel inherits this process's environment: for this test session only, the
    # reader's own LLAMA3_* settings are set aside, so that the stored outputs (made with
    # none of them) are what the notebook is compared against. Restored when pytest ends.
    for name in [name for name in os.environ if name.startswith("LLAMA3_")]:
        _reader_settings.delenv(name)


def keep_freed_buffers():
    """glibc's malloc hands a buffer over 32 MB (one [128,256 × 64] float32 matrix: every
    gradient of the embedded model's vocabulary-sized matrices) to the kernel when it is freed
    and asks for fresh zeroed pages the next time, so a training step spends as long in page
    faults as in arithmetic. For this test session (this process, and through the environment
    every kernel and process it starts), buffers up to 256 MB are kept in the heap and reused.
    What the notebook computes is unchanged; its memory, measured by benchmarks/, is not
    what the suite measures."""
    limits = {"MALLOC_MMAP_THRESHOLD_": 256 * 2**20, "MALLOC_TRIM_THRESHOLD_": 1024 * 2**20}
    for name, value in limits.items():
        _reader_settings.setenv(name, str(value))
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its malloc does as it does
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, limits["MALLOC_MMAP_THRESHOLD_"])
    libc.mallopt(m_trim_threshold, limits["MALLOC_TRIM_THRESHOLD_"])


def pytest_unconfigure(config):
    SHARED.close()
    _reader_settings.undo()


def needs_shared_run(item) -> bool:
    started = (*STARTERS, *shared_runs.DECLARED)  # and the runs test files declare
    return any(name in started for name in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(session, config, items):
    # nbval's own items for the notebook would execute it in this process, cell after cell,
    # with every test waiting: tests/test_notebook.py reads the same pass, made beside the
    # tests (shared_runs.SharedRuns.own_nbval_pass), one result per cell.
    cells = [item for item in items if item.nodeid.startswith(NOTEBOOK.name + "::")]
    if cells:
        config.hook.pytest_deselected(items=cells)
    # The tests that read a shared execution go last, in their order, so that the tests
    # that need none run while the executions do.
    items[:] = [i for i in items if i not in cells and not needs_shared_run(i)] + [
        i for i in items if i not in cells and needs_shared_run(i)
    ]
    split_module_fixtures(items)


def split_module_fixtures(items) -> None:
    """A module-scoped fixture read by tests on both sides of that move would be made twice
    (pytest tears it down when its module's tests stop being adjacent): say which."""
    sides: dict[tuple[str, str], set[bool]] = {}
    for item in items:
        for name, definitions in getattr(item, "_fixtureinfo", None).name2fixturedefs.items():
            if definitions[-1].scope == "module":
                sides.setdefault((item.module.__name__, name), set()).add(needs_shared_run(item))
    split = sorted(f"{module}.{name}" for (module, name), side in sides.items() if len(side) > 1)
    if split:
        raise pytest.UsageError(
            f"make these fixtures session-scoped ({', '.join(split)}): read by tests that wait "
            "for a shared run and by tests that do not, so module scope would make each twice"
        )


def pytest_collection_finish(session):
    if session.config.option.collectonly:  # nothing runs: no execution to start (or wait for)
        return
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    for name in STARTERS:
        if name in wanted:
            getattr(SHARED, name)()
    for name, function in shared_runs.DECLARED.items():
        if name in wanted:
            SHARED.start(name, function)


def pytest_terminal_summary(terminalreporter):
    executions = list(shared_runs.EXECUTIONS)
    if executions:
        terminalreporter.write_line(shared_runs.summary(executions))
    if terminalreporter.config.option.verbose > 0:  # -v: each execution, from when it began
        for what, seconds, ended in sorted(executions, key=lambda e: e[2] - e[1]):
            what = what.replace("\n", " ")[:110]
            terminalreporter.write_line(f"{ended - seconds:4.0f}–{ended:4.0f} s  {what}")


@pytest.fixture(scope="session")
def own_nbval_pass():
    """nbval on the notebook with this machine's own kernels and `auto` dtype: each cell's
    outcome (shared_runs.SharedRuns.own_nbval_pass)."""
    return SHARED.own_nbval_pass().result()


@pytest.fixture(scope="session")
def own_pass_memory():
    """The peak RssAnon of the own pass's kernel, in bytes, under glibc's malloc as a reader
    has it (shared_runs.SharedRuns.own_pass_memory)."""
    return SHARED.own_pass_memory().result()


@pytest.fixture(scope="session")
def embedded_run():
    """The notebook on the embedded checkpoint in float32, read by most tests
    (shared_runs.embedded)."""
    return SHARED.embedded_run().result()


@pytest.fixture(scope="session")
def reexecutions():
    """nbval under every CPU kernel family and dtype this machine re-executes
    (shared_runs.configurations): nbval's result for each."""
    futures = SHARED.reexecutions()
    results = {configuration: future.result() for configuration, future in futures.items()}
    return {c: r["nbval"] if isinstance(r, dict) else r for c, r in results.items()}


@pytest.fixture(scope="session")
def any_prompt_runs():
    """The whole notebook on each of shared_runs.PROMPTS: the executed notebook of each."""
    return {name: future.result() for name, future in SHARED.any_prompt_runs().items()}


@pytest.fixture(scope="session")
def tokenizer():
    """Our Llama 3 tokenizer (tokenizer_setup)."""
    return tokenizer_setup.load_tokenizer(None)


@pytest.fixture(scope="session")
def meta():
    """Meta's reference tokenizer from llama-models, on the same tokenizer.model."""
    return Tokenizer(tokenizer_setup.packaged_tokenizer_model())


@pytest.fixture
def clean_env(monkeypatch):
    for name in run_settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="session")
def checkpoints():
    """The embedded checkpoint and random ones of other shapes (tests/support/parity_runs.py)."""
    return SHARED.parity_runs().checkpoints


@pytest.fixture(scope="session")
def runs():
    """Every notebook run and reference model the parity tests compare, each made once."""
    return SHARED.parity_runs()
