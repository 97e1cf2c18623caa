"""Wall time of a full headless notebook run (what `make run` does), start to finish.

    python -m benchmarks.notebook_runtime [--repeat 3]

Each repeat is a fresh process and a fresh kernel: interpreter start, imports, the
tokenizer, every cell, writing the executed copy. LLAMA3_CKPT / LLAMA3_DEVICE /
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
from plumbing import REPO_DIR, settings

TARGET_SECONDS = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = REPO_DIR / "build" / "benchmark-run.ipynb"
    times = []
    for run in range(1, args.repeat + 1):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "plumbing.run_notebook", "--out", str(out)],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
            return 1
        prediction = next(
            (line for line in result.stdout.splitlines() if line.startswith("decoded:")),
            "decoded: ?",
        )
        times.append(elapsed)
        print(f"run {run}: {elapsed:6.2f} s  {prediction}")
    environment = settings.read()
    checkpoint = environment.given("LLAMA3_CKPT") or "embedded checkpoint"
    print("\n" + header(checkpoint, device=environment.given("LLAMA3_DEVICE") or "cpu"))
    print(
        f"full notebook run: median {statistics.median(times):.1f} s, best {min(times):.1f} s, "
        f"worst {max(times):.1f} s over {len(times)} runs"
    )
    if not environment.given("LLAMA3_CKPT"):
        verdict = "meets" if max(times) <= TARGET_SECONDS else "MISSES"
        print(f"target ≤ {TARGET_SECONDS:.0f} s on the embedded checkpoint: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
