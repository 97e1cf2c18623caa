"""The stored outputs hold whatever kernels the CPU runs, in both dtypes.

The committed outputs come from one CPU run (`make notebook`). Another machine adds the
same numbers in another order: PyTorch's AVX-512 kernels take 16 floats at a time where
the AVX2 ones take 8 and the scalar ones 1, oneDNN blocks its products by the ISA it
finds, and ARM and GPUs have kernels of their own. The results differ in the last bits,
and a printed value that sits next to a rounding edge reads 4.65 on one machine and 4.64
on the next. So the notebook prints only digits that stay put, and this test re-executes
it with nbval under the kernel families PyTorch can be forced to on the machine at hand,
in float32 and in bfloat16, one thread each, all at once:

- `default`: ATen's scalar kernels (`ATEN_CPU_CAPABILITY=default`), oneDNN held to SSE4.1,
  and MKL's matrix products on its "compatible" code path (`MKL_CBWR=COMPATIBLE`);
- `avx2`: ATen's and oneDNN's AVX2 kernels;
- `avx512`: ATen's AVX-512 kernels and oneDNN's plain AVX-512 (no BF16, no AMX), where
  the CPU has AVX-512.

The scalar family stands in for machines whose kernels this CPU cannot run (ARM, say): on
an AVX2-only CPU it is the one other order there is. A CPU with AVX-512 has two vector
families besides its own native kernels, so there the scalar one is left out: on two
cores each re-execution takes about 25 s, and six would add minutes to `make test` (its time:
docs/testing.md#the-test-files).
Where `auto` is float32, the CPU's best family in float32 is pytest's own pass (MKL does
the float32 products whatever oneDNN is told), so it is not run twice.

pytest's own nbval pass (pyproject.toml) covers the machine's own kernels in its `auto`
dtype. The Chinese edition has the same code cells (tests/test_translations.py), so the
English notebook stands for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from plumbing import run_settings
from plumbing.run_notebook import NOTEBOOK, REPO_DIR

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out

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


def cpu_has(kernels: str) -> bool:
    checks = {
        "default": lambda: True,
        "avx2": torch.cpu._is_avx2_supported,
        "avx512": torch.cpu._is_avx512_supported,
    }
    return checks[kernels]()


def auto_dtype() -> str:
    dtype, _ = run_settings.choose_dtype("auto", torch.device("cpu"))
    return "bfloat16" if dtype == torch.bfloat16 else "float32"


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
    best = "avx512" if cpu_has("avx512") else "avx2"
    if kernels == best and dtype == auto_dtype() == "float32":  # float32 products: MKL's
        return (
            f"on this CPU, {kernels} in float32 is what pytest's own nbval pass of the "
            "notebook just ran"
        )
    return None


# Each re-execution runs on one thread, all of them at once: the notebook on the embedded model
# gains little from a second thread, so on two cores this takes about half the time of one
# after another. (One thread also sums in another order than two: one more machine the
# outputs must hold on.)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


KERNEL_DID_NOT_START = "Kernel died before replying to kernel_info"


def nbval(environment: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("LLAMA3_", "ATEN_CPU", "ONEDNN_", "MKL_CBWR"))
    }
    # nbval's options are pyproject.toml's addopts, the one place they are written
    command = [sys.executable, "-m", "pytest", "-q", NOTEBOOK.name]
    for _ in range(2):
        result = subprocess.run(
            command,
            cwd=REPO_DIR,
            env=env | environment,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        # Kernels started side by side can race for the same free port, and the loser dies
        # before it runs a cell (seen once in CI on 2026-12-03). That says nothing about the
        # outputs, so such a run is started once more; any failure in a cell is final.
        if KERNEL_DID_NOT_START not in result.stdout:
            break
    return result


def configurations() -> list[tuple[str, str]]:
    """(kernels, dtype) for every re-execution this machine runs."""
    return [
        (kernels, dtype)
        for kernels in KERNELS
        for dtype in DTYPES
        if reason_to_skip(kernels, dtype) is None
    ]


@pytest.fixture(scope="module")
def reexecutions() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """nbval under every configuration this machine runs, all at once."""
    chosen = configurations()
    # All at once, one thread each: with two at a time, an odd count leaves a core idle at the end.
    with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
        results = pool.map(
            lambda configuration: nbval(
                {
                    **KERNELS[configuration[0]],
                    **ONE_THREAD,
                    "LLAMA3_DEVICE": "cpu",
                    "LLAMA3_DTYPE": configuration[1],
                }
            ),
            chosen,
        )
        return dict(zip(chosen, results, strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernels", list(KERNELS))
def test_stored_outputs_hold_under_every_cpu_kernel_family(kernels, dtype, reexecutions):
    if reason := reason_to_skip(kernels, dtype):
        pytest.skip(reason)
    result = reexecutions[(kernels, dtype)]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (
        f"nbval with {kernels} kernels in {dtype}:\n"
        f"{result.stdout[-5000:]}\n{result.stderr[-2000:]}"
    )
    assert " passed" in summary and "failed" not in summary, summary


def test_the_kernels_are_the_ones_asked_for():
    # The variables take effect: a process started with them reports the capability asked
    # for. The processes start side by side: importing torch is most of their time.
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    started = {
        kernels: subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **KERNELS[kernels]},
            stdout=subprocess.PIPE,
            text=True,
        )
        for kernels in KERNELS
        if cpu_has(kernels)
    }
    for kernels, process in started.items():
        printed = process.communicate(timeout=120)[0].strip()
        assert process.returncode == 0 and printed.lower() == kernels, (
            f"ATEN_CPU_CAPABILITY={KERNELS[kernels]['ATEN_CPU_CAPABILITY']} gave {printed!r}"
        )


@pytest.mark.parametrize(
    ("families", "auto", "expected"),
    [
        (["default", "avx2"], "float32", [("default", d) for d in DTYPES] + [("avx2", "bfloat16")]),
        (
            ["default", "avx2", "avx512"],
            "bfloat16",
            [(k, d) for k in ("avx2", "avx512") for d in DTYPES],
        ),
        (
            ["default", "avx2", "avx512"],
            "float32",
            [("avx2", "float32"), ("avx2", "bfloat16"), ("avx512", "bfloat16")],
        ),
        (["default"], "float32", [("default", d) for d in DTYPES]),
    ],
)
def test_which_reexecutions_each_kind_of_cpu_runs(monkeypatch, families, auto, expected):
    # An AVX2 machine: the scalar family in both dtypes and AVX2 in the dtype pytest's own pass
    # did not use. An AVX-512 machine: both vector families, both dtypes, no scalar (its time),
    # less the one pytest's own pass ran where `auto` is float32 (no native bfloat16).
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "cpu_has", lambda kernels: kernels in families)
    monkeypatch.setattr(module, "auto_dtype", lambda: auto)
    assert configurations() == expected
