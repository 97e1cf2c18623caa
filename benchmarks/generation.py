"""Decoding speed of the notebook's own `generate`, against a floor, with and without its KV cache.

    python -m benchmarks.generation [--models embedded,8b] [--decode 8] [--compare 16,128,512]
                                    [--device cpu] [--dtype auto]

Executes the notebook headless on each checkpoint (LLAMA3_CKPT; the 8B is the random one
benchmarks/scale.py makes in build/checkpoints), then, in the same kernel:

1. decode: `generate(prompt, max_new_tokens=N)` and `generate(prompt, max_new_tokens=1)`,
   greedy, with the cache; one decode step takes (t_N - t_1) / (N - 1): the prefill of
   the 17-token prompt cancels out. The floor is one token through every weight matrix of
   the checkpoint — the seven of every layer and the output matrix, each multiplied once
   by a single vector, vectorized, the weights read by the notebook's own `weight` reader
   (converted when the compute dtype differs from the file's, as any decode step must) —
   measured in the same kernel. Each time is the best of --repeats runs. Prints tokens/s
   and the ratio of a step to the floor.
2. compare: for each length L, `generate(prompt, max_new_tokens=L)` with use_cache=True
   and False, prefill included, as tokens/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import DATA, checkpoint_for, header, kernel_figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,8b")
    parser.add_argument(
        "--decode",
        type=int,
        default=8,
        help="N: new tokens for the decode-step measurement (at least 2)",
    )
    parser.add_argument(
        "--compare",
        default="16,128,512",
        help="comma-separated lengths for with/without the cache ('' to skip)",
    )
    parser.add_argument(
        "--compare-models",
        default="embedded",
        help="the models the with/without comparison runs on",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    lengths = [int(n) for n in args.compare.split(",") if n.strip()]
    print(header(f"LLAMA3_DTYPE={args.dtype}", device=args.device))
    print(
        f"{args.decode} new tokens after the 17-token prompt, greedy; best of {args.repeats} runs "
        "each\n",
        flush=True,
    )
    decode_rows, compare_rows = [], []
    for name in args.models.split(","):
        folder = checkpoint_for(name, args.data)
        compare = lengths if name in args.compare_models.split(",") else []
        settings = {
            "LLAMA3_CKPT": str(folder),
            "LLAMA3_DEVICE": args.device,
            "LLAMA3_DTYPE": args.dtype,
        }
        r = kernel_figures(settings, "decode_timing", args.repeats, args.decode, compare)
        decode_rows.append(
            f"| {name} | {r['dtype']} | {r['prefill']:.2f} s | {1 / r['step']:.2f} tokens/s "
            f"({r['step'] * 1e3:.0f} ms) "
            f"| {r['floor'] * 1e3:.0f} ms | {r['step'] / r['floor']:.2f}× |"
        )
        print(decode_rows[-1], flush=True)
        for n in compare:
            with_cache, without = r[f"{n} with"], r[f"{n} without"]
            compare_rows.append(
                f"| {name} | {r['dtype']} | {n} | {with_cache:.1f} tokens/s | {without:.1f} "
                f"tokens/s | {with_cache / without:.1f}× |"
            )
            print(compare_rows[-1], flush=True)
    print(
        "\n| checkpoint | dtype | prefill + 1 token | decoding | floor: one token through every "
        "weight | step ÷ floor |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(decode_rows))
    if compare_rows:
        print(
            "\n| checkpoint | dtype | new tokens (prefill included) | with KV cache | without | "
            "speed-up |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(compare_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
