"""WeightReader hands out each weight converted; reused buffers never change a tensor someone
holds."""

from __future__ import annotations

import torch

from plumbing import checkpoint_files, checkpoints, weight_loading

NAMES = [f"layers.{layer}.attention.wq.weight" for layer in range(4)]


def reader(dtype=torch.float32, streaming=True):
    weights = checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_CHECKPOINT).weights
    return weights, weight_loading.WeightReader(weights, torch.device("cpu"), dtype, streaming)


def test_converted_weights_keep_their_values_while_held():
    weights, weight = reader()
    held = weight(NAMES[0])
    held_view = weight(NAMES[1]).T  # only a view survives
    later = [weight(name) for name in NAMES[2:]]
    assert torch.equal(held, weights[NAMES[0]].float())
    assert torch.equal(held_view.T, weights[NAMES[1]].float())
    for name, tensor in zip(NAMES[2:], later, strict=True):
        assert torch.equal(tensor, weights[name].float())
    pointers = {tensor.data_ptr() for tensor in [held, held_view, *later]}
    assert len(pointers) == len(NAMES)  # four tensors alive: four buffers


def test_buffers_are_reused_once_released():
    weights, weight = reader()
    for name in NAMES * 3:
        assert torch.equal(weight(name), weights[name].float())  # dropped at once
    assert sum(len(buffers) for buffers in weight.buffers.values()) == 1
    blocks = [rows.clone() for rows in weight.in_row_blocks("output.weight")]
    assert torch.equal(torch.cat(blocks), weights["output.weight"].float())


def test_no_buffers_when_nothing_is_converted():
    weights, weight = reader(dtype=torch.bfloat16)
    assert weight(NAMES[0]).data_ptr() == weights[NAMES[0]].data_ptr()  # the file's own pages
    _, kept = reader(streaming=False)
    assert kept(NAMES[0]) is kept(NAMES[0])
    assert not weight.buffers and not kept.buffers


def test_reading_swaps_the_reader_for_a_block_only():
    # the notebook's `with weights_from(copy):` and `with weights_quantized(...)`: no global
    first = {"w": torch.ones(2, 2)}
    second = {"w": torch.zeros(2, 2)}
    cpu = torch.device("cpu")
    weight = weight_loading.Weights(weight_loading.WeightReader(first, cpu, torch.float32, True))
    with weight.reading(weight_loading.WeightReader(second, cpu, torch.float32, True)):
        assert torch.equal(weight("w"), second["w"])
        assert weight.dtype == torch.float32  # the current reader's attributes
    assert torch.equal(weight("w"), first["w"])
    try:
        with weight.reading(weight_loading.WeightReader(second, cpu, torch.float32, True)):
            raise KeyError("a cell that fails inside the block")
    except KeyError:
        pass
    assert torch.equal(weight("w"), first["w"])  # back, even after an error
