"""Tokens per second of the notebook's own `generate`, with and without its KV cache.

    python -m benchmarks.generation [--models embedded,8b] [--tokens 16,128] [--device cpu]

Executes the notebook headless on each checkpoint (LLAMA3_CKPT; the 8B is the random one
benchmarks/scale.py makes in build/checkpoints), then, in the same kernel, times
`generate(prompt, max_new_tokens=N, stop_at_end=False)` with use_cache=True and False for
each N: N new tokens after the 17-token prompt, greedy, prefill included. Prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import nbformat

import checkpoint_files
from scripts.run_notebook import NOTEBOOK, execute

REPO_DIR = Path(__file__).resolve().parent.parent

TIMING = """
import json as _json
import time as _time

_tokens = [bos_id] + tokenizer.encode(prompt, disallowed_special=())
generate(_tokens, max_new_tokens=2, stop_at_end=False)  # warm-up
_timings = {}
for _n in LENGTHS:
    for _use_cache in (True, False):
        if device.type == "cuda":
            torch.cuda.synchronize()
        _started = _time.perf_counter()
        _new = generate(_tokens, max_new_tokens=_n, use_cache=_use_cache, stop_at_end=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        _timings[f"{_n} {'with' if _use_cache else 'without'}"] = len(_new) / (_time.perf_counter() - _started)
print(_json.dumps(_timings))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,8b")
    parser.add_argument("--tokens", default="16", help="comma-separated numbers of new tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data", type=Path, default=REPO_DIR / "build" / "checkpoints")
    args = parser.parse_args()
    lengths = [int(n) for n in args.tokens.split(",")]
    print(f"{datetime.date.today()}  device {args.device}, dtype {args.dtype}, {os.cpu_count()} logical CPUs; new tokens after a 17-token prompt, greedy\n")
    print("| checkpoint | new tokens | with KV cache | without cache | speed-up |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        folder = checkpoint_files.EMBEDDED_CHECKPOINT if name == "embedded" else args.data / name
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(TIMING.replace("LENGTHS", repr(lengths))))
        execute(notebook, {"LLAMA3_CKPT": str(folder), "LLAMA3_DEVICE": args.device, "LLAMA3_DTYPE": args.dtype}, timeout=7200)
        rates = json.loads(notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1])
        for n in lengths:
            with_cache, without = rates[f"{n} with"], rates[f"{n} without"]
            print(f"| {name} | {n} | {with_cache:.2f} tokens/s | {without:.2f} tokens/s | {with_cache / without:.1f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
