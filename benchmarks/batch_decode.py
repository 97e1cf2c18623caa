"""Decoding a batch of prompts at once: tokens/s at batch sizes 1 to 16, beside the time per step.

    python -m benchmarks.batch_decode [--models embedded,8b] [--formats float32,bfloat16,int8]
                                      [--formats-8b float32,bfloat16,int8]
                                      [--sizes 1,2,4,8,16] [--steps 5]

Executes the notebook headless on each checkpoint (demos skipped on the 8B: the random one
benchmarks/scale.py makes, in Hugging Face's layout under build/checkpoints/8b-hf), in each
format (LLAMA3_DTYPE, or LLAMA3_QUANTIZE for int8 and int4), then in the same kernel
benchmarks/kernel_figures.batch_timing: for each batch size, short prompts of different lengths,
left-padded, one prefill, then --steps decode steps through the notebook's own
`forward_batch` and `KVCache` (what `generate_batch` runs each step); a step is the median
of all but the first. tokens/s = batch size ÷ step. Also one product of the first
feed-forward matrix at 1 and at 8 rows: a decode step is mostly such products, so their
ratio is about the most a batch of 8 can gain with this machine's kernels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import DATA, checkpoint_for, header, kernel_figures

QUANTIZED = {"int8", "int4"}


def duration(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,8b")
    parser.add_argument("--formats", default="float32,bfloat16,int8")
    parser.add_argument("--formats-8b", default="float32,bfloat16,int8")
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    print(header(device="cpu"))
    print(f"batch sizes {sizes}; a step: the median of {args.steps - 1} decode steps\n", flush=True)
    table, products = [], []
    for name in args.models.split(","):
        folder = checkpoint_for("embedded" if name == "embedded" else "8b-hf", args.data)
        formats = args.formats if name == "embedded" else args.formats_8b
        for form in formats.split(","):
            settings = {"LLAMA3_CKPT": str(folder), "LLAMA3_DEVICE": "cpu"}
            if form in QUANTIZED:
                settings |= {"LLAMA3_DTYPE": "auto", "LLAMA3_QUANTIZE": form}
            else:
                settings |= {"LLAMA3_DTYPE": form, "LLAMA3_QUANTIZE": "none"}
            if name != "embedded":
                settings["LLAMA3_EXTRAS"] = "0"
            r = kernel_figures(settings, "batch_timing", sizes, args.steps, args.repeats)
            one = 1 / r[str(sizes[0])]["step"] * sizes[0]
            label = f"{form} (compute dtype {r['dtype']})" if form in QUANTIZED else form
            for size in sizes:
                figures = r[str(size)]
                rate = size / figures["step"]
                table.append(
                    f"| {name} | {label} | {size} | {figures['step'] * 1e3:.1f} ms | "
                    f"{rate:.1f} | {rate / one:.2f}× | {figures['prefill']:.2f} s "
                    f"({figures['prefill_rows']} rows) |"
                )
                print(table[-1], flush=True)
            one_row, eight_rows = r["product 1 rows"], r["product 8 rows"]
            products.append(
                f"| {name} | {label} | {r['product shape']} | {duration(one_row)} | "
                f"{duration(eight_rows)} | {8 * one_row / eight_rows:.2f}× |"
            )
            print(products[-1], flush=True)
    print("\n| checkpoint | weights | batch | decode step | tokens/s | ÷ batch 1 | prefill |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))
    print("\n| checkpoint | weights | one product | 1 row | 8 rows | rows/s gain at 8 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(products))
    return 0


if __name__ == "__main__":
    sys.exit(main())
