"""Long prompts: seconds and peak memory of a prefill, keys in blocks against all at once and
against PyTorch's scaled_dot_product_attention.

    python -m benchmarks.long_context [--lengths 1024,4096,8192,32768] [--layer-lengths 4096,8192]

Executes the notebook headless on the embedded checkpoint (demos skipped; LLAMA3_DTYPE and
LLAMA3_DEVICE pass through), then in its kernel (benchmarks/kernel_figures.long_context) feeds
a prompt of each length, cut from the training corpus, through the notebook's `prefill`:
- blocks: its defaults, the keys `key_block` at a time (attention_in_blocks, the online
  softmax) and the prompt `prefill_chunk` positions at a time;
- at once: one chunk and no blocks, the `[n_heads × tokens × tokens]` scores of
  attention_pattern (skipped where those would not fit in memory);
- sdpa: the chunks, with scaled_dot_product_attention (PyTorch's flash kernel, its causal mask
  aligned lower right) in place of attention_in_blocks: the anchor.
Then one layer's attention of Llama 3 8B's shape (32 query heads, 8 key/value heads, head_dim
128) on each of --layer-lengths positions of random numbers, the queries a prefill chunk at a time
(all at once for "at once"), the same three ways
(kernel_figures.one_big_layer). Peak memory is how far the kernel's resident memory rose above
where it stood before the run (Linux's VmHWM, reset first).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import header, kernel_figures
from plumbing import model_sizes, release_facts
from plumbing import settings as plumbing_settings

WAYS = ["blocks", "at once", "sdpa"]


def cell(figures: dict) -> str:
    if "skipped" in figures:
        return f"{'skipped':>18}"
    return f"{figures['seconds']:8.2f} s {figures['peak_gb']:6.2f} GB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,4096,8192,32768")
    parser.add_argument("--layer-lengths", default="4096,8192")
    args = parser.parse_args()
    environment = plumbing_settings.read()
    settings = {"LLAMA3_EXTRAS": "0"}
    for name in ("LLAMA3_DTYPE", "LLAMA3_DEVICE"):  # these pass through
        if environment.given(name) is not None:
            settings[name] = environment.given(name)
    lengths = [int(n) for n in args.lengths.split(",")]
    prefills = kernel_figures(settings, "long_context", lengths)
    eight_b = model_sizes.filled(release_facts.LLAMA3_8B_PARAMS)
    shape = {
        "n_heads": eight_b["n_heads"],
        "n_kv_heads": eight_b["n_kv_heads"],
        "head_dim": eight_b["head_dim"],
    }
    layer_lengths = [int(n) for n in args.layer_lengths.split(",")]
    layers = {n: kernel_figures(settings, "one_big_layer", shape, n) for n in layer_lengths}
    dtype = settings.get("LLAMA3_DTYPE", "auto dtype")
    print(header("embedded checkpoint", dtype, device=settings.get("LLAMA3_DEVICE", "cpu")))
    print(f"{'prefill, positions':>20}" + "".join(f"{way:>20}" for way in WAYS))
    for length in lengths:
        print(f"{length:>20,}" + "".join(f"  {cell(prefills[f'{length} {way}'])}" for way in WAYS))
    print("\none layer's attention, Llama 3 8B's shape (random numbers):")
    for length, layer in layers.items():
        print(f"{length:>20,}" + "".join(f"  {cell(layer[way])}" for way in WAYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
