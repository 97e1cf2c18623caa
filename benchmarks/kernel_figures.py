"""What the benchmarks measure inside the notebook's kernel, after its last cell, on its own
objects.

The benchmarks execute the notebook unchanged (testbeds/notebook_kernel.py, which the tests use
too), then call one of these functions in the same kernel with the notebook's globals, `nb`
(testbeds/notebook_kernel.KernelGlobals), and a file for the figures, as
JSON: the notebook's own `generate` (and through it `forward`) is what is timed.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import threading
import time

import torch
import torch._dynamo as dynamo
from torch.nn.attention.bias import causal_lower_right

from plumbing import quantization
from testbeds.memory import tree_anon_bytes
from testbeds.notebook_kernel import KernelGlobals

LAYER_MATRICES = [
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w3",
    "feed_forward.w2",
]


def clock(nb: KernelGlobals, work) -> float:
    """Seconds `work()` takes, waiting for a GPU to finish."""
    if nb["device"].type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    work()
    if nb["device"].type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def prompt_tokens(nb: KernelGlobals) -> list[int]:
    return nb["begin"] + nb["tokenizer"].encode(nb["prompt"], disallowed_special=())


def decode_timing(
    nb: KernelGlobals, repeats: int, decode: int, compare: list[int], path: str
) -> None:
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
    results["held"] = sum(  # a GGUF file's Q6_K matrices: plain tensors, dequantized
        getattr(matrix, "held_nbytes", None) or matrix.untyped_storage().nbytes()
        for matrix in matrices.values()
    )
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


def compiled_decode(nb: KernelGlobals, decode: int, modes: list[str], path: str) -> None:
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


def batch_steps(
    nb: KernelGlobals, prompts: list[list[int]], steps: int
) -> tuple[float, list[float]]:
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


def batch_timing(
    nb: KernelGlobals, batch_sizes: list[int], steps: int, repeats: int, path: str
) -> None:
    """Decode steps of the notebook's batch of prompts (`left_padded`, `KVCache`,
    `forward_batch`: what `generate_batch` runs each step) at each batch size, and one product
    of the first feed-forward matrix at 1 and at 8 rows."""
    tokenizer, begin, device = nb["tokenizer"], nb["begin"], nb["device"]
    results = {"dtype": str(nb["compute_dtype"]).removeprefix("torch.")}
    results["quantized"] = nb["settings"].quantization_note
    for size in batch_sizes:
        texts = [BATCH_TEXTS[i % len(BATCH_TEXTS)] for i in range(size)]
        prompts = [begin + tokenizer.encode(text, disallowed_special=()) for text in texts]
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


def next_token_logits(nb: KernelGlobals, path: str) -> None:
    """The prompt's token ids and the logits the notebook computed for the next token."""
    with open(path, "w") as file:
        json.dump(
            {"prompt_tokens": nb["prompt_tokens"], "logits": nb["logits"].float().cpu().tolist()},
            file,
        )


def logits_and_perplexity(nb: KernelGlobals, path: str) -> None:
    """next_token_logits's figures, and the learning section's `perplexity` on its held-out
    sentences with their token ids, so that another implementation can score the same ids."""
    with open(path, "w") as file:
        json.dump(
            {
                "prompt_tokens": nb["prompt_tokens"],
                "logits": nb["logits"].float().cpu().tolist(),
                "heldout": nb["heldout"],
                "perplexity": nb["perplexity"](nb["heldout"]),
            },
            file,
        )


