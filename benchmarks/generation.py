"""Tokens per second of the notebook's own `generate`, with and without its KV cache.

    python benchmarks/generation.py [--models embedded,8b] [--tokens 16] [--device cpu]

Executes the notebook headless on each checkpoint (LLAMA3_CKPT; the 8B is the random one
benchmarks/scale.py makes in build/checkpoints), then, in the same kernel, times
`generate(prompt, max_new_tokens=N, stop_at_end=False)` with use_cache=True and False:
N new tokens after the 17-token prompt, greedy, prefill included. Prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "tests"))
import checkpoint_setup  # noqa: E402
from notebook_run import run_notebook  # noqa: E402

TIMING = """
import time as _time
_tokens = [bos_id] + tokenizer.encode(prompt, disallowed_special=())
generate(_tokens, max_new_tokens=2, stop_at_end=False)  # warm-up
generation_timings = {}
for _use_cache in (True, False):
    if device.type == "cuda":
        torch.cuda.synchronize()
    _started = _time.perf_counter()
    _new = generate(_tokens, max_new_tokens=N_TOKENS, use_cache=_use_cache, stop_at_end=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    generation_timings["with" if _use_cache else "without"] = (len(_new), _time.perf_counter() - _started)
import json as _json
print(_json.dumps(generation_timings))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,8b")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=REPO_DIR / "build" / "checkpoints")
    args = parser.parse_args()
    print(f"{datetime.date.today()}  device {args.device}, {os.cpu_count()} logical CPUs; {args.tokens} new tokens after a 17-token prompt, greedy\n")
    print("| checkpoint | with KV cache | without cache | speed-up |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        folder = checkpoint_setup.EMBEDDED_CHECKPOINT if name == "embedded" else args.data / name
        with tempfile.TemporaryDirectory() as scratch:
            code = TIMING.replace("N_TOKENS", str(args.tokens))
            env = {"LLAMA3_CKPT": str(folder), "LLAMA3_DEVICE": args.device}
            run = run_notebook(Path(scratch), env, timeout=7200, extra_code=code)
            cell = run["notebook"].cells[-2]
            timings = json.loads(cell.outputs[-1]["text"].strip().splitlines()[-1])
        (with_n, with_s), (without_n, without_s) = timings["with"], timings["without"]
        print(
            f"| {name} | {with_n / with_s:.2f} tokens/s | {without_n / without_s:.2f} tokens/s | {(with_n / with_s) / (without_n / without_s):.1f}× |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
