"""The stored outputs hold whatever kernels the CPU runs, in both dtypes.

nbval re-executes the notebook under the kernel families PyTorch can be forced to on the
machine at hand, in float32 and bfloat16, one thread each, beside the rest of the suite; the
float32 one is also the run most tests read. Why, and which families each kind of CPU runs:
tests/support/shared_runs.py. pytest's own nbval pass (pyproject.toml) covers the machine's own
kernels in its `auto` dtype. The Chinese edition has the same code cells
(tests/test_translations.py), so the English notebook stands for both.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from tests.support import shared_runs
from tests.support.shared_runs import DTYPES, KERNELS, configurations, cpu_has, reason_to_skip

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out


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
    ("families", "expected"),
    [
        (["default", "avx2"], [(k, d) for k in ("default", "avx2") for d in DTYPES]),
        (["default", "avx2", "avx512"], [(k, d) for k in ("avx2", "avx512") for d in DTYPES]),
        (["default"], [("default", d) for d in DTYPES]),
    ],
)
def test_which_reexecutions_each_kind_of_cpu_runs(monkeypatch, families, expected):
    # An AVX2 machine: the scalar family and its own, both dtypes. An AVX-512 machine: both
    # vector families, both dtypes, no scalar (its time). The own family in float32 is the
    # shared run most tests read, compared with references computed on the same kernels.
    monkeypatch.setattr(shared_runs, "cpu_has", lambda kernels: kernels in families)
    assert configurations() == expected
    assert shared_runs.embedded_configuration() == (families[-1], "float32")


@pytest.mark.parametrize(
    ("native", "families", "native_bf16", "gpu", "expected"),
    [
        ("AVX2", ["default", "avx2"], False, False, True),  # most machines: one run for both
        ("AVX512", ["default", "avx2", "avx512"], False, False, True),
        ("AVX512", ["default", "avx2", "avx512"], True, False, False),  # auto is bfloat16
        ("AVX2", ["default", "avx2", "avx512"], False, False, False),  # pytest held to AVX2
        ("DEFAULT", ["default"], False, False, False),  # MKL's compatible path differs
        ("AVX2", ["default", "avx2"], False, True, False),  # auto is the GPU
    ],
)
def test_the_own_pass_is_the_embedded_run_only_where_they_are_the_same(
    monkeypatch, native, families, native_bf16, gpu, expected
):
    monkeypatch.setattr(shared_runs, "cpu_has", lambda kernels: kernels in families)
    monkeypatch.setattr(shared_runs.torch.backends.cpu, "get_cpu_capability", lambda: native)
    monkeypatch.setattr(shared_runs.run_settings, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(shared_runs.torch.cuda, "is_available", lambda: gpu)
    assert shared_runs.own_pass_is_embedded() is expected


def test_the_embedded_run_reports_every_cell_of_the_notebook(embedded_run):
    # what nbval's own pass reads from it where the two are one run
    cells = nbformat.read(shared_runs.NOTEBOOK, as_version=4).cells
    names = [f"Cell {n}" for n, _ in enumerate(c for c in cells if c.cell_type == "code")]
    assert sorted(embedded_run["outcomes"]) == sorted(names)
    assert [name for name, failure in embedded_run["outcomes"].items() if failure] == []


def test_a_mapped_future_carries_the_result_or_the_exception():
    whole, failing = shared_runs.Future(), shared_runs.Future()
    part, failed = shared_runs.mapped(whole, "outcomes"), shared_runs.mapped(failing, "x")
    whole.set_result({"outcomes": {"Cell 0": None}, "other": 1})
    failing.set_exception(AssertionError("nbval wrote no report"))
    assert part.result(timeout=1) == {"Cell 0": None}
    with pytest.raises(AssertionError, match="no report"):
        failed.result(timeout=1)
