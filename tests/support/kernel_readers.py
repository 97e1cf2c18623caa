"""What the tests read inside the notebook's kernel, after its last cell, on the notebook's own
objects.

The tests never re-implement the model. `notebook_values.run_and_read` executes the notebook
unchanged (testbeds/notebook_kernel.py), then calls functions of this module in the same kernel
with the notebook's globals, `nb` (read through its contract, testbeds/notebook_contract.py),
and a file for their results: the cells' own functions (`transformer_layer`, `generate`,
`bpe_encode`, `token_losses` …) do the work. One kernel serves many tests.

`read_back` also reads what the lesson does not keep — the residual stream after each
layer's *attention* — the way a forward hook reads a torch model: the notebook's own
`rms_norm` and `feed_forward` are wrapped from outside, and its own `transformer_layer` runs
again over the same input; the stream the layer normalizes just before its feed-forward
network is the one after attention.
"""

from __future__ import annotations

import inspect
import json
import os
from contextlib import contextmanager
from unittest import mock

import matplotlib.pyplot as plt
import nbformat
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode

from plumbing import friendly_errors, run_settings, weight_loading
from testbeds.notebook_contract import NotebookGlobals


@contextmanager
def recording_layers(nb: NotebookGlobals):
    """While open, `nb`'s rms_norm and feed_forward record the stream after each layer's
    attention."""
    after_attention, latest_norm_input = [], [None]
    lesson_rms_norm, lesson_feed_forward = nb["rms_norm"], nb["feed_forward"]

    def rms_norm(x, norm_weight):
        latest_norm_input[0] = x
        return lesson_rms_norm(x, norm_weight)

    def feed_forward(x, layer):
        after_attention.append(latest_norm_input[0])  # what the layer normalized for its FFN
        return lesson_feed_forward(x, layer)

    nb["rms_norm"], nb["feed_forward"] = rms_norm, feed_forward
    try:
        yield after_attention
    finally:
        nb["rms_norm"], nb["feed_forward"] = lesson_rms_norm, lesson_feed_forward


def cpu32(tensors):
    return [tensor.float().cpu() for tensor in tensors]


def read_back(nb: NotebookGlobals, path: str) -> None:
    """The lesson's tensors, and the stream after every layer's attention, saved to `path`."""
    with recording_layers(nb) as after_attention:
        stream = nb["token_embeddings"]
        for layer in range(nb["n_layers"]):
            stream = nb["transformer_layer"](stream, layer, nb["rope_cos"], nb["rope_sin"])
    assert torch.equal(stream, nb["residual_stream"][-1]), (
        "the hooked rerun differs from the lesson's run"
    )
    torch.save(
        {
            "prompt_tokens": nb["prompt_tokens"],
            "next_token_id": nb["next_token_id"],
            "token_embeddings": nb["token_embeddings"].float().cpu(),
            "residual_after_attention": cpu32(after_attention),
            "residual_after_ffn": cpu32(nb["residual_stream"][1:]),
            "final_normed": nb["final_normed"].float().cpu(),
            "logits": nb["logits"].float().cpu(),
            "compute_dtype": str(nb["compute_dtype"]),
            "rope_frequencies": nb["rope_frequencies"].float().cpu(),
            "rope_scale_factor": nb["rope_scale_factor"],
            "chat_tokens": nb["chat_tokens"],
        },
        path,
    )


