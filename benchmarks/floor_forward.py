"""The floor and the baseline for benchmarks/scale.py: one plain forward pass, nothing else.

    python -m benchmarks.floor_forward CHECKPOINT_DIR [--eager] [--dtype float32|bfloat16]
                                       [--device cpu|cuda] [--logits FILE]

Reads Meta's layout, runs the canonical prompt through every layer once, all heads
batched, and prints the predicted token id — the least work any walkthrough can do.
By default the weights are memory-mapped and each is converted to the compute dtype as
it is used (what the notebook does); with --eager the whole file is first loaded into
memory without mmap, the way most walkthroughs do it.

This is a yardstick for time and memory, not part of the project's math: the notebook
is the implementation, and the parity tests check it. The yardstick is checked too: on the
embedded checkpoint its logits (--logits saves them) equal the notebook's (tests/test_parity.py,
which runs this script as a reader would).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import tokenizer_setup
from plumbing import checkpoints
from plumbing.run_settings import DEFAULT_PROMPT


def floor_logits(
    checkpoint: Path, dtype: torch.dtype, device: torch.device, eager: bool = False
) -> torch.Tensor:
    """The last position's logits for the canonical prompt, by one plain forward pass."""
    opened = checkpoints.open_checkpoint(checkpoint)
    params = opened.params  # n_kv_heads filled in
    weights = torch.load(
        checkpoint / "consolidated.00.pth", map_location="cpu", mmap=not eager, weights_only=True
    )
    tokenizer = tokenizer_setup.load_tokenizer(opened.tokenizer_source)
    tokens = [tokenizer.encode_single_token("<|begin_of_text|>"), *tokenizer.encode(DEFAULT_PROMPT)]

    dim, n_heads = params["dim"], params["n_heads"]
    n_kv_heads = params["n_kv_heads"]
    head_dim, group = params["head_dim"], n_heads // n_kv_heads
    eps, n = params["norm_eps"], len(tokens)

    def w(name):
        return weights[name].to(device=device, dtype=dtype)

    def norm(x, name):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(dtype) * w(name)

    freqs = 1.0 / params["rope_theta"] ** (
        torch.arange(0, head_dim, 2, device=device).float() / head_dim
    )
    angles = torch.outer(torch.arange(n, device=device).float(), freqs)
    cos, sin = angles.cos(), angles.sin()

    def rope(x):
        pairs = x.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).to(dtype)

    mask = torch.full((n, n), float("-inf"), device=device, dtype=dtype).triu(1)
    h = weights["tok_embeddings.weight"][torch.tensor(tokens)].to(device=device, dtype=dtype)
    for layer in range(params["n_layers"]):
        p = f"layers.{layer}."
        x = norm(h, p + "attention_norm.weight")
        q = rope((x @ w(p + "attention.wq.weight").T).view(n, n_heads, head_dim).transpose(0, 1))
        k = rope(
            (x @ w(p + "attention.wk.weight").T).view(n, n_kv_heads, head_dim).transpose(0, 1)
        ).repeat_interleave(group, 0)
        v = (
            (x @ w(p + "attention.wv.weight").T)
            .view(n, n_kv_heads, head_dim)
            .transpose(0, 1)
            .repeat_interleave(group, 0)
        )
        attention = (
            torch.softmax((q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask).float(), -1).to(
                dtype
            )
            @ v
        )
        h = h + attention.transpose(0, 1).reshape(n, dim) @ w(p + "attention.wo.weight").T
        x = norm(h, p + "ffn_norm.weight")
        h = (
            h
            + (
                torch.nn.functional.silu(x @ w(p + "feed_forward.w1.weight").T)
                * (x @ w(p + "feed_forward.w3.weight").T)
            )
            @ w(p + "feed_forward.w2.weight").T
        )
    last = norm(h, "norm.weight")[-1]
    output = weights["output.weight" if "output.weight" in weights else "tok_embeddings.weight"]
    return torch.cat([last @ rows.to(device=device, dtype=dtype).T for rows in output.split(16384)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument(
        "--eager", action="store_true", help="load everything into memory first (no mmap)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--logits", type=Path, help="save the logits here (torch.save)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_grad_enabled(False)
    logits = floor_logits(
        args.checkpoint, getattr(torch, args.dtype), torch.device(args.device), args.eager
    )
    print(
        f"next token id: {int(logits.argmax())}  ({time.perf_counter() - started:.1f} s in-process)"
    )
    if args.logits:
        torch.save(logits.float().cpu(), args.logits)


if __name__ == "__main__":
    main()
