"""The stored outputs hold in both dtypes that `auto` can pick on a CPU.

pytest's own nbval pass (pytest.ini) re-executes the notebook with the machine's `auto`
dtype: float32 on an AVX2 CPU, bfloat16 on one with AVX-512 BF16 or AMX. This test runs
nbval once more with the other one, so that every CI machine checks both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import run_settings

REPO_DIR = Path(__file__).resolve().parent.parent


def test_stored_outputs_pass_in_the_dtype_auto_did_not_pick():
    auto, _ = run_settings.choose_dtype("auto", torch.device("cpu"))
    other = "float32" if auto == torch.bfloat16 else "bfloat16"
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLAMA3_")}
    env.update(LLAMA3_DEVICE="cpu", LLAMA3_DTYPE=other)
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env"]
    command += ["--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "--nbval-cell-timeout", "600", "llama3-from-scratch.ipynb"]
    result = subprocess.run(command, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"nbval with LLAMA3_DTYPE={other}:\n{result.stdout[-4000:]}"
    assert " passed" in result.stdout.splitlines()[-1]