def other_prompts(nb: NotebookGlobals, prompts: dict[str, str], path: str) -> None:
    """For each prompt, the tensors read_back saves, through the notebook's own `forward`.

    `forward` normalizes and projects only the last position, so `final_normed` and `logits`
    are that position's. Its layers, the final norm's output and the embeddings are read by
    wrapping the notebook's `transformer_layer` and `output_projection` from outside.
    """
    lesson_layer, lesson_projection = nb["transformer_layer"], nb["output_projection"]
    results = {}
    for name, text in prompts.items():
        layer_inputs, layer_outputs, projected = [], [], []

        def transformer_layer(
            stream, layer, cos, sin, cache=None, inputs=layer_inputs, outputs=layer_outputs
        ):
            inputs.append(stream)
            outputs.append(lesson_layer(stream, layer, cos, sin, cache))
            return outputs[-1]

        def output_projection(x, seen=projected):
            seen.append(x)
            return lesson_projection(x)

        tokens = [nb["bos_id"]] + nb["tokenizer"].encode(text, disallowed_special=())
        nb["transformer_layer"], nb["output_projection"] = transformer_layer, output_projection
        try:
            with recording_layers(nb) as after_attention:
                logits = nb["forward"](tokens)
        finally:
            nb["transformer_layer"], nb["output_projection"] = lesson_layer, lesson_projection
        results[name] = {
            "prompt_tokens": tokens,
            "next_token_id": int(logits.argmax()),
            "token_embeddings": layer_inputs[0].float().cpu(),
            "residual_after_attention": cpu32(after_attention),
            "residual_after_ffn": cpu32(layer_outputs),
            "final_normed_last": projected[0].float().cpu(),
            "logits": logits.float().cpu(),
            "compute_dtype": str(nb["compute_dtype"]),
        }
    torch.save(results, path)


def at_rope_scale(nb: NotebookGlobals, factor: float, prompts: dict[str, str], path: str) -> None:
    """other_prompts with the notebook's frequencies scaled by another factor, through its own
    `scale_rope_frequencies`: a second factor without a second kernel. (Which factor the setup
    cell picks is tested on its own.)"""
    chosen = nb["rope_frequencies"]
    nb["rope_frequencies"] = nb["scale_rope_frequencies"](nb["unscaled_rope_frequencies"], factor)
    try:
        other_prompts(nb, prompts, path)
        values = torch.load(path, weights_only=True)
        for name in values:
            values[name]["rope_frequencies"] = nb["rope_frequencies"].float().cpu()
        torch.save(values, path)
    finally:
        nb["rope_frequencies"] = chosen


def in_dtype(nb: NotebookGlobals, dtype: str, prompts: dict[str, str], path: str) -> None:
    """other_prompts with the notebook computing in another dtype: its `compute_dtype` and its
    `weight` reader (the two things the setup cell's dtype decides) swapped for the run."""
    saved = nb["compute_dtype"]
    nb["compute_dtype"] = getattr(torch, dtype)
    reader = weight_loading.WeightReader(
        nb["model"], nb["device"], nb["compute_dtype"], nb["settings"].streaming
    )
    try:
        with nb["weight"].reading(reader):
            other_prompts(nb, prompts, path)
    finally:
        nb["compute_dtype"] = saved