def resident_gb(field: str) -> float:
    """This process's VmRSS (now) or VmHWM (peak since the last reset), in GB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError(f"/proc/self/status has no {field}")


def seconds_and_peak(nb: KernelGlobals, work) -> dict:
    """Seconds `work()` takes and how far the resident memory rose above where it started (the
    peak is reset first: Linux's /proc/self/clear_refs)."""
    quantization.return_freed_memory()  # what earlier runs freed, back to the system first
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")
    before = resident_gb("VmRSS")
    seconds = clock(nb, work)
    return {"seconds": seconds, "peak_gb": resident_gb("VmHWM") - before}


def sdpa_attention(nb: KernelGlobals):
    """attention_in_blocks's arguments, through PyTorch's scaled_dot_product_attention: the
    anchor. Its CPU flash kernel needs [batch × heads × positions × head_dim] and every head's
    keys, and the queries are the last positions of the keys (a cache's), so the causal mask
    is aligned lower right."""

    def attention(q, k, v, block, padding=None):
        group = q.shape[-3] // k.shape[-3]
        k, v = (x.repeat_interleave(group, dim=-3) for x in (k, v))
        batched = q.dim() == 3
        if batched:
            q, k, v = q[None], k[None], v[None]
        mask = causal_lower_right(q.shape[-2], k.shape[-2])
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out[0] if batched else out

    return attention


def long_context(nb: KernelGlobals, lengths: list[int], path: str) -> None:
    """A prompt of each length through the notebook's `prefill`: keys in blocks and the prompt
    in chunks (its defaults); all at once (no blocks, one chunk), where the score tensors would
    fit in memory; and with scaled_dot_product_attention in place of attention_in_blocks."""
    text = " ".join(line for line in open("generators/corpus.txt").read().splitlines())
    corpus = nb["tokenizer"].encode(text)
    key_block, prefill_chunk = nb["key_block"], nb["prefill_chunk"]
    in_blocks, figures = nb["attention_in_blocks"], {}
    for length in lengths:
        tokens = nb["begin"] + (corpus * (length // len(corpus) + 1))[: length - 1]
        scores_gb = 3 * nb["n_heads"] * length * length * 4 / 1e9  # scores, softmax, weights
        ways = {"blocks": (key_block, prefill_chunk, in_blocks)}
        if scores_gb < 0.7 * available_gb():
            ways["at once"] = (10**9, 10**9, in_blocks)
        ways["sdpa"] = (0, prefill_chunk, sdpa_attention(nb))
        for way, (block, chunk, function) in ways.items():
            nb["key_block"], nb["prefill_chunk"], nb["attention_in_blocks"] = block, chunk, function
            try:
                work = functools.partial(nb["prefill"], tokens, nb["KVCache"](length))
                figures[f"{length} {way}"] = seconds_and_peak(nb, work)
            finally:
                nb["key_block"], nb["prefill_chunk"] = key_block, prefill_chunk
                nb["attention_in_blocks"] = in_blocks
            del work  # and with it the cache
        if f"{length} at once" not in figures:
            figures[f"{length} at once"] = {"skipped": f"needs ~{scores_gb:.0f} GB of scores"}
    with open(path, "w") as file:
        json.dump(figures, file)


def one_big_layer(nb: KernelGlobals, shape: dict, length: int, path: str) -> None:
    """One layer's attention of another model's shape (shape: n_heads, n_kv_heads, head_dim) on
    `length` positions of random queries, keys and values in the run's dtype, the queries a
    prefill chunk at a time as `prefill` feeds them: the notebook's attention_in_blocks; its
    attention_pattern with every query and key at once (where that fits in memory); and
    scaled_dot_product_attention."""
    torch.manual_seed(0)
    heads, kv_heads, head_dim = shape["n_heads"], shape["n_kv_heads"], shape["head_dim"]
    options = {"device": nb["device"], "dtype": nb["compute_dtype"]}
    q = torch.randn(heads, length, head_dim, **options)
    k, v = (torch.randn(kv_heads, length, head_dim, **options) for _ in range(2))
    chunk, group = nb["prefill_chunk"], heads // kv_heads
    scores_gb = 3 * heads * length * length * 4 / 1e9

    def in_chunks(attention):
        for start in range(0, length, chunk):
            end = start + chunk
            attention(q[:, start:end], k[:, :end], v[:, :end], nb["key_block"])

    ways = {
        "blocks": lambda: in_chunks(nb["attention_in_blocks"]),
        "sdpa": lambda: in_chunks(sdpa_attention(nb)),
    }
    if scores_gb < 0.7 * available_gb():
        ways["at once"] = lambda: nb["attention_pattern"](q, k) @ v.repeat_interleave(group, -3)
    # the notebook's functions read head_dim and q_heads_per_kv_head: this shape's, for the run
    saved = {name: nb[name] for name in ("head_dim", "q_heads_per_kv_head")}
    nb["head_dim"], nb["q_heads_per_kv_head"], figures = head_dim, group, {}
    try:
        for way, work in ways.items():
            figures[way] = seconds_and_peak(nb, work)
    finally:
        nb.update(saved)
    if "at once" not in ways:
        figures["at once"] = {"skipped": f"needs ~{scores_gb:.0f} GB of scores"}
    with open(path, "w") as file:
        json.dump(figures, file)


def available_gb() -> float:
    """MemAvailable, in GB."""
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return 0.0


class AnonymousPeak:
    """`with AnonymousPeak() as peak:` samples the RssAnon of this process and its children
    (tree_anon_bytes, which benchmarks/scale.py samples on a notebook's process tree)
    every 20 ms while the block runs: peak.start and peak.most, in bytes."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.start, self.most = interval, 0, 0
        self._done = threading.Event()

    def _sample(self):
        while not self._done.is_set():
            self.most = max(self.most, tree_anon_bytes(os.getpid()))
            time.sleep(self.interval)

    def __enter__(self):
        quantization.return_freed_memory()  # what earlier work freed, back to the system first
        self.start = self.most = tree_anon_bytes(os.getpid())
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.most = max(self.most, tree_anon_bytes(os.getpid()))
        return False


def conversion_buffers(reader) -> dict:
    """The float32 buffers a streaming WeightReader keeps for reuse: how many of each size (in
    MB) and their bytes in all."""
    sizes = {
        f"{nbytes / 1e6:.1f} MB": len(storages)
        for nbytes, storages in sorted(getattr(reader, "buffers", {}).items())
    }
    total = sum(n * len(s) for n, s in getattr(reader, "buffers", {}).items())
    return {"sizes": sizes, "bytes": total}


def lora_steps(nb: KernelGlobals, rank: int, steps: int, sentence: str, path: str) -> None:
    """One forward pass over a sentence's tokens (`with weights_from({}): forward(tokens,
    every_position=True)`, twice: the second is reported), then `teach([sentence], steps,
    rank=rank)`: its seconds, each step's (a step begins where `token_losses` is called), its
    losses, the adapters' numbers, and the peak anonymous memory of the kernel during each.
    Beside each wall time, the kernel's CPU time (all its threads), which another process
    sharing the cores lengthens less."""
    forward, weights_from = nb["forward"], nb["weights_from"]
    tokens = nb["begin"] + nb["tokenizer"].encode(sentence, disallowed_special=())
    results = {"tokens": len(tokens), "parameters": nb["settings"].n_parameters}
    results["dtype"] = str(nb["compute_dtype"]).removeprefix("torch.")

    def now():
        return time.perf_counter(), time.process_time()

    def since(start):
        return [b - a for a, b in zip(start, now(), strict=True)]

    results["forward"], results["forward_cpu"] = [], []
    with AnonymousPeak() as peak:
        for _ in range(2):
            with weights_from({}):
                started = now()
                forward(tokens, every_position=True)
                seconds, cpu = since(started)
            results["forward"].append(seconds)
            results["forward_cpu"].append(cpu)
    results["forward_anon"] = {"start": peak.start, "peak": peak.most}
    token_losses, marks = nb["token_losses"], []

    def timed_token_losses(tokens):  # teach calls it once a step for one sentence
        marks.append(now())
        losses = token_losses(tokens)
        marks.append(now())
        return losses

    nb["token_losses"] = timed_token_losses
    try:
        with AnonymousPeak() as peak:
            started = now()
            trained, losses = nb["teach"]([sentence], steps=steps, rank=rank)
            ended = now()
    finally:
        nb["token_losses"] = token_losses
    starts, ends = marks[0::2], marks[1::2]
    results["teach"] = {
        "seconds": ended[0] - started[0],
        "cpu": ended[1] - started[1],
        "setup": starts[0][0] - started[0],
        "steps": [b[0] - a[0] for a, b in zip(starts, [*starts[1:], ended], strict=True)],
        "steps_cpu": [b[1] - a[1] for a, b in zip(starts, [*starts[1:], ended], strict=True)],
        "forward_in_step": [b[0] - a[0] for a, b in zip(starts, ends, strict=True)],
        "losses": losses,
        "trainable": sum(m.a.numel() + m.b.numel() for m in trained.values()),
        "adapted": len(trained),
        "anon": {"start": peak.start, "peak": peak.most},
    }
    results["buffers"] = conversion_buffers(nb["file_in_float32"])
    results["weight_buffers"] = conversion_buffers(nb["weight"].reader)
    with open(path, "w") as file:
        json.dump(results, file)
