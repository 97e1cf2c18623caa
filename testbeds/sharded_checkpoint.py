"""Split a one-file checkpoint into Meta's model-parallel shards, for tests.

    python -m testbeds.sharded_checkpoint SOURCE_DIR OUT_DIR --shards 8

Writes consolidated.00.pth … consolidated.NN.pth the way Meta's 70B release is split
(tensor_names.SHARD_AXIS: wq/wk/wv/w1/w3/tok_embeddings/output cut along rows,
wo/w2 along columns, norms copied into every shard) and copies params.json. Each
split axis must divide evenly, as in Meta's releases.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from plumbing import checkpoints, meta_checkpoint


def write_shards(source: Path, out: Path, n_shards: int) -> Path:
    state_dict = checkpoints.open_checkpoint(source).weights
    out.mkdir(parents=True, exist_ok=False)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n_shards)]
    for name, tensor in state_dict.items():
        axis = meta_checkpoint.shard_axis(name)
        if axis is None:
            pieces = [tensor] * n_shards
        else:
            if tensor.shape[axis] % n_shards:
                raise SystemExit(
                    f"{name}: axis {axis} of size {tensor.shape[axis]} does not split into "
                    f"{n_shards} equal shards"
                )
            pieces = tensor.chunk(n_shards, dim=axis)
        for shard, piece in zip(shards, pieces, strict=True):
            shard[name] = piece.contiguous().clone()
    for index, shard in enumerate(shards):
        torch.save(shard, out / f"consolidated.{index:02d}.pth")
    shutil.copy(source / "params.json", out / "params.json")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    write_shards(args.source, args.out, args.shards)
    print(f"wrote {args.shards} shards to {args.out}")


if __name__ == "__main__":
    main()
