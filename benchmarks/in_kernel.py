"""What the benchmarks run inside the notebook's kernel, after its last cell, on its own objects.

`generation.py` and `compiled_decode.py` execute the notebook unchanged, then call one of
these functions in the same kernel with the notebook's globals, `nb`, and a file for the
figures: the notebook's own `generate` (and through it `forward`) is what is timed.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
import torch._dynamo as dynamo

LAYER_MATRICES = [
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w3",
    "feed_forward.w2",
]


def clock(nb: dict, work) -> float:
    """Seconds `work()` takes, waiting for a GPU to finish."""
    if nb["device"].type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    work()
    if nb["device"].type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def prompt_tokens(nb: dict) -> list[int]:
    return [nb["bos_id"]] + nb["tokenizer"].encode(nb["prompt"], disallowed_special=())


def decode_timing(nb: dict, repeats: int, decode: int, compare: list[int], path: str) -> None:
    """Prefill, one decode step against its floor, and tokens/s with and without the cache."""
    weight, generate = nb["weight"], nb["generate"]
    device, dtype = nb["device"], nb["compute_dtype"]
    sizes = (nb["dim"], nb["n_heads"] * nb["head_dim"], nb["ffn_hidden"])
    vectors = {size: torch.randn(1, size, device=device, dtype=dtype) for size in sizes}

    def floor_step():  # one token through every weight matrix, nothing else
        for layer in range(nb["n_layers"]):
            for name in LAYER_MATRICES:
                matrix = weight(f"layers.{layer}.{name}.weight")
                vectors[matrix.shape[1]] @ matrix.T
        for rows in weight.in_row_blocks(nb["output_name"]):
            vectors[nb["dim"]] @ rows.T

    tokens = prompt_tokens(nb)
    results = {"dtype": str(dtype).removeprefix("torch."), "prompt": len(tokens)}
    results["quantized"] = nb["settings"].quantization_note
    results["one_row"] = nb["settings"].one_row_note
    matrices = getattr(weight, "matrices", {})  # a QuantizedReader's, under LLAMA3_QUANTIZE
    results["held"] = sum(matrix.held_nbytes for matrix in matrices.values())
    generate(tokens, max_new_tokens=2, stop_at_end=False)  # warm-up
    floor_step()
    results["floor"] = min(clock(nb, floor_step) for _ in range(repeats))

    def writing(n, use_cache=True):
        return lambda: generate(tokens, max_new_tokens=n, use_cache=use_cache, stop_at_end=False)

    one = min(clock(nb, writing(1)) for _ in range(repeats))
    many = min(clock(nb, writing(decode)) for _ in range(repeats))
    results["prefill"], results["step"] = one, (many - one) / (decode - 1)
    for n in compare:
        for use_cache in (True, False):
            seconds = clock(nb, writing(n, use_cache))
            results[f"{n} {'with' if use_cache else 'without'}"] = n / seconds
    with open(path, "w") as file:
        json.dump(results, file)


def compiled_decode(nb: dict, decode: int, modes: list[str], path: str) -> None:
    """A decode step eager, then with the notebook's `forward` under torch.compile, per mode."""
    tokens, generate = prompt_tokens(nb), nb["generate"]

    def step_seconds():
        def writing(n):
            return lambda: generate(tokens, max_new_tokens=n, stop_at_end=False)

        one = statistics.median(clock(nb, writing(1)) for _ in range(3))
        many = statistics.median(clock(nb, writing(decode)) for _ in range(3))
        return (many - one) / (decode - 1)

    eager_forward = nb["forward"]
    expected = generate(tokens, max_new_tokens=decode, stop_at_end=False)
    results = {"dtype": str(nb["compute_dtype"]).removeprefix("torch."), "eager": step_seconds()}
    for mode in modes:
        dynamo.reset()
        dynamo.utils.counters.clear()
        nb["forward"] = torch.compile(eager_forward, mode=mode, dynamic=True)
        try:
            started = time.perf_counter()
            same = generate(tokens, max_new_tokens=decode, stop_at_end=False) == expected
            first_call = time.perf_counter() - started
            graphs = int(dynamo.utils.counters["stats"]["unique_graphs"])
            results[mode] = {
                "step": step_seconds(),
                "first_call": first_call,
                "same_tokens": same,
                "graphs": graphs,
            }
        except Exception as error:  # report it, keep going with the other modes
            results[mode] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        finally:
            nb["forward"] = eager_forward
    with open(path, "w") as file:
        json.dump(results, file)


BATCH_TEXTS = [
    "the sun rises",
    "once upon a time",
    "two plus three is",
    "the capital of france is",
    "the sky is blue on a clear",
]


def batch_steps(nb: dict, prompts: list[list[int]], steps: int) -> tuple[float, list[float]]:
    """The prefill of `prompts` as one batch, then `steps` greedy decode steps: their seconds."""
    forward_batch = nb["forward_batch"]
    rows, n_padding = nb["left_padded"](prompts)
    columns = rows.shape[1]
    cache = nb["KVCache"](columns + steps, prompts=len(prompts))
    logits = []
    prefill = clock(nb, lambda: logits.append(forward_batch(rows, n_padding, cache=cache)))
    seconds = []
    for step in range(steps):
        next_tokens = logits[-1].argmax(dim=-1)[:, None]  # [batch × 1]

        def decode(next_tokens=next_tokens, start=columns + step):
            logits.append(forward_batch(next_tokens, n_padding, start, cache))

        seconds.append(clock(nb, decode))
    return prefill, seconds


def batch_timing(nb: dict, batch_sizes: list[int], steps: int, repeats: int, path: str) -> None:
    """Decode steps of the notebook's batch of prompts (`left_padded`, `KVCache`,
    `forward_batch`: what `generate_batch` runs each step) at each batch size, and one product
    of the first feed-forward matrix at 1 and at 8 rows."""
    tokenizer, bos_id, device = nb["tokenizer"], nb["bos_id"], nb["device"]
    results = {"dtype": str(nb["compute_dtype"]).removeprefix("torch.")}
    results["quantized"] = nb["settings"].quantization_note
    for size in batch_sizes:
        texts = [BATCH_TEXTS[i % len(BATCH_TEXTS)] for i in range(size)]
        prompts = [[bos_id] + tokenizer.encode(text, disallowed_special=()) for text in texts]
        prefill, seconds = batch_steps(nb, prompts, steps)
        results[str(size)] = {
            "prefill": prefill,
            "prefill_rows": size * max(len(tokens) for tokens in prompts),
            "step": statistics.median(seconds[1:] or seconds),  # the first one warms up
        }
    w1 = nb["weight"]("layers.0.feed_forward.w1.weight")
    for rows in (1, 8):
        x = torch.randn(rows, nb["dim"], device=device, dtype=nb["compute_dtype"])
        x @ w1.T  # warm-up
        seconds = [clock(nb, lambda x=x: x @ w1.T) for _ in range(repeats)]
        results[f"product {rows} rows"] = min(seconds)
    results["product shape"] = f"[rows × {nb['dim']}] · [{nb['dim']} × {nb['ffn_hidden']}]"
    with open(path, "w") as file:
        json.dump(results, file)
