"""Write a random-weight checkpoint in Meta's layout, for tests and benchmarks.

    python -m tests.support.random_checkpoint OUT --preset 8b
    python -m tests.support.random_checkpoint OUT --dim 256 --n-layers 3 --n-heads 4 --n-kv-heads 1

Meta's files exactly — `consolidated.00.pth` (bf16, Meta's key names, [out, in]
weights) and `params.json` (Meta's keys) — with random numbers instead of trained
ones: the real shapes of a Llama 3 model without downloading it. Weights are drawn
from N(0, 1/in_features) so activations keep a sane scale through the layers; norm
weights are 1 + N(0, 0.1²) so that a norm weight that is not applied shows up.
Deterministic for a given --seed. Nothing is written unless OUT is new or empty.

Large presets (8B is 16 GB) are written tensor by tensor through a scratch folder
beside OUT, so memory stays near the size of the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from plumbing import checkpoint_files, release_facts

# Facts: params.json of Meta's releases (3.1 8B: the 8B's, plus use_scaled_rope).
PRESETS = {
    "8b": release_facts.LLAMA3_8B_PARAMS,
    "3.2-1b": {
        "dim": 2048,
        "n_layers": 16,
        "n_heads": 32,
        "n_kv_heads": 8,
        "vocab_size": 128256,
        "multiple_of": 256,
        "ffn_dim_multiplier": 1.5,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    },
    "3.2-3b": {
        "dim": 3072,
        "n_layers": 28,
        "n_heads": 24,
        "n_kv_heads": 8,
        "vocab_size": 128256,
        "multiple_of": 256,
        "ffn_dim_multiplier": 1.0,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    },
}
PRESETS["3.1-8b"] = {**PRESETS["8b"], "use_scaled_rope": True}
# Llama 3.2 1B and 3B tie the output matrix to the embedding table (HF's configs say so;
# whether Meta's .pth still carries an output.weight is not verified, and the notebook
# handles both), so their random stand-ins leave output.weight out.
TIED_PRESETS = {"3.2-1b", "3.2-3b"}
LARGE_BYTES = 2 * 1024**3


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return (1 + 0.1 * torch.randn(shape, generator=generator)).to(torch.bfloat16)
    fan_in = shape[1]
    if name == "tok_embeddings.weight":
        fan_in = 1  # embeddings: unit-scale rows, like a trained model's first residual stream
    return (torch.randn(shape, generator=generator) * fan_in**-0.5).to(torch.bfloat16)


def write_checkpoint(out: Path, params: dict, seed: int = 0, tied_output: bool = False) -> Path:
    """Create OUT with consolidated.00.pth and params.json; returns OUT."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    shapes = checkpoint_files.expected_shapes(params, tied_output=tied_output)
    total_bytes = 2 * sum(torch.Size(shape).numel() for shape in shapes.values())
    generator = torch.Generator().manual_seed(seed)
    if total_bytes < LARGE_BYTES:
        tensors = {name: random_tensor(name, shape, generator) for name, shape in shapes.items()}
        torch.save(tensors, out / "consolidated.00.pth")
    else:
        print(f"writing {total_bytes / 1e9:.1f} GB to {out}, one tensor at a time", flush=True)
        scratch = out.parent / f".{out.name}.scratch"
        scratch.mkdir(exist_ok=True)
        try:
            tensors = {}
            for index, (name, shape) in enumerate(shapes.items()):
                torch.save(random_tensor(name, shape, generator), scratch / f"{index}.pt")
                tensors[name] = torch.load(scratch / f"{index}.pt", mmap=True, weights_only=True)
            torch.save(tensors, out / "consolidated.00.pth")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--n-kv-heads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=128256)
    parser.add_argument("--multiple-of", type=int, default=64)
    parser.add_argument("--ffn-dim-multiplier", type=float, default=1.3)
    parser.add_argument("--rope-theta", type=float, default=500000.0)
    parser.add_argument(
        "--tied-output", action="store_true", help="leave out output.weight (like Llama 3.2 1B/3B)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.preset:
        params = dict(PRESETS[args.preset])
    else:
        params = {
            "dim": args.dim,
            "n_layers": args.n_layers,
            "n_heads": args.n_heads,
            "n_kv_heads": args.n_kv_heads,
            "vocab_size": args.vocab_size,
            "multiple_of": args.multiple_of,
            "ffn_dim_multiplier": args.ffn_dim_multiplier,
            "norm_eps": 1e-05,
            "rope_theta": args.rope_theta,
        }
    tied = args.tied_output or args.preset in TIED_PRESETS
    write_checkpoint(args.out, params, seed=args.seed, tied_output=tied)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
