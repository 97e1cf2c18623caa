"""What the notebook keeps (issue #44): after its last cell, no `[positions × vocabulary]`
tensor (logits, log-probabilities) and no float32 copy of a vocabulary-sized matrix (a trained
copy, gradients) is still held by a name of the notebook.

The shared embedded run (float32, demos on) lists, in its kernel after the last cell, every
tensor reachable from the notebook's globals (through dicts, lists, tuples and objects'
attributes), with where it was found; the checkpoint's own memory-mapped tensors (`model`,
`checkpoint`) are the file's pages, not the notebook's, and are left out.
"""

from __future__ import annotations

import json

import pytest
import torch

from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support.notebook_values import read_in_shared_run

pytestmark = pytest.mark.slow  # reads the shared embedded run


@in_kernel
def held_tensors(nb: KernelGlobals, path: str) -> None:
    """[where, shape, dtype, bytes] of every tensor the notebook's names hold, and its
    vocabulary and width."""
    import types

    found, seen = [], set()

    def walk(value, where, depth):
        if id(value) in seen or depth > 4:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append([where, list(value.shape), str(value.dtype), value.nbytes])
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]", depth + 1)
        elif hasattr(value, "__dict__") and not isinstance(
            value, (type, types.ModuleType, types.FunctionType, types.MethodType)
        ):
            for key, item in vars(value).items():
                walk(item, f"{where}.{key}", depth + 1)

    for name in list(nb):
        if not name.startswith("_") and name not in ("model", "checkpoint", "In", "Out"):
            walk(nb[name], name, 0)
    sizes = {"vocab_size": nb["vocab_size"], "dim": nb["dim"]}
    with open(path, "w") as file:
        json.dump({"tensors": found, **sizes}, file)


read_in_shared_run("embedded", held_tensors)


@pytest.fixture(scope="module")
def held(embedded_run):
    return json.loads(embedded_run["files"]["held_tensors"].read_text())


def test_no_logits_for_every_position_are_kept(held):
    # a [positions × vocab] tensor: what perplexity, the quality table and the lens make
    kept = [t for t in held["tensors"] if len(t[1]) >= 2 and t[1][-1] == held["vocab_size"]]
    assert not kept, f"held after the last cell: {kept}"


def test_no_float32_copy_of_a_vocabulary_sized_matrix_is_kept(held):
    # the embedding's or the output matrix's [vocab × dim] in float32: a trained copy, its
    # gradients, a dequantized matrix (the file's own are bf16 and memory-mapped)
    whole = [held["vocab_size"], held["dim"]]
    kept = [t for t in held["tensors"] if t[1] == whole and t[2] == "torch.float32"]
    assert not kept, f"held after the last cell: {kept}"


def test_what_is_held_is_listed(held):
    # the walk finds what the notebook does keep, the quantized output matrices among them
    assert any(where.startswith("quantized_models[") for where, *_ in held["tensors"])
