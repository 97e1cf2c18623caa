"""Long inputs: the notebook's attention over keys a block at a time (the online softmax of
`attention_in_blocks`) and its chunked `prefill` compute what attention at once computes, and
the largest tensor a prefill makes no longer grows with the prompt.

All of it is the notebook's own code, run in the embedded model's float32 kernel
(`long_inputs`, below).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support.notebook_values import read_in_shared_run

pytestmark = pytest.mark.slow  # reads the shared notebook kernel


@pytest.fixture(scope="module")
def measured(embedded_run):
    """What `long_inputs` below measured in the shared embedded run."""
    return torch.load(embedded_run["files"]["long_inputs"], weights_only=True)


def test_blocks_equal_attention_at_once(measured):
    # every case: blocks that divide the keys and blocks that do not, a prompt's queries or a
    # cache's last few, one sequence or a batch with padding, in float32
    differences = measured["blocks"]
    assert len(differences) == 12
    worst = max(differences, key=differences.get)
    assert differences[worst] <= 1e-6, f"{worst}: {differences[worst]:.2e} relative"


def test_the_model_with_tiny_blocks_and_chunks_is_the_same_model(measured):
    # keys 3 at a time and a prompt fed 5 positions at a time, against one block and one chunk
    long_inputs = measured
    plain, small = long_inputs["model"]["plain"], long_inputs["model"]["small"]
    assert long_inputs["n_tokens"] > 40
    for kind in ("every_position", "prefill"):
        difference = (small[kind] - plain[kind]).abs().max() / plain[kind].abs().max()
        assert difference <= 1e-5, f"{kind}: {float(difference):.2e} relative"
    assert plain["every_position"].shape[0] == long_inputs["n_tokens"]
    last = plain["every_position"][-1]  # with a cache and without, the same last position
    assert (plain["prefill"] - last).abs().max() <= 1e-5 * last.abs().max()
    assert small["generated"] == plain["generated"] and len(plain["generated"]) > 0


def test_the_largest_tensor_of_a_prefill_does_not_grow_with_the_prompt(measured):
    # activations only (the weight reader's conversions are left out): in blocks, the same at
    # 512 and 1,024 tokens; with all keys at once it doubles, which this test would see
    largest = measured["largest"]
    assert largest["blocks, 1024 tokens"] == largest["blocks, 512 tokens"], largest
    assert largest["no blocks, 1024 tokens"] > 1.5 * largest["no blocks, 512 tokens"], largest
    assert largest["blocks, 1024 tokens"] < largest["no blocks, 1024 tokens"], largest


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def memory_probes():
    """LargestTensor and WeightsUnrecorded, made in the kernel (their base class is torch's)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        """While open, the largest tensor any operation creates, in numbers (views of others not
        counted; nor, through `unrecorded`, the weights the reader converts): what the memory of
        a computation's activations grows with."""

        def __init__(self):
            super().__init__()
            self.numel, self.paused = 0, False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [*args, *(kwargs or {}).values()]
            held = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                new = (
                    isinstance(tensor, torch.Tensor)
                    and tensor.untyped_storage().data_ptr() not in held
                )
                if new and not self.paused:  # not a view of an input, not a weight being read
                    self.numel = max(self.numel, tensor.numel())
            return out

        @contextmanager
        def unrecorded(self):
            self.paused = True
            try:
                yield
            finally:
                self.paused = False

    class WeightsUnrecorded:
        """The notebook's weight reader, its reads left out of a LargestTensor's count: a weight
        the size of the vocabulary would hide every activation."""

        def __init__(self, reader, largest: LargestTensor):
            self.reader, self.largest = reader, largest

        def __call__(self, name: str):
            with self.largest.unrecorded():
                return self.reader(name)

        def rows(self, name: str, index):
            with self.largest.unrecorded():
                return self.reader.rows(name, index)

        def in_row_blocks(self, name: str):
            blocks = iter(self.reader.in_row_blocks(name))
            while True:
                with self.largest.unrecorded():
                    block = next(blocks, None)
                if block is None:
                    return
                yield block

    return LargestTensor, WeightsUnrecorded


