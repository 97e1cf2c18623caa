"""The model's sizes with what a file may leave out filled in, once — and the shapes they imply.

Every layout's reader gives params.json's keys. Some of them a file may leave unsaid:
`n_kv_heads` (absent: one key/value head per query head), `head_dim` (absent: the width split
evenly among the query heads; Qwen3 states its own), `ffn_hidden` (Meta's params.json gives a
rule instead: `multiple_of` and `ffn_dim_multiplier`), `tied_output` (Meta's files say it by
holding no output matrix) and `qk_norm` (Qwen3's RMSNorm on each query and key head; Llama 3
has none). A Llama 4 params.json (the notebook's last section) may leave out its own keys too:
Meta's defaults are `LLAMA4_DEFAULTS`, and `filled` adds an expert's width (`expert_hidden`,
Meta's rule) and which layers hold experts or have no RoPE. `filled` is the one place those
defaults are written, into one frozen `ModelArgs`; everything else reads it. The notebook
derives the same sizes in the open, in its section "Sizes derived from `params.json`".
"""

from __future__ import annotations

import math

from plumbing import release_facts


def ffn_hidden_size(params: dict) -> int:
    """The SwiGLU width: stated by a Hugging Face config or a GGUF file, else Meta's rule."""
    if params.get("ffn_hidden") is not None:
        return params["ffn_hidden"]
    hidden = int(2 * 4 * params["dim"] / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    return params["multiple_of"] * math.ceil(hidden / params["multiple_of"])


def head_dim(params: dict) -> int:
    """The width of one head: as the file states it (Qwen3's config.json does), else Llama 3's
    rule, the model's width split evenly among its query heads. The one place outside the
    notebook that derives it (the notebook does, in the open)."""
    if params.get("head_dim") is not None:
        return params["head_dim"]
    return params["dim"] // params["n_heads"]


# What Meta's Llama 4 code assumes where its params.json is silent (llama_models/llama4/args.py).
LLAMA4_DEFAULTS = {
    "moe_args": None,
    "nope_layer_interval": None,
    "attention_chunk_size": None,
    "use_qk_norm": False,
    "attn_temperature_tuning": False,
    "floor_scale": 8192.0,
    "attn_scale": 0.1,
}
MOE_DEFAULTS = {"top_k": 1, "interleave_moe_layer_step": 1, "capacity_factor": 1.0}
MOE_DEFAULTS |= {"auto_scale_F": True}


def expert_hidden_size(params: dict) -> int:
    """A Llama 4 expert's SwiGLU width, by Meta's rule (llama_models/llama4/moe.py): ffn_exp ·
    dim, ⅔ of it, times ffn_dim_multiplier, divided by capacity_factor + 1 when auto_scale_F
    (so that a token's active numbers match a dense layer's), rounded up to multiple_of."""
    moe = MOE_DEFAULTS | params["moe_args"]
    hidden = int(2 * int(params["ffn_exp"] * params["dim"]) / 3)
    hidden = int(params["ffn_dim_multiplier"] * hidden)
    if moe["auto_scale_F"]:
        hidden = int(hidden / (moe["capacity_factor"] + 1))
    return hidden + -hidden % params["multiple_of"]


def llama4_rope_scaling(params: dict) -> dict:
    """Llama 4's scaled RoPE in Hugging Face's keys, as the lesson's scaling reads them (facts:
    llama_models/llama4/args.py and model.py's apply_scaling): the factor (16 unless stated),
    the high-frequency factor (1 unless stated), a low-frequency factor of 1 and an original
    context of 8,192 positions, both fixed in Meta's code."""
    return {
        "factor": params.get("rope_scaling_factor") or 16.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": params.get("rope_high_freq_factor") or 1.0,
        "original_max_position_embeddings": 8192,
    }


def llama4_layers(params: dict) -> dict:
    """Which layers Llama 4 changes (facts: llama_models/llama4/model.py): `moe_layers`, every
    `interleave_moe_layer_step`-th counted from 1, hold a mixture of experts; `nope_layers`,
    every `nope_layer_interval`-th, have no RoPE (nor the norm, nor the chunks)."""
    n_layers, moe = params["n_layers"], params.get("moe_args")
    step = (MOE_DEFAULTS | (moe or {}))["interleave_moe_layer_step"]
    interval = params.get("nope_layer_interval")
    return {
        "moe_layers": tuple(i for i in range(n_layers) if moe and (i + 1) % step == 0),
        "nope_layers": tuple(i for i in range(n_layers) if interval and (i + 1) % interval == 0),
    }


class ModelArgs(dict):
    """The filled sizes, frozen, like Meta's `ModelArgs(**params)`: read as a dict
    (`args["dim"]`, `args.get(…)`, as the notebook reads params.json) or by attribute
    (`args.dim`); never changed in place (a copy, `dict(args)` or `args | {…}`, is a dict)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _frozen(self, *args, **kwargs):
        raise TypeError("the model's sizes are filled once and frozen: change a copy, dict(args)")

    __setitem__ = __delitem__ = __ior__ = _frozen
    update = pop = popitem = clear = setdefault = _frozen

    def __reduce__(self):  # pickled (torch.save, a worker process) as the dict it holds
        return ModelArgs, (dict(self),)


def filled(params: dict, tied_output: bool = False) -> ModelArgs:
    """`params` with n_kv_heads, head_dim, ffn_hidden, qk_norm, tied_output and context_length
    always present, frozen.

    `tied_output` is the default for a file that does not state it (Meta's: whether its
    weights hold no output matrix). Filling filled params changes nothing.
    """
    sizes = dict(params)
    if sizes.get("n_kv_heads") is None:
        sizes["n_kv_heads"] = sizes["n_heads"]  # no grouping: one key/value head per query head
    sizes["head_dim"] = head_dim(sizes)
    sizes["ffn_hidden"] = ffn_hidden_size(sizes)
    sizes["qk_norm"] = bool(sizes.get("qk_norm", False))
    if sizes.get("tied_output") is None:
        sizes["tied_output"] = tied_output
    sizes["context_length"] = release_facts.context_length(sizes)
    if any(key in sizes for key in release_facts.LLAMA4_PARAMS):  # Llama 4's keys
        for key, default in LLAMA4_DEFAULTS.items():
            sizes[key] = default if sizes.get(key) is None else sizes[key]
        if sizes.get("moe_args"):
            sizes["moe_args"] = MOE_DEFAULTS | sizes["moe_args"]
            if sizes.get("expert_hidden") is None:  # stated by Hugging Face's config
                sizes["expert_hidden"] = expert_hidden_size(sizes)
        if sizes.get("use_scaled_rope") and sizes.get("rope_scaling") is None:
            sizes["rope_scaling"] = llama4_rope_scaling(sizes)
        sizes |= llama4_layers(sizes)
    return ModelArgs(sizes)


def expected_shapes(params: dict, tied_output: bool | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name of Meta's layout, in the order of Meta's files, with the shape the
    params imply (the output matrix left out when tied)."""
    sizes = filled(params)
    dim, n_heads, head_width = sizes["dim"], sizes["n_heads"], sizes["head_dim"]
    kv_features = sizes["n_kv_heads"] * head_width
    hidden = sizes["ffn_hidden"]
    shapes = {"tok_embeddings.weight": (sizes["vocab_size"], dim)}
    for i in range(sizes["n_layers"]):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (n_heads * head_width, dim),
            f"layers.{i}.attention.wk.weight": (kv_features, dim),
            f"layers.{i}.attention.wv.weight": (kv_features, dim),
            f"layers.{i}.attention.wo.weight": (dim, n_heads * head_width),
        }
        if i in sizes.get("moe_layers", ()):  # Llama 4: a router, experts and a shared one
            experts, expert_hidden = sizes["moe_args"]["num_experts"], sizes["expert_hidden"]
            shapes |= {
                f"layers.{i}.feed_forward.router_DE": (dim, experts),
                f"layers.{i}.feed_forward.experts.w1": (experts, dim, expert_hidden),
                f"layers.{i}.feed_forward.experts.w2": (experts, expert_hidden, dim),
                f"layers.{i}.feed_forward.experts.w3": (experts, dim, expert_hidden),
            } | {
                f"layers.{i}.feed_forward.shared_expert.{name}.weight": shape
                for name, shape in [
                    ("w1", (expert_hidden, dim)),
                    ("w2", (dim, expert_hidden)),
                    ("w3", (expert_hidden, dim)),
                ]
            }
        else:
            shapes |= {
                f"layers.{i}.feed_forward.w1.weight": (hidden, dim),
                f"layers.{i}.feed_forward.w2.weight": (dim, hidden),
                f"layers.{i}.feed_forward.w3.weight": (hidden, dim),
            }
        shapes |= {
            f"layers.{i}.attention_norm.weight": (dim,),
            f"layers.{i}.ffn_norm.weight": (dim,),
        }
        if sizes["qk_norm"]:  # Qwen3: one gain per feature of a head, shared by every head
            shapes |= {
                f"layers.{i}.attention.q_norm.weight": (head_width,),
                f"layers.{i}.attention.k_norm.weight": (head_width,),
            }
    shapes["norm.weight"] = (dim,)
    if not (sizes["tied_output"] if tied_output is None else tied_output):
        shapes["output.weight"] = (sizes["vocab_size"], dim)
    return shapes


def n_parameters(params: dict, tied_output: bool | None = None) -> int:
    """How many numbers the model holds, from the shapes the params imply (no file read)."""
    return sum(math.prod(shape) for shape in expected_shapes(params, tied_output).values())
