"""Long inputs: the notebook's attention over keys a block at a time (the online softmax of
`attention_in_blocks`) and its chunked `prefill` compute what attention at once computes, and
the largest tensor a prefill makes no longer grows with the prompt.

All of it is the notebook's own code, run in the embedded model's float32 kernel
(tests/support/kernel_readers.long_inputs).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # reads the shared notebook kernel


def test_blocks_equal_attention_at_once(embedded_run):
    # every case: blocks that divide the keys and blocks that do not, a prompt's queries or a
    # cache's last few, one sequence or a batch with padding, in float32
    differences = embedded_run["long_inputs"]["blocks"]
    assert len(differences) == 12
    worst = max(differences, key=differences.get)
    assert differences[worst] <= 1e-6, f"{worst}: {differences[worst]:.2e} relative"


def test_the_model_with_tiny_blocks_and_chunks_is_the_same_model(embedded_run):
    # keys 3 at a time and a prompt fed 5 positions at a time, against one block and one chunk
    long_inputs = embedded_run["long_inputs"]
    plain, small = long_inputs["model"]["plain"], long_inputs["model"]["small"]
    assert long_inputs["n_tokens"] > 40
    for kind in ("every_position", "prefill"):
        difference = (small[kind] - plain[kind]).abs().max() / plain[kind].abs().max()
        assert difference <= 1e-5, f"{kind}: {float(difference):.2e} relative"
    assert plain["every_position"].shape[0] == long_inputs["n_tokens"]
    last = plain["every_position"][-1]  # with a cache and without, the same last position
    assert (plain["prefill"] - last).abs().max() <= 1e-5 * last.abs().max()
    assert small["generated"] == plain["generated"] and len(plain["generated"]) > 0


def test_the_largest_tensor_of_a_prefill_does_not_grow_with_the_prompt(embedded_run):
    # activations only (the weight reader's conversions are left out): in blocks, the same at
    # 512 and 1,024 tokens; with all keys at once it doubles, which this test would see
    largest = embedded_run["long_inputs"]["largest"]
    assert largest["blocks, 1024 tokens"] == largest["blocks, 512 tokens"], largest
    assert largest["no blocks, 1024 tokens"] > 1.5 * largest["no blocks, 512 tokens"], largest
    assert largest["blocks, 1024 tokens"] < largest["no blocks, 1024 tokens"], largest
