"""What each dtype costs on this CPU: the numbers behind `auto`'s choice
(run_settings.choose_dtype).

    python -m benchmarks.cpu_dtypes [--tokens 1,17,128,512] [--repeats 5]

For the 8B's largest matrix shape, [tokens × 4096] · [4096 × 14336] (a feed-forward
product), with the weight stored in bf16 as in Meta's files, times (best of --repeats):
- bfloat16: the product in bf16, the weight used as it is stored, through oneDNN (PyTorch's
  default on the CPU);
- bfloat16, ATen: the same product with oneDNN switched off (`torch.backends.mkldnn.flags(
  enabled=False)`), so that ATen's own kernels (a matrix-vector kernel for one row) run;
- float32 kept: the product in float32 with the weight already converted (weights kept);
- float32 converted: converting the bf16 weight to float32 first, into a fresh buffer
  (`.to(torch.float32)`), then the product — what streaming used to do;
- float32 converted, buffer reused: the same, converting into one reused buffer — what
  weight_loading.WeightReader does now.
Also prints whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX) and what `auto`
picks here.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import header
from plumbing import model_sizes, run_settings
from testbeds.presets import PRESETS


def best_ms(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="1,17,128,512")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    cpu = torch.device("cpu")
    dtype, reason = run_settings.choose_dtype("auto", cpu)
    print(header(f"PyTorch {torch.__version__}"))
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{run_settings.cpu_has_native_bf16()}"
    )
    print(f"auto picks {str(dtype).removeprefix('torch.')} ({reason})\n")
    dim, hidden = (
        PRESETS["8b"]["dim"],
        model_sizes.ffn_hidden_size(PRESETS["8b"]),
    )  # 4096, 14336
    stored = torch.randn(hidden, dim).to(torch.bfloat16)  # as in the file
    kept = stored.float()
    reused = torch.empty_like(kept)
    print(
        "| tokens | bfloat16 | bfloat16, ATen | float32, weight kept | "
        "float32, converted into a fresh buffer | float32, converted into a reused buffer |"
    )
    print("|---|---|---|---|---|---|")
    for n in [int(n) for n in args.tokens.split(",")]:
        x32 = torch.randn(n, dim)
        x16 = x32.to(torch.bfloat16)
        with torch.backends.mkldnn.flags(enabled=False):
            aten = best_ms(lambda x16=x16: x16 @ stored.T, args.repeats)
        cells = [
            best_ms(lambda x16=x16: x16 @ stored.T, args.repeats),
            aten,
            best_ms(lambda x32=x32: x32 @ kept.T, args.repeats),
            best_ms(lambda x32=x32: x32 @ stored.to(torch.float32).T, args.repeats),
            best_ms(lambda x32=x32: x32 @ reused.copy_(stored).T, args.repeats),
        ]
        print(f"| {n} | " + " | ".join(f"{ms:.1f} ms" for ms in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
