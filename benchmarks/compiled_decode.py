"""Decoding with the notebook's own `forward`, eager against `torch.compile` — for a GPU.

    python -m benchmarks.compiled_decode [--models embedded,8b] [--device cuda] [--decode 16]
                                         [--modes default,reduce-overhead]
                                         [--dtype auto] [--stream auto]

On a GPU a decode step is bound by launching kernels, not by reading the weights: one
token through a layer is some forty small operations, each a kernel launch of a few
microseconds that does almost no work. `torch.compile` fuses the elementwise ones
(mode "default"), and mode "reduce-overhead" also records the step as CUDA graphs, which
replay every launch at once.

Executes the notebook headless on each checkpoint, then, in the same kernel, times one
decode step of `generate` as benchmarks/generation.py does ((t_N - t_1) / (N - 1)) with
the notebook's `forward` as it is, then with `forward` replaced by
`torch.compile(forward, mode=MODE, dynamic=True)` for each mode (the first generate call
compiles; the timed ones reuse it). Reports tokens/s, and how many graphs were compiled:
the key/value cache grows by one position every step, so a graph recorded for one
length does not fit the next unless its shapes are symbolic.

Benchmarks only: the notebook never compiles anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import DATA, checkpoint_for, header, kernel_figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--stream", default="auto", help="LLAMA3_STREAM (auto: weights kept on a GPU)"
    )
    parser.add_argument("--decode", type=int, default=16)
    parser.add_argument("--modes", default="default,reduce-overhead")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    print(
        header(
            f"LLAMA3_DTYPE={args.dtype}",
            f"LLAMA3_STREAM={args.stream}; {args.decode} new tokens after the 17-token prompt\n",
            device=args.device,
        )
    )
    print(
        "| checkpoint | dtype | forward | decoding | first call (compiles) | graphs compiled | "
        "same tokens |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        folder = checkpoint_for(name, args.data)
        settings = {
            "LLAMA3_CKPT": str(folder),
            "LLAMA3_DEVICE": args.device,
            "LLAMA3_DTYPE": args.dtype,
            "LLAMA3_STREAM": args.stream,
        }
        r = kernel_figures(settings, "compiled_decode", args.decode, modes)
        print(
            f"| {name} | {r['dtype']} | eager | {1 / r['eager']:.1f} tokens/s | — | — | — |",
            flush=True,
        )
        for mode in modes:
            m = r[mode]
            if "error" in m:
                print(
                    f"| {name} | {r['dtype']} | compiled, {mode} | failed: {m['error']} | | | |",
                    flush=True,
                )
                continue
            print(
                f"| {name} | {r['dtype']} | compiled, {mode} | {1 / m['step']:.1f} tokens/s | "
                f"{m['first_call']:.1f} s | {m['graphs']} | {m['same_tokens']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
