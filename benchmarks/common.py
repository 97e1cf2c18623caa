"""What every benchmark shares: where it ran, the line it prints first, its checkpoints, and
the notebook's figures from its kernel.

Each benchmark prints `header(...)` first: the date, this machine's CPU and logical CPUs (and the
GPU's name on a CUDA device), then what the run was — the line that docs/performance.md keeps
above the table the benchmark made. `checkpoint_for` finds a checkpoint by name: `embedded`
ships; the others live under build/checkpoints, random weights with a release's shape
(testbeds/presets.py) that benchmarks/scale.py makes (`make_checkpoint`).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from plumbing import REPO_DIR, checkpoint_files
from testbeds import notebook_kernel

DATA = REPO_DIR / "build" / "checkpoints"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    """GPU 0's name, as nvidia-smi reports it ("" without one)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def header(*details: str, device: str = "cpu") -> str:
    """When and where a benchmark measured, then its own details: the line it prints first."""
    where = [f"{cpu_name()}, {os.cpu_count()} logical CPUs"]
    if device.startswith("cuda"):
        where.append(f"GPU {gpu_name() or '?'}")
    return f"{datetime.date.today()}  " + ", ".join([*where, f"device {device}", *details])


def kernel_figures(settings: dict[str, str], function: str, *arguments) -> dict:
    """Execute the notebook with these LLAMA3_* settings, then benchmarks/kernel_figures.FUNCTION
    in its kernel (testbeds/notebook_kernel.py); the figures it measured."""
    return notebook_kernel.figures(settings, "benchmarks.kernel_figures", function, *arguments)


def checkpoint_for(name: str, data: Path = DATA) -> Path:
    """The checkpoint named `name`: `embedded` (it ships), else data / name (NAME-hf: NAME's
    weights in Hugging Face's layout)."""
    if name == "embedded":
        return checkpoint_files.EMBEDDED_CHECKPOINT
    folder = Path(data) / name
    if not (folder / ("config.json" if name.endswith("-hf") else "params.json")).exists():
        raise SystemExit(
            f"{folder} is missing: python -m benchmarks.scale --models {name} makes it"
        )
    return folder
