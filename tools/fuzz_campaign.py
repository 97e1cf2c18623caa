"""The long fuzzing campaign: thousands of mutated GGUF files (testbeds/fuzz.py), in batches,
each batch a fresh process under a 3 GB address-space limit.

    python -m tools.fuzz_campaign [--cases 5000] [--batch 500] [--seed 1000] [--format gguf …]

Prints one line per batch and the totals: cases, failures (each with the seed that replays
it: python -m testbeds.fuzz --format FORMAT --replay SEED), for each format of
testbeds.fuzz.FORMATS. The in-suite test (tests/test_fuzz.py) runs seeds 0 … 199; the
campaign starts past them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from plumbing import REPO_DIR
from testbeds.fuzz import FORMATS, limited


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--format", nargs="*", default=FORMATS, choices=FORMATS)
    args = parser.parse_args()
    failed = 0
    for kind in args.format:
        failed += campaign(kind, args.cases, args.batch, args.seed)
    return 1 if failed else 0


def campaign(kind: str, n_cases: int, batch: int, seed: int) -> int:
    """One format's cases; how many failed."""
    failures, cases, started = [], 0, time.perf_counter()
    for first in range(seed, seed + n_cases, batch):
        count = min(batch, seed + n_cases - first)
        batch_started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "testbeds.fuzz", "--format", kind]
            + ["--cases", str(count), "--seed", str(first)],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            preexec_fn=limited,
        )
        if not result.stdout.strip():
            print(f"{kind}, seeds {first}…: the batch stopped:\n{result.stderr[-2000:]}")
            return 1
        report = json.loads(result.stdout.strip().splitlines()[-1])
        cases += report["cases"]
        failures += report["failures"]
        seconds = time.perf_counter() - batch_started
        found = len(report["failures"])
        print(f"{kind}, seeds {first}–{first + count - 1}: {found} failures, {seconds:.0f} s")
    for failure in failures:
        print(f"  seed {failure['seed']} ({failure['mutation']}): {failure['error']}")
    print(
        f"{kind}: {cases:,} cases in {time.perf_counter() - started:.0f} s: {len(failures)} "
        "failures (tracebacks, cases past 20 s, or allocations past 3 GB)"
    )
    return len(failures)


if __name__ == "__main__":
    sys.exit(main())