@in_kernel(uses=(memory_probes,))
def long_inputs(nb: KernelGlobals, path: str) -> None:
    """The notebook's attention over keys in blocks (`attention_in_blocks`) against its
    attention at once (`attention_pattern`); its model with tiny blocks and prefill chunks
    against the same model with none; and the largest tensor a chunked prefill makes at two
    prompt lengths."""
    LargestTensor, WeightsUnrecorded = memory_probes()

    torch.manual_seed(0)
    device, n_heads, n_kv_heads = nb["device"], nb["n_heads"], nb["n_kv_heads"]
    head_dim, group = nb["head_dim"], nb["n_heads"] // nb["n_kv_heads"]
    result = {"blocks": {}}
    # (queries, keys, block): blocks that divide the keys and blocks that do not, queries that
    # are all the positions (a prompt) or the last few (with a cache), a batch with padding
    cases = [(40, 40, 8), (40, 40, 7), (40, 40, 1), (40, 40, 64), (5, 40, 16), (1, 33, 4)]
    for new, seen, block in cases:
        for batch in (None, 3):
            front = () if batch is None else (batch,)
            q = torch.randn(*front, n_heads, new, head_dim, device=device)
            k = torch.randn(*front, n_kv_heads, seen, head_dim, device=device)
            v = torch.randn(*front, n_kv_heads, seen, head_dim, device=device)
            padding = None
            if batch is not None:  # as forward_batch makes it: row b hides its first 2·b keys
                hidden = torch.arange(seen, device=device) < 2 * torch.arange(batch)[:, None]
                padding = torch.zeros(hidden.shape, device=device).masked_fill(
                    hidden, torch.finfo(torch.float32).min
                )[:, None, None, :]
            at_once = nb["attention_pattern"](q, k, padding) @ v.repeat_interleave(group, dim=-3)
            in_blocks = nb["attention_in_blocks"](q, k, v, block, padding)
            key = f"{new} queries, {seen} keys, blocks of {block}, batch {batch}"
            result["blocks"][key] = float((in_blocks - at_once).abs().max() / at_once.abs().max())
    # the whole model: keys in blocks of 3 and a prompt fed 5 positions at a time, against
    # one block and one chunk
    tokenizer, begin, forward = nb["tokenizer"], nb["begin"], nb["forward"]
    tokens = begin + tokenizer.encode(" ".join(["the sky is blue on a clear day"] * 6))
    key_block, prefill_chunk = nb["key_block"], nb["prefill_chunk"]
    runs = {}
    for name, (block, chunk) in {"plain": (10**9, 10**9), "small": (3, 5)}.items():
        nb["key_block"], nb["prefill_chunk"] = block, chunk
        try:
            cache = nb["KVCache"](len(tokens) + 8)
            runs[name] = {
                "every_position": forward(tokens, every_position=True).float().cpu(),
                "prefill": nb["prefill"](tokens, cache).float().cpu(),
                "generated": nb["generate"](tokens, max_new_tokens=8, stop_at_end=False),
            }
        finally:
            nb["key_block"], nb["prefill_chunk"] = key_block, prefill_chunk
    result["n_tokens"] = len(tokens)
    result["model"] = runs
    # memory: the largest tensor a prefill makes, at two lengths, keys in blocks of 64 and
    # chunks of 64 positions; and the same without blocks (what would grow)
    largest, reader = {}, nb["weight"]
    for name, block in {"blocks": 64, "no blocks": 10**9}.items():
        nb["key_block"], nb["prefill_chunk"] = block, 64
        try:
            for length in (512, 1024):
                long_tokens = (tokens * (length // len(tokens) + 1))[:length]
                cache = nb["KVCache"](length)  # made outside: the cache grows with the prompt
                seen = LargestTensor()
                nb["weight"] = WeightsUnrecorded(reader, seen)
                with seen:
                    nb["prefill"](long_tokens, cache)
                largest[f"{name}, {length} tokens"] = seen.numel
        finally:
            nb["key_block"], nb["prefill_chunk"], nb["weight"] = key_block, prefill_chunk, reader
    result["largest"] = largest
    torch.save(result, path)


read_in_shared_run("embedded", long_inputs)
