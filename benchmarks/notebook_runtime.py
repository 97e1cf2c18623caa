"""Wall time and peak anonymous memory of a full headless notebook run (what `make run` does).

    python -m benchmarks.notebook_runtime [--repeat 3]

Each repeat is a fresh process and a fresh kernel: interpreter start, imports, the
tokenizer, every cell, writing the executed copy. Its memory is the peak RssAnon of the run's
process tree, the kernel included, sampled every 20 ms (the checkpoint's mapped pages and the
libraries are not anonymous, so they do not count). LLAMA3_CKPT / LLAMA3_DEVICE /
LLAMA3_DTYPE pass through (default: the embedded checkpoint on this machine's CPU).
Prints one line per run and a summary with the date and CPU.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from benchmarks.common import header
from benchmarks.kernel_figures import AnonymousPeak
from plumbing import REPO_DIR, settings
from testbeds import memory

TARGET_SECONDS = 30.0
TARGET_ANON_GB = memory.DEFAULT_RUN_TARGET_BYTES / 1e9  # the default run's peak (issue #44)


def run_once(out, environment: dict[str, str] | None = None):
    """`make run`'s runner in a fresh process: seconds, peak anonymous GB, its result."""
    started = time.perf_counter()
    with AnonymousPeak() as peak:
        result = subprocess.run(
            [sys.executable, "-m", "plumbing.run_notebook", "--out", str(out)],
            cwd=REPO_DIR,
            env=environment,
            capture_output=True,
            text=True,
        )
    return time.perf_counter() - started, (peak.most - peak.start) / 1e9, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = REPO_DIR / "build" / "benchmark-run.ipynb"
    times, peaks = [], []
    for run in range(1, args.repeat + 1):
        elapsed, peak_gb, result = run_once(out)
        peaks.append(peak_gb)
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
            return 1
        prediction = next(
            (line for line in result.stdout.splitlines() if line.startswith("decoded:")),
            "decoded: ?",
        )
        times.append(elapsed)
        print(f"run {run}: {elapsed:6.2f} s  {peaks[-1]:5.2f} GB anonymous  {prediction}")
    environment = settings.read()
    checkpoint = environment.given("LLAMA3_CKPT") or "embedded checkpoint"
    print("\n" + header(checkpoint, device=environment.given("LLAMA3_DEVICE") or "cpu"))
    print(
        f"full notebook run: median {statistics.median(times):.1f} s, best {min(times):.1f} s, "
        f"worst {max(times):.1f} s over {len(times)} runs; peak anonymous memory "
        f"{max(peaks):.2f} GB"
    )
    if not environment.given("LLAMA3_CKPT"):
        verdict = "meets" if max(times) <= TARGET_SECONDS else "MISSES"
        print(f"target ≤ {TARGET_SECONDS:.0f} s on the embedded checkpoint: {verdict}")
        verdict = "meets" if max(peaks) <= TARGET_ANON_GB else "MISSES"
        print(f"target ≤ {TARGET_ANON_GB:.1f} GB anonymous on the embedded checkpoint: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