def bpe(nb: NotebookGlobals, strings_file: str, path: str) -> None:
    """The notebook's from-scratch tokenizer on every string of `strings_file`, and its merges."""
    with open(strings_file, encoding="utf-8") as file:
        strings = json.load(file)
    encoded = [nb["bpe_encode"](text) for text in strings]
    merges = [[part.decode() for part in state] for state in nb["bpe_merges"](" ultimate")]
    result = {
        "encoded": encoded,
        "decoded": [nb["bpe_decode"](ids[1:]) for ids in encoded],
        "merges": merges,
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(result, file)


def generations(nb: NotebookGlobals, path: str) -> None:
    """The notebook's `generate` with and without the cache, on three prompts."""
    texts = [nb["prompt"], "the sun rises", "once upon a time"]
    prompts = {
        text: [nb["bos_id"]] + nb["tokenizer"].encode(text, disallowed_special=()) for text in texts
    }
    generate = nb["generate"]
    result = {
        "cached": {text: generate(tokens) for text, tokens in prompts.items()},
        "recomputed": {text: generate(tokens, use_cache=False) for text, tokens in prompts.items()},
        "batches": batches(nb),
    }
    with open(path, "w") as file:
        json.dump(result, file)


def batches(nb: NotebookGlobals) -> dict:
    """The notebook's batch of prompts against each prompt alone: `generate_batch` against
    `generate`, and `forward_batch` with padding of any length and content against `forward`."""
    tokenizer, bos_id = nb["tokenizer"], nb["bos_id"]
    texts = [nb["prompt"], "the sun rises", "", "once upon a time", "a", "the sun rises"]
    prompts = [[bos_id] + tokenizer.encode(text, disallowed_special=()) for text in texts]
    generate, generate_batch = nb["generate"], nb["generate_batch"]
    result = {
        "prompts": prompts,
        "together": generate_batch(prompts),
        "alone": [generate(tokens) for tokens in prompts],
    }
    if any(len(tokens) < 24 for tokens in result["alone"]):  # a prompt ended: step past it
        result["together_past_the_end"] = generate_batch(prompts, 12, stop_at_end=False)
        result["alone_past_the_end"] = [
            generate(tokens, max_new_tokens=12, stop_at_end=False) for tokens in prompts
        ]
    # One prompt at a time behind 0 to 40 columns of padding, of arbitrary ids, against
    # forward on the prompt alone: the largest logit difference, relative.
    device, forward, forward_batch = nb["device"], nb["forward"], nb["forward_batch"]
    differences, finite = {}, True
    for tokens in prompts[:2]:
        alone = forward(tokens).float()
        for n_padding in (0, 1, 7, 40):
            padding_ids = torch.arange(n_padding, device=device) * 997 % nb["vocab_size"]
            row = torch.cat([padding_ids, torch.tensor(tokens, device=device)])[None]
            logits = forward_batch(row, torch.tensor([n_padding], device=device))[0].float()
            finite = finite and bool(logits.isfinite().all())
            difference = float((logits - alone).abs().max() / alone.abs().max())
            key = f"{len(tokens)} tokens after {n_padding} padding"
            differences[key] = difference
    # the angles each real token turns by: its position as if alone, to the bit (with RoPE a
    # shift of all of a prompt's positions would change scores only by rounding, so the
    # logits alone could not tell)
    lesson_layer, angles = nb["transformer_layer"], []

    def transformer_layer(stream, layer, cos, sin, *rest):
        if layer == 0:
            angles.append(cos)
        return lesson_layer(stream, layer, cos, sin, *rest)

    nb["transformer_layer"] = transformer_layer
    try:
        tokens = prompts[1]
        forward(tokens)
        row = torch.tensor([[bos_id] * 5 + tokens], device=device)
        forward_batch(row, torch.tensor([5], device=device))
    finally:
        nb["transformer_layer"] = lesson_layer
    alone_cos, batch_cos = angles
    result["same_angles"] = bool(torch.equal(batch_cos[0, 0, 5:], alone_cos))
    # all the prompts in one batch, each row against its prompt alone
    rows, n_padding = nb["left_padded"](prompts)
    logits = forward_batch(rows, n_padding).float()
    for row, tokens in enumerate(prompts):
        alone = forward(tokens).float()
        differences[f"row {row} of the batch"] = float(
            (logits[row] - alone).abs().max() / alone.abs().max()
        )
    result["logit_differences"] = differences
    result["finite"] = finite and bool(logits.isfinite().all())
    cache = nb["KVCache"](9, prompts=len(prompts))
    result["cache_shape"] = list(cache.keys.shape)
    result["cache_sizes"] = [nb["n_layers"], len(prompts), nb["n_kv_heads"], 9, nb["head_dim"]]
    return result


def sampling(nb: NotebookGlobals, path: str) -> None:
    """The notebook's `generate` with its sampling options, on one prompt."""
    generate = nb["generate"]
    tokens = [nb["bos_id"]] + nb["tokenizer"].encode("once upon a time", disallowed_special=())
    result = {
        "greedy": generate(tokens),
        "top_1": generate(tokens, temperature=0.7, top_k=1),
        "hot_a": generate(tokens, temperature=3.0, seed=5, max_new_tokens=12),
        "hot_b": generate(tokens, temperature=3.0, seed=5, max_new_tokens=12),
        "hot_c": generate(tokens, temperature=3.0, seed=6, max_new_tokens=12),
        "short": generate(tokens, max_new_tokens=3),
        "top_p_tiny": generate(tokens, temperature=1.0, top_p=1e-6, max_new_tokens=8),
        "min_p_one": generate(tokens, temperature=1.0, min_p=1.0, max_new_tokens=8),
    }
    # the rules on a hand-made distribution, in a shuffled order
    shuffled = [0.1, 0.5, 0.05, 0.2, 0.15]
    probabilities = torch.tensor(shuffled)
    result["rules"] = {
        f"{name}={setting}": torch.nonzero(nb[name](probabilities, setting))[:, 0].tolist()
        for name, setting in [
            ("top_k_kept", 2),
            ("top_p_kept", 0.69),
            ("top_p_kept", 0.71),
            ("top_p_kept", 1.0),
            ("min_p_kept", 0.29),
            ("min_p_kept", 0.31),
        ]
    }
    exact = torch.tensor([0.125, 0.5, 0.125, 0.25])  # sums without rounding: 0.5 + 0.25 = 0.75
    result["rules"]["top_p_kept=0.75, exact"] = torch.nonzero(nb["top_p_kept"](exact, 0.75))[
        :, 0
    ].tolist()
    # many draws through pick_next, with every rule at once
    draws, generator = 5000, torch.Generator().manual_seed(0)
    logits = torch.log(probabilities)
    picks = [
        nb["pick_next"](logits, 1.0, 4, generator, top_p=0.8, min_p=0.15) for _ in range(draws)
    ]
    result["draws"] = {
        "n": draws,
        "counts": torch.bincount(torch.tensor(picks), minlength=5).tolist(),
    }
    result["streams"] = streams(nb)
    with open(path, "w") as file:
        json.dump(result, file)


def streams(nb: NotebookGlobals) -> dict:
    """The notebook's `stream_text` on fixed token sequences: `generate` is replaced by a stand-in
    that hands out the tokens of a given text one at a time, as the model would."""
    tokenizer = nb["tokenizer"]
    cases = {
        "multibyte": ("naïve café, 🦙 and 42°C\nnext", ()),
        "stop across tokens": ("first answer\n\nQ: a second question", ("\n\nQ:",)),
        "stop never met": ("a line\nand a 🦙", ("\n\nQ:", "STOP")),
        "two stops": ("one. two! three", ("!", ". ")),
    }
    results = {}
    for name, (text, stops) in cases.items():
        tokens = tokenizer.encode(text)

        def stand_in(prompt_tokens, on_token=None, tokens=tokens, **options):
            handed = []
            for token in tokens:
                handed.append(token)
                if on_token(token):
                    break
            return handed

        pieces = []
        saved, nb["generate"] = nb["generate"], stand_in
        try:
            returned = nb["stream_text"]("prompt", stop_strings=stops, show=pieces.append)
        finally:
            nb["generate"] = saved
        results[name] = {
            "text": text,
            "stops": list(stops),
            "tokens": len(tokens),
            "pieces": pieces,
            "returned": returned,
        }
    return results


def gradients(nb: NotebookGlobals, path: str) -> None:
    """The learning section's loss and the gradients of layer 0 and the output matrix."""
    copy = nb["trainable_copy"]()
    with nb["weights_from"](copy), torch.enable_grad():
        loss = nb["token_losses"](nb["hitchhiker_tokens"]).mean()
        loss.backward()
    keep = [name for name in copy if name.startswith("layers.0.") or name == nb["output_name"]]
    torch.save(
        {
            "loss": loss.detach(),
            "tokens": nb["hitchhiker_tokens"],
            "grads": {name: copy[name].grad for name in keep},
        },
        path,
    )


def _adapter_values(adapters: dict) -> dict:
    """Each adapter's A and B, detached copies on the CPU, by the adapted matrix's name."""
    return {
        name: {"a": adapted.a.detach().cpu().clone(), "b": adapted.b.detach().cpu().clone()}
        for name, adapted in adapters.items()
    }


def lora(nb: NotebookGlobals, rank: int, path: str) -> None:
    """The learning section's LoRA, through its own `low_rank_adapters`, `weights_from`,
    `token_losses` and `teach`:

    - "gradients": adapters of `rank` with B set to random nonzero values (at B = 0, A's
      gradient is zero), the Hitchhiker sentence's mean loss through them, and every A's and
      B's gradient;
    - "training": `teach(new_fact, steps=3, rank=rank)` after `torch.manual_seed(1)`: the
      adapters it made (watched as `teach` makes them) and `low_rank_adapters(rank)`'s after
      the same seed; at each step, read by torch's optimizer hooks, every A's and B's gradient
      and their values after the step, whether the optimizer holds exactly the adapters, and
      its type and settings; the losses it returned; the token ids it trained on;
    - "bad_ranks": what `low_rank_adapters` raised for each rank it must refuse, and the
      adapters' shapes at the largest rank it must accept, the smallest side of a matrix.
    """
    low_rank_adapters = nb["low_rank_adapters"]
    torch.manual_seed(0)
    adapters = low_rank_adapters(rank)
    with torch.no_grad():
        for adapted in adapters.values():
            adapted.b.copy_(0.02 * torch.randn(adapted.b.shape))
    with nb["weights_from"](adapters), torch.enable_grad():
        loss = nb["token_losses"](nb["hitchhiker_tokens"]).mean()
        loss.backward()
    gradients = {
        "tokens": nb["hitchhiker_tokens"],
        "loss": float(loss),
        "scales": {name: adapted.scale for name, adapted in adapters.items()},
        "adapters": _adapter_values(adapters),
        "grads": {
            name: {"a": adapted.a.grad.cpu(), "b": adapted.b.grad.cpu()}
            for name, adapted in adapters.items()
        },
    }

    torch.manual_seed(1)
    recorded = _adapter_values(low_rank_adapters(rank))
    made, started, steps, optimizers = [], [], [], []  # what teach made and did, watched

    def low_rank_adapters_for_teach(*args, **kwargs):
        made.append(low_rank_adapters(*args, **kwargs))
        started.append(_adapter_values(made[-1]))  # before teach's first step moves them
        return made[-1]

    def before_step(optimizer, args, kwargs):
        trained = [number for group in optimizer.param_groups for number in group["params"]]
        adapted = [n for adapters in made for a in adapters.values() for n in (a.a, a.b)]
        optimizers.append(
            {
                "type": type(optimizer).__name__,
                "settings": dict(optimizer.defaults),
                "holds_the_adapters": len(trained) == len(adapted)
                and {id(n) for n in trained} == {id(n) for n in adapted},
            }
        )
        grads = {
            name: {"a": adapted.a.grad.cpu().clone(), "b": adapted.b.grad.cpu().clone()}
            for name, adapted in made[-1].items()
        }
        steps.append({"grads": grads})

    def after_step(optimizer, args, kwargs):
        steps[-1]["after"] = _adapter_values(made[-1])

    teach = nb["teach"]
    nb["low_rank_adapters"] = low_rank_adapters_for_teach
    hooks = [
        register_optimizer_step_pre_hook(before_step),
        register_optimizer_step_post_hook(after_step),
    ]
    torch.manual_seed(1)
    try:
        _, losses = teach(nb["new_fact"], steps=3, rank=rank)
    finally:
        nb["low_rank_adapters"] = low_rank_adapters
        for hook in hooks:
            hook.remove()
    bos_id, tokenizer = nb["bos_id"], nb["tokenizer"]
    training = {
        "recorded_start": recorded,
        "teach_started": started,
        "steps": steps,
        "optimizers": optimizers,
        "losses": losses,
        "batch": [
            [bos_id] + tokenizer.encode(text, disallowed_special=()) for text in nb["new_fact"]
        ],
    }

    smallest = min(min(adapted.b.shape[0], adapted.a.shape[1]) for adapted in adapters.values())
    refused = {}
    for bad in (0, -1, 2.5, "8", smallest + 1):
        try:
            low_rank_adapters(bad)
            refused[repr(bad)] = {"raised": None}
        except Exception as error:  # which exception it is, the test checks
            refused[repr(bad)] = {
                "raised": type(error).__name__,
                "setup_error": isinstance(error, friendly_errors.SetupError),
                "message": str(error),
            }
    at_smallest = {
        name: (tuple(adapted.a.shape), tuple(adapted.b.shape))
        for name, adapted in low_rank_adapters(smallest).items()
    }
    torch.save(
        {
            "rank": rank,
            "gradients": gradients,
            "training": training,
            "bad_ranks": {"smallest": smallest, "refused": refused, "at_smallest": at_smallest},
        },
        path,
    )


def quantization(nb: NotebookGlobals, path: str) -> None:
    """The quantization section's own functions and matrices, measured in its kernel.

    For every matrix of `quantized_models`: the notebook's integers and scales again from
    the file, how far each weight moved in steps of its scale, whether the matrix holds
    those very integers and scales, and the fused product `x @ W.T` against the explicit
    one, `x @ dequantize(ints, scales).T`. And one quality figure recomputed.
    """
    generator = torch.Generator().manual_seed(0)
    measured = {}
    for scheme, matrices in nb["quantized_models"].items():
        quantize = nb["quantize_int8"] if scheme == "int8" else nb["quantize_int4"]
        for name, matrix in matrices.items():
            weights = nb["model"][name].float()
            ints, scales = quantize(weights)
            step = scales.repeat_interleave(weights.shape[1] // scales.shape[1], dim=1)
            zero = step == 0  # a block of zeros (rows of tokens the embedded model never saw)
            step = torch.where(zero, 1.0, step)
            x = torch.randn(3, matrix.shape[1], generator=generator)
            explicit = x @ nb["dequantize"](ints, scales).T
            measured[(scheme, name)] = {
                "range": (int(ints.min()), int(ints.max())),
                "zero_blocks_stay_zero": bool(
                    (ints[zero] == 0).all() and (weights[zero] == 0).all()
                ),
                "moved_in_steps": float((weights / step - ints).abs().max()),
                "moved_over_half": float(((weights / step - ints).abs() > 0.5).float().mean()),
                "holds_the_notebooks": torch.equal(matrix.ints, ints)
                and torch.equal(matrix.scales, scales.to(matrix.scales.dtype)),  # int4: bf16
                "fused_vs_explicit": float((x @ matrix.T - explicit).abs().max())
                / float(explicit.abs().max()),
                "one_row_vs_explicit": float((x[0] @ matrix.T - explicit[0]).abs().max())
                / float(explicit[0].abs().max()),
                "bf16_vs_explicit": float((x.bfloat16() @ matrix.T - explicit).abs().max())
                / float(explicit.abs().max()),
            }
    torch.save(
        {
            "matrices": measured,
            "printed_quality": nb["quantization_quality"],
            "recomputed_int8_quality": nb["quality"]({"int8": nb["quantized_models"]["int8"]})[
                "int8"
            ],
        },
        path,
    )


def silent_bugs(nb: NotebookGlobals, path: str) -> None:
    """The section "When it goes quietly wrong", measured again in its kernel: each bug's
    damage recomputed with the section's own functions; whether every function it broke is
    the original again; whether each broken line does what the section says (RoPE pairing:
    Hugging Face's `rope_rotate_half`, from the layouts section; key/value heads: head h reads
    h % n_kv_heads); and the scaling figure's scores at a few distances, one at a time."""
    bugs, measure = nb["silent_bugs"], nb["measure"]
    correct = nb["logits_and_streams"](nb["bug_input"])
    again = {"(none)": measure(correct, nb["prompt_tokens"], nb["bug_input"])}
    for bug, lines in bugs.items():
        with nb["with_bug"](lines):
            again[bug] = measure(correct, nb["prompt_tokens"], nb["bug_input"])
    restored = {}
    for lines in bugs.values():
        for name, (right, wrong) in lines.items():
            function = nb.namespace[name]  # a function the section names itself
            source = inspect.getsource(function)
            restored[name] = (
                function.__code__.co_filename != "<string>"
                and right in source
                and wrong not in source
            )
    x = torch.randn(3, 5, nb["head_dim"], generator=torch.Generator().manual_seed(0))
    angles = torch.rand(5, nb["head_dim"] // 2, generator=torch.Generator().manual_seed(1))
    with nb["with_bug"](bugs["RoPE pairs (i, i + head_dim/2)"]):
        broken_rope = nb["apply_rope"](x, angles.cos(), angles.sin())
    half_split = nb["rope_rotate_half"](x, angles.cos(), angles.sin())
    # the broken line writes each turned pair (i, i + head_dim/2) back side by side; queries
    # and keys both, so the scores are Hugging Face's pairing's: compare in its order
    broken_rope = broken_rope.unflatten(-1, (-1, 2)).transpose(-2, -1).flatten(-2)
    keys = torch.randn(nb["n_kv_heads"], 4, nb["head_dim"], generator=torch.Generator())
    queries = torch.randn(nb["n_heads"], 4, nb["head_dim"], generator=torch.Generator())
    with nb["with_bug"](bugs["kv heads repeated"]):
        broken_pattern = nb["attention_pattern"](queries, keys)
    reads = torch.arange(nb["n_heads"]) % nb["n_kv_heads"]  # head h reads h % n_kv_heads
    expected_pattern = torch.softmax(
        (queries @ keys[reads].transpose(1, 2) / nb["head_dim"] ** 0.5)
        + nb["causal_mask_for"](4, 4),
        dim=-1,
    )
    data = nb["rope_scaling_data"]
    distances = data["distances"]
    picked = [0, 1, len(distances) // 3, len(distances) - 1]
    one_at_a_time = {}
    query, key = nb["q_per_token"][0].float(), nb["k_per_token"][0].float()
    unscaled = nb["unscaled_rope_frequencies"].float()
    scaled = nb["scale_rope_frequencies"](unscaled, data["factor"])
    for label, frequencies in (("unscaled", unscaled), ("scaled", scaled)):
        scores = []
        for index in picked:
            angle = distances[index] * frequencies  # [pairs]
            scores.append(float(nb["apply_rope"](query[None], angle.cos(), angle.sin())[0] @ key))
        one_at_a_time[label] = scores
    torch.save(
        {
            "printed": nb["silent_bug_damage"],
            "on_logits": nb["rope_scaling_logits"],
            "again": again,
            "restored": restored,
            "rope_bug_vs_half_split": float((broken_rope - half_split).abs().max()),
            "kv_bug_vs_h_mod_kv": float((broken_pattern - expected_pattern).abs().max()),
            "n_kv_heads": nb["n_kv_heads"],
            "n_heads": nb["n_heads"],
            "figure": data,
            "picked": picked,
            "one_at_a_time": one_at_a_time,
        },
        path,
    )


def settings_matrix(
    nb: NotebookGlobals, combinations: list[dict], notebook_path: str, path: str
) -> None:
    """The lesson's main path again under each combination of the settings that change how
    weights are read (LLAMA3_DTYPE, LLAMA3_QUANTIZE, LLAMA3_ONE_ROW): for each, the setup
    cell's decisions are made anew (`run_settings.decide`, `settings.weight_reader`) and the
    notebook's own cells from `show-def` to `forward-def` run again in this kernel (the
    tokenizer's cells aside: they read no weight). Saves each run's next token, by the cells
    and by `forward`, and the setup's lines about it."""
    cells = nbformat.read(notebook_path, as_version=4).cells
    ids = [cell.get("id") for cell in cells]
    lesson = cells[ids.index("show-def") : ids.index("forward-def") + 1]
    sources = [
        cell.source
        for cell in lesson
        if cell.cell_type == "code" and not cell.get("id", "").startswith("bpe")
    ]
    results = []
    for combination in combinations:
        os.environ.update(combination)
        settings = run_settings.decide(
            nb["checkpoint_dir"], nb["config"], nb["tokenizer"], nb["model"]
        )
        nb.update(settings=settings, device=settings.device, compute_dtype=settings.dtype)
        nb["weight"] = settings.weight_reader(nb["model"])
        # the figures are the plain run's: here each is closed unrendered, not drawn again
        with mock.patch.object(plt, "show", lambda *_, **__: plt.close("all")):
            for source in sources:
                exec(compile(source, "lesson", "exec"), nb.namespace)
        forward_token = int(nb["forward"](nb["prompt_tokens"]).argmax())
        results.append(
            {
                **combination,
                "cells": nb["next_token_id"],
                "forward": forward_token,
                "dtype": str(settings.dtype).removeprefix("torch."),
                "quantized": settings.quantization_note,
                "one_row": settings.one_row_note,
            }
        )
    with open(path, "w") as file:
        json.dump(results, file)


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
                isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in held
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


def long_inputs(nb: NotebookGlobals, path: str) -> None:
    """The notebook's attention over keys in blocks (`attention_in_blocks`) against its
    attention at once (`attention_pattern`); its model with tiny blocks and prefill chunks
    against the same model with none; and the largest tensor a chunked prefill makes at two
    prompt lengths."""
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
    tokenizer, bos_id, forward = nb["tokenizer"], nb["bos_id"], nb["forward"]
    tokens = [bos_id] + tokenizer.encode(" ".join(["the sky is blue on a clear day"] * 6))
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


def long_logits(nb: NotebookGlobals, n_positions: int, factors: list, path: str) -> None:
    """The notebook's `prefill` (a chunk of positions at a time, keys in blocks) over
    n_positions tokens: the last position's logits with RoPE's frequencies scaled by each
    factor through its own `scale_rope_frequencies` (None: unscaled)."""
    sentence = nb["tokenizer"].encode(" the answer to the ultimate question is 42.")
    tokens = [nb["bos_id"]] + (sentence * (n_positions // len(sentence) + 1))[: n_positions - 1]
    chosen, unscaled = nb["rope_frequencies"], nb["unscaled_rope_frequencies"]
    result = {"tokens": tokens}
    try:
        for factor in factors:
            scaled = unscaled if factor is None else nb["scale_rope_frequencies"](unscaled, factor)
            nb["rope_frequencies"] = scaled
            result[str(factor)] = nb["prefill"](tokens, nb["KVCache"](len(tokens))).float().cpu()
    finally:
        nb["rope_frequencies"] = chosen
    torch.save(result, path)


def perplexities(nb: NotebookGlobals, path: str) -> None:
    """The learning section's `perplexity` on its held-out sentences, without windows and with
    windows shorter than the sequences, and the token ids it read, so that a test can score the
    same ids with transformers.

    With windows: the first 12 held-out sentences read 6 tokens at a time moving by 4 (each
    sentence needs several windows), and one 100-token sequence (the sentences one after
    another) read 32 at a time moving by 16, and by 20."""
    perplexity, heldout = nb["perplexity"], nb["heldout"]
    long = [token for sentence in heldout for token in sentence][:100]
    result = {
        "heldout": heldout,
        "heldout_lines": nb["heldout_lines"],
        "end_of_text_id": nb["end_of_text_id"],
        "heldout_score": nb["heldout_score"],  # what the cell printed (None: demos skipped)
        "long": long,
        "scores": {
            "heldout": perplexity(heldout),
            "12 heldout, window 6, stride 4": perplexity(heldout[:12], window=6, stride=4),
            "long": perplexity([long]),
            "long, window 32, stride 16": perplexity([long], window=32, stride=16),
            "long, window 32, stride 20": perplexity([long], window=32, stride=20),
        },
    }
    with open(path, "w") as file:
        json.dump(result, file)
