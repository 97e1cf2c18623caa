"""The whole-notebook executions the suite needs, each run once, beside the tests.

A whole execution of the notebook (its demos included) is the costly part of the suite, so:

- each configuration runs once, and every test that reads it shares the run. The run most
  tests read (the embedded checkpoint in float32, `EMBEDDED`) is also one of the stored-outputs
  checks: nbval executes it under one CPU kernel family, compares every cell with the stored
  outputs, and in the same kernel, after the last cell, `read_back` and the functions the
  test files send (`notebook_values.read_in_shared_run`);
- they start as soon as pytest knows which tests it will run (tests/conftest.py), a few at a
  time on one thread each, while the tests that need no whole execution run in the pytest
  process; the tests that read them are moved to the end of the session;
- `make test` ends with how many whole executions it made (`summary`).

The stored-outputs checks: the committed outputs come from one CPU run (`make notebook`).
Another machine adds the same numbers in another order (PyTorch's AVX-512 kernels take 16
floats at a time, the AVX2 ones 8, the scalar ones 1; oneDNN blocks its products by the ISA it
finds; ARM and GPUs have kernels of their own), so the notebook prints only digits that stay
put, and nbval re-executes it under the kernel families PyTorch can be forced to on the
machine at hand, in float32 and in bfloat16:

- `default`: ATen's scalar kernels (`ATEN_CPU_CAPABILITY=default`), oneDNN held to SSE4.1,
  and MKL's matrix products on its "compatible" code path (`MKL_CBWR=COMPATIBLE`);
- `avx2`: ATen's and oneDNN's AVX2 kernels;
- `avx512`: ATen's AVX-512 kernels and oneDNN's plain AVX-512 (no BF16, no AMX), where the CPU
  has AVX-512.

The scalar family stands in for machines whose kernels this CPU cannot run (ARM, say): on an
AVX2-only CPU it is the one other order there is. A CPU with AVX-512 has two vector families
besides its own native kernels, so there the scalar one is left out. The CPU's own family in
float32 is the run most tests read (`embedded_configuration`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from subprocess import PIPE
from xml.etree import ElementTree

import nbformat
import pytest
import torch

from plumbing import REPO_DIR, run_notebook, run_settings
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.run_notebook import NOTEBOOK
from testbeds import memory, notebook_kernel
from testbeds.notebook_kernel import NOTEBOOK_UNDER_TEST
from tests.support import parity_runs
from tests.support.notebook_values import SHARED_RUN_READERS, read_back

# Both variables are read once, when the process starts: each configuration is a new kernel.
KERNELS = {
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE",
    },
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}
DTYPES = ["float32", "bfloat16"]

# Every shared execution runs on one thread: the notebook on the embedded model gains little
# from a second one, so on two cores two executions side by side take about the time of one.
# (One thread also sums in another order than two: one more machine the outputs must hold on.)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# How many shared executions run at once, beside the tests in the pytest process.
AT_ONCE = 2

KERNEL_DID_NOT_START = "Kernel died before replying to kernel_info"

# Every whole or partial execution of the notebook in this session: (what ran, seconds, when it
# ended in seconds after this module was imported; pytest -v prints them as a timeline).
EXECUTIONS: list[tuple[str, float, float]] = []
_imported = time.perf_counter()
_recording = threading.Lock()


def record(what: str, seconds: float) -> None:
    with _recording:
        EXECUTIONS.append((what, seconds, time.perf_counter() - _imported))


def counting(execute):
    """run_notebook.execute, recording each call in EXECUTIONS (tests/conftest.py wraps it)."""

    def counted(notebook, settings=None, *arguments, **keywords):
        started = time.perf_counter()
        try:
            return execute(notebook, settings, *arguments, **keywords)
        finally:
            what = " ".join(f"{k}={v}" for k, v in (settings or {}).items() if "LLAMA3" in k)
            record(f"nbclient {what}", time.perf_counter() - started)

    return counted


def cpu_has(kernels: str) -> bool:
    checks = {
        "default": lambda: True,
        "avx2": torch.cpu._is_avx2_supported,
        "avx512": torch.cpu._is_avx512_supported,
    }
    return checks[kernels]()


def best_kernels() -> str:
    """The CPU's own family: the one pytest's process, and so the reference models, run."""
    return next(kernels for kernels in ("avx512", "avx2", "default") if cpu_has(kernels))


def reason_to_skip(kernels: str, dtype: str) -> str | None:
    """Why this configuration cannot or need not run here (None: run it)."""
    native = torch.backends.cpu.get_cpu_capability()
    if not cpu_has(kernels):
        tried = ", ".join(name for name in KERNELS if cpu_has(name))
        return (
            f"this CPU has no {kernels.upper()} (PyTorch's kernels here: {native}), "
            f"so {kernels} could not be tried; tried: {tried}"
        )
    if kernels == "default" and cpu_has("avx512"):
        return (
            "this CPU has AVX-512: avx2 and avx512 give two orders besides its own, so the "
            "scalar stand-in (an AVX2-only CPU's one other order) is left out here"
        )
    return None


def configurations() -> list[tuple[str, str]]:
    """(kernels, dtype) for every re-execution this machine runs."""
    return [
        (kernels, dtype)
        for kernels in KERNELS
        for dtype in DTYPES
        if reason_to_skip(kernels, dtype) is None
    ]


def embedded_configuration() -> tuple[str, str]:
    """The re-execution that is also the shared float32 run most tests read: the CPU's own
    family in float32. The tests compare that run with reference models computed in pytest's
    process, on the CPU's own kernels; another family can move the learning section's loss by
    2e-4 of itself (the sum over 128,256 exponentials: 0.360174 under AVX2 and the scalar
    kernels, 0.360255 under AVX-512, measured on an AMD EPYC on 2026-12-05)."""
    return best_kernels(), "float32"


def own_pass_is_embedded() -> bool:
    """Whether nbval's own pass (no setting: `auto` device and dtype, the CPU's own kernels)
    would run exactly what the embedded run runs, so that one execution serves both. So on an
    x86 CPU with no GPU whose `auto` dtype is float32 (no AVX-512 BF16 or AMX: most machines
    this suite runs on): its own ATen family is the best one there, and oneDNN held to AVX2 or
    AVX512_CORE computes float32 as it would unheld (the ISAs above those add int8, bf16 and
    fp16 instructions). The stand-in scalar family (MKL's "compatible" path) is never the same."""
    if NOTEBOOK_UNDER_TEST != NOTEBOOK or torch.cuda.is_available():
        return False
    if torch.backends.mps.is_available() or run_settings.cpu_has_native_bf16():
        return False
    native = torch.backends.cpu.get_cpu_capability().lower()  # "avx2", "avx512", "default", …
    return native == best_kernels() and native in ("avx2", "avx512")


def environment(configuration: tuple[str, str]) -> dict[str, str]:
    kernels, dtype = configuration
    return {**KERNELS[kernels], **ONE_THREAD, "LLAMA3_DEVICE": "cpu", "LLAMA3_DTYPE": dtype}


def nbval(
    settings: dict[str, str],
    notebook: Path = NOTEBOOK,
    keep: Path | None = None,
    junit: Path | None = None,
    as_readers_run: bool = False,
    readers_start: Path | None = None,
) -> subprocess.CompletedProcess:
    """nbval on `notebook` in a child pytest with these variables (LLAMA3_* and kernel families
    exactly these); with `keep`, the executed notebook is written there (nbval_keep.py). With
    `as_readers_run`, its kernel's memory is a reader's: glibc's malloc as it comes (not the
    suite's `keep_freed_buffers`, tests/conftest.py), and the peak RssAnon of the kernel,
    sampled until the file `readers_start` appears (if given), is the result's
    `kernel_anon_peak` (bytes)."""
    setting_aside = ("LLAMA3_", "ATEN_CPU", "ONEDNN_", "MKL_CBWR", "NBVAL_KEEP")
    setting_aside += ("MALLOC_",) if as_readers_run else ()
    env = {name: value for name, value in os.environ.items() if not name.startswith(setting_aside)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
    if keep is not None:
        env["NBVAL_KEEP"] = str(keep)
    # nbval's options are pyproject.toml's addopts, the one place they are written
    command = [sys.executable, "-m", "pytest", "-q", "--color=no", "-c", "pyproject.toml"]
    # two plugins nbval never uses: loading them took 0.7 s of the child's 1.2 s of startup
    command += ["-p", "no:hypothesispytest", "-p", "no:anyio"]
    command += ["-p", "tests.support.nbval_keep", str(notebook)]
    command += [f"--junitxml={junit}"] if junit is not None else []
    for _ in range(2):
        started = time.perf_counter()
        with subprocess.Popen(
            command, cwd=REPO_DIR, env=env | settings, stdout=PIPE, stderr=PIPE, text=True
        ) as process:
            peak = (
                memory.KernelPeak(process.pid, until=readers_start)
                if as_readers_run
                else contextlib.nullcontext()
            )
            try:
                with peak:
                    stdout, stderr = process.communicate(timeout=1800)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        result.kernel_anon_peak = getattr(peak, "most", None)
        what = " ".join(f"{k}={v}" for k, v in settings.items() if "LLAMA3" in k or "ATEN" in k)
        record(f"nbval {what}", time.perf_counter() - started)
        # Kernels started side by side can race for the same free port, and the loser dies
        # before it runs a cell (seen once in CI on 2026-12-03). That says nothing about the
        # outputs, so such a run is started once more; any failure in a cell is final.
        if KERNEL_DID_NOT_START not in result.stdout:
            break
    return result


def nbval_and_read(
    workdir: Path, settings: dict[str, str], also: list[tuple], as_readers_run: bool = False
) -> dict:
    """nbval on the notebook under test with the readers' calls in a cell after its last one
    (`read_back`, then `also`; notebook_kernel.calls_cell). Returns the values `read_back`
    saved, the executed notebook ("notebook"), the readers' files ("files"), nbval's
    result ("nbval"), each of the notebook's own cells' outcome ("outcomes", as `outcomes`
    reads them: the readers' cell left out) and, `as_readers_run` (`nbval`), the peak memory
    of the notebook's own cells ("kernel_anon_peak": sampled until the readers' cell starts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.read(NOTEBOOK_UNDER_TEST, as_version=4)
    readers_start = workdir / "readers-started"
    calls = notebook_kernel.calls_cell([(read_back,), *also], workdir)
    calls = f"open({str(readers_start)!r}, 'w').close()\n{calls}"
    notebook.cells.append(nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\n" + calls))
    nbformat.write(notebook, workdir / "notebook.ipynb")
    report = workdir / "nbval.xml"
    sent, kept = workdir / "notebook.ipynb", workdir / "executed.ipynb"
    result = nbval(settings, sent, kept, report, as_readers_run, readers_start)
    if not (workdir / "read_back").exists():
        raise AssertionError(
            f"the shared run's readers did not finish:\n{result.stdout[-5000:]}\n"
            f"{result.stderr[-2000:]}"
        )
    values = torch.load(workdir / "read_back", weights_only=True)
    values["notebook"] = nbformat.read(workdir / "executed.ipynb", as_version=4)
    values["files"] = {function.__name__: workdir / function.__name__ for function, *_ in also}
    values["nbval"], values["kernel_anon_peak"] = result, result.kernel_anon_peak
    readers_cell = f"Cell {sum(cell.cell_type == 'code' for cell in notebook.cells) - 1}"
    values["outcomes"] = outcomes(result, report)
    values["outcomes"].pop(readers_cell)
    return values


# Prompts that once stopped a cell (tests/test_any_prompt.py says which), each run whole.
PROMPTS = {
    # the tie: in bfloat16 the embedded model's two best first tokens share one logit
    "empty": ("", {"LLAMA3_DTYPE": "bfloat16"}),
    "one character": ("x", {"LLAMA3_DTYPE": "float32"}),
    # … and past 64 tokens, where the batch of prompts leaves the reader's out
    "every kind": (
        "<|eot_id|> например, столица Федерации 日本語の文章 🦙🦙"
        + " and then a few plain words, to make it longer," * 4
        + "\n\nline two\r\n\t",
        {"LLAMA3_DTYPE": "float32"},
    ),
}


def own_pass(report: Path) -> dict:
    """nbval on the notebook, no setting given, as `pytest llama3-from-scratch.ipynb` runs it
    and with a reader's memory (`nbval`'s `as_readers_run`): each cell's outcome
    ("outcomes", as `outcomes` reads them) and its kernel's peak RssAnon ("kernel_anon_peak")."""
    result = nbval({}, junit=report, as_readers_run=True)
    return {"outcomes": outcomes(result, report), "kernel_anon_peak": result.kernel_anon_peak}


def outcomes(result: subprocess.CompletedProcess, report: Path) -> dict[str, str | None]:
    """nbval's JUnit report read: each cell's failure ("Cell N": None where it passed)."""
    if not report.exists():
        said = f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
        raise AssertionError(f"nbval wrote no report:\n{said}")
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        problems = [e for e in case if e.tag in ("failure", "error", "skipped")]
        found[case.get("name")] = (
            "\n".join(f"{e.tag}: {e.get('message', '')}\n{e.text or ''}" for e in problems) or None
        )
    return found


def run_with_prompt(prompt: str, settings: dict[str, str]):
    """The whole notebook on another prompt; the executed notebook (nbclient)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    settings = {**ONE_THREAD, "LLAMA3_DEVICE": "cpu", **settings, "LLAMA3_PROMPT": prompt}
    run_notebook.execute(notebook, settings, timeout=600)
    return notebook


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def embedded(scratch: Path) -> dict:
    """The notebook on the embedded checkpoint in float32, the configuration most tests read:
    its tensors, and in the same kernel what the test files ask of it
    (`notebook_values.read_in_shared_run`: its tokenizer on the parity strings, its
    generations, the learning section's gradients, perplexities and LoRA …) and the parity
    tests' long prompt and bfloat16 pass through its `forward`; the checkpoint folder before
    and after. nbval compares it with the stored outputs under `embedded_configuration()`'s
    kernels."""
    before = snapshot(EMBEDDED_CHECKPOINT)
    also = [*SHARED_RUN_READERS.get("embedded", []), *parity_runs.THROUGH_FORWARD]
    settings = environment(embedded_configuration())
    # where it is also nbval's own pass, with a reader's memory (SharedRuns.own_pass)
    run = nbval_and_read(scratch / "embedded", settings, also, own_pass_is_embedded())
    run["folder_before"], run["folder_after"] = before, snapshot(EMBEDDED_CHECKPOINT)
    return run


class SharedRuns:
    """Whole executions by name, each started once and run AT_ONCE at a time."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(AT_ONCE, thread_name_prefix="notebook")
        self.futures: dict[str, Future] = {}
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()
        self.scratch = tempfile.TemporaryDirectory(prefix="notebook-runs-")
        self.parity = None  # parity_runs.Runs, made at first use

    def start(self, name: str, function, *arguments) -> Future:
        with self.lock:
            if name not in self.futures:
                self.futures[name] = self.pool.submit(self._timed, name, function, *arguments)
            return self.futures[name]

    def result(self, name: str, function, *arguments):
        return self.start(name, function, *arguments).result()

    def _timed(self, name, function, *arguments):
        started = time.perf_counter()
        try:
            return function(*arguments)
        finally:
            self.seconds[name] = time.perf_counter() - started

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.scratch.cleanup()

    # The shared executions, by the fixture that reads them (tests/conftest.py starts those
    # that the session's tests read as soon as it knows them).
    def own_pass(self) -> Future:
        """nbval on the notebook as `pytest llama3-from-scratch.ipynb` runs it here (this
        machine's own kernels, the `auto` dtype), its memory a reader's (`own_pass`). Where
        that is the embedded run (`own_pass_is_embedded`), the embedded run, which then runs
        with a reader's memory too, sampled until its readers' cell."""
        if own_pass_is_embedded():
            return self.embedded_run()
        return self.start("own nbval pass", own_pass, Path(self.scratch.name) / "own.xml")

    def own_nbval_pass(self) -> Future:
        """A Future of the own pass's {"Cell N": None where it passed, else what nbval said}."""
        return self.derived("own nbval pass: outcomes", self.own_pass(), "outcomes")

    def own_pass_memory(self) -> Future:
        """A Future of the own pass's kernel's peak RssAnon, in bytes (None: not sampled)."""
        return self.derived("own nbval pass: memory", self.own_pass(), "kernel_anon_peak")

    def derived(self, name: str, whole: Future, key: str) -> Future:
        with self.lock:
            if name not in self.futures:
                self.futures[name] = mapped(whole, key)
            return self.futures[name]

    def embedded_run(self):
        return self.start("embedded", embedded, Path(self.scratch.name))

    def reexecutions(self) -> dict[tuple[str, str], Future]:
        """nbval under every configuration this machine runs; the float32 one that the
        embedded run is gives its nbval result."""
        futures = {}
        for configuration in configurations():
            if configuration == embedded_configuration():
                futures[configuration] = self.embedded_run()
            else:
                name = "stored outputs " + " ".join(configuration)
                futures[configuration] = self.start(name, nbval, environment(configuration))
        return futures

    def parity_runs(self) -> parity_runs.Runs:
        """The parity tests' runs (tests/support/parity_runs.py), their checkpoints written once."""
        with self.lock:
            if self.parity is None:
                root = Path(self.scratch.name)
                checkpoints = parity_runs.make_checkpoints(root / "checkpoints")
                self.parity = parity_runs.Runs(checkpoints, root / "runs", self)
        return self.parity

    def runs(self) -> parity_runs.Runs:
        """The parity tests' runs, every one started."""
        runs = self.parity_runs()
        runs.start()
        return runs

    def any_prompt_runs(self) -> dict[str, Future]:
        return {
            name: self.start(f"prompt {name}", run_with_prompt, *case)
            for name, case in PROMPTS.items()
        }


SHARED = SharedRuns()

# The shared runs a test file declares for itself (`declared`), by name.
DECLARED: dict[str, Callable[[], object]] = {}


def declared(function: Callable[[], object]):
    """A test file's own shared run: `function()` (no arguments: it writes what it needs under
    `SHARED.scratch`) starts with the others as soon as the session's tests are known
    (tests/conftest.py), on a worker of their pool; the tests that read it, through the
    session fixture of the function's name returned here, go last with theirs."""
    DECLARED[function.__name__] = function

    def fixture():
        return SHARED.start(function.__name__, function).result()

    fixture.__doc__ = function.__doc__
    return pytest.fixture(scope="session", name=function.__name__)(fixture)


def mapped(future: Future, key: str) -> Future:
    """A Future of `future`'s result[key] (or its exception), occupying no worker."""
    part = Future()

    def done(whole: Future) -> None:
        if whole.exception() is not None:
            part.set_exception(whole.exception())
        else:
            part.set_result(whole.result()[key])

    future.add_done_callback(done)
    return part


def summary(executions: list[tuple[str, float, float]]) -> str:
    """The line `make test` ends with: how many times it executed the notebook in a kernel
    (Run All, whole or stopped at a failing setup cell)."""
    total = sum(seconds for _, seconds, _ in executions)
    return (
        f"the notebook was executed {len(executions)} time{'s' * (len(executions) != 1)} in "
        f"kernels: {total:.0f} s of executions, several at once where they could be"
    )
