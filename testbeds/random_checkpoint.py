"""Write a random-weight checkpoint in Meta's layout, for tests and benchmarks.

    python -m testbeds.random_checkpoint OUT --preset 8b
    python -m testbeds.random_checkpoint OUT --dim 256 --n-layers 3 --n-heads 4 --n-kv-heads 1

Meta's files exactly — `consolidated.00.pth` (bf16, Meta's key names, [out, in]
weights) and `params.json` (Meta's keys) — with random numbers instead of trained
ones: the real shapes of a Llama 3 model without downloading it. Weights are drawn
from N(0, 1/in_features) so activations keep a sane scale through the layers; norm
weights are 1 + N(0, 0.1²) so that a norm weight that is not applied shows up.
Deterministic for a given --seed. Nothing is written unless OUT is new or empty. The
shapes are testbeds/presets.py's (--preset, default "small"; the size options change it).

Large presets (8B is 16 GB) are written tensor by tensor through a scratch folder
beside OUT, so memory stays near the size of the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from plumbing import model_sizes
from testbeds.presets import PRESETS, TIED_PRESETS

LARGE_BYTES = 2 * 1024**3
# params.json's keys the command line can set, over the preset's
SIZE_OPTIONS = {"dim": int, "n_layers": int, "n_heads": int, "n_kv_heads": int}
SIZE_OPTIONS |= {"vocab_size": int, "multiple_of": int, "ffn_dim_multiplier": float}
SIZE_OPTIONS |= {"rope_theta": float}


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return (1 + 0.1 * torch.randn(shape, generator=generator)).to(torch.bfloat16)
    fan_in = shape[1]  # [out × in], and a Llama 4 expert's [experts × in × out]
    if name.endswith("router_DE"):  # Llama 4's router: [dim × experts]
        fan_in = shape[0]
    if name == "tok_embeddings.weight":
        fan_in = 1  # embeddings: unit-scale rows, like a trained model's first residual stream
    return (torch.randn(shape, generator=generator) * fan_in**-0.5).to(torch.bfloat16)


def write_checkpoint(out: Path, params: dict, seed: int = 0, tied_output: bool = False) -> Path:
    """Create OUT with consolidated.00.pth and params.json; returns OUT."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    shapes = model_sizes.expected_shapes(params, tied_output=tied_output)
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
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    for key, kind in SIZE_OPTIONS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=kind, help="instead of the preset's")
    parser.add_argument(
        "--tied-output", action="store_true", help="leave out output.weight (like Llama 3.2 1B/3B)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = dict(PRESETS[args.preset])
    params |= {key: getattr(args, key) for key in SIZE_OPTIONS if getattr(args, key) is not None}
    tied = args.tied_output or args.preset in TIED_PRESETS
    write_checkpoint(args.out, params, seed=args.seed, tied_output=tied)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
