"""WeightReader hands out each weight converted; reused buffers never change a tensor someone
holds."""

from __future__ import annotations

import contextlib

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


def squares_after_products(weight, x):
    # x @ W.T through four matrices, then the output matrix in row blocks: a training step's
    # products, each of which autograd saves its W for
    for name in NAMES:
        x = torch.tanh(x @ weight(name).T)
    return (
        torch.cat([x @ rows.T for rows in weight.in_row_blocks("output.weight")], -1).square().sum()
    )


def gradient_and_buffers(read_again: bool) -> tuple[torch.Tensor, int]:
    weights, weight = reader()
    x = torch.linspace(-1, 1, 3 * weights[NAMES[0]].shape[1]).view(3, -1).requires_grad_()
    context = weight.read_again_in_backward() if read_again else contextlib.nullcontext()
    with torch.enable_grad(), context:
        squares_after_products(weight, x).backward()
    return x.grad, sum(len(buffers) for buffers in weight.buffers.values())


def test_read_again_in_backward_keeps_no_converted_copy_and_changes_no_gradient():
    # Without it, every converted W stays alive until backward(): one buffer each (4 matrices
    # and the output's 32 row blocks). With it, one buffer per size is used again and again.
    kept_gradient, kept_buffers = gradient_and_buffers(read_again=False)
    gradient, buffers = gradient_and_buffers(read_again=True)
    assert torch.equal(gradient, kept_gradient)
    assert kept_buffers == len(NAMES) + 32
    # wq's size; two full row blocks (a block is converted while the loop still holds the one
    # before); the last, shorter block
    assert buffers == 4


def test_overlay_reads_its_tensors_and_the_base_elsewhere():
    weights, base = reader()
    mine = {NAMES[0]: torch.zeros(weights[NAMES[0]].shape)}
    overlay = weight_loading.Overlay(mine, base)
    assert overlay(NAMES[0]) is mine[NAMES[0]]
    assert torch.equal(overlay(NAMES[1]), weights[NAMES[1]].float())
    assert torch.equal(overlay.rows(NAMES[0], [1, 2]), mine[NAMES[0]][[1, 2]])
    assert torch.equal(overlay.rows(NAMES[1], [1, 2]), weights[NAMES[1]][[1, 2]].float())
    assert list(overlay.in_row_blocks(NAMES[0])) == [mine[NAMES[0]]]
