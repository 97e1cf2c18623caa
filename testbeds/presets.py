"""Every params.json the test beds write, named once: the releases' shapes and the small ones.

Tests, benchmarks and generators take their checkpoint shapes from here, and
`python -m testbeds.random_checkpoint OUT --preset NAME` writes any of them with random
weights. The small shapes keep the real 128,256-row vocabulary, so a test's prompt is
tokenized as Llama 3's; their widths are as small as each shape allows.
"""

from __future__ import annotations

from plumbing import release_facts

# What every Llama 3 release shares.
COMMON = {"vocab_size": 128256, "norm_eps": 1e-05, "rope_theta": 500000.0}
# The FFN rule of the small shapes that do not test it.
SMALL_FFN = {"multiple_of": 64, "ffn_dim_multiplier": 1.3}

# Facts: params.json of Meta's releases (3.1 8B: the 8B's, plus use_scaled_rope).
RELEASES = {
    "8b": release_facts.LLAMA3_8B_PARAMS,
    "3.2-1b": {
        "dim": 2048,
        "n_layers": 16,
        "n_heads": 32,
        "n_kv_heads": 8,
        "vocab_size": 128256,
        "multiple_of": 256,
        "ffn_dim_multiplier": 1.5,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    },
    "3.2-3b": {
        "dim": 3072,
        "n_layers": 28,
        "n_heads": 24,
        "n_kv_heads": 8,
        "vocab_size": 128256,
        "multiple_of": 256,
        "ffn_dim_multiplier": 1.0,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    },
}
RELEASES["3.1-8b"] = {**RELEASES["8b"], "use_scaled_rope": True}

# The parity tests' random checkpoints (tests/support/parity_runs.py), covering the axes that
# matter: query heads per kv head 1, 3, 4, 8; head_dim 16, 32, 64 and 128; 1 to 3 layers;
# several FFN rules (the 4-per-kv one has no ffn_dim_multiplier).
PARITY = {
    "q_per_kv_1-hd64-1layer": {
        "dim": 128,
        "n_layers": 1,
        "n_heads": 2,
        "n_kv_heads": 2,
        "multiple_of": 64,
        "ffn_dim_multiplier": 1.0,
        **COMMON,
    },
    "q_per_kv_3-hd32-3layers": {
        "dim": 192,
        "n_layers": 3,
        "n_heads": 6,
        "n_kv_heads": 2,
        "multiple_of": 32,
        "ffn_dim_multiplier": 1.5,
        **COMMON,
    },
    "q_per_kv_4-hd128-2layers": {
        "dim": 512,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 1,
        "multiple_of": 256,
        **COMMON,
    },
    # head_dim 8, the narrowest: this one runs the demos (training the tied 128,256-row
    # matrix), at 64 wide in about 22 s alone, against 38 s at 128 wide; its wk has 8 rows, a
    # height PyTorch's CPU int4 kernel refuses (the quantization demo then dequantizes it)
    "q_per_kv_8-hd8-2layers": {
        "dim": 64,
        "n_layers": 2,
        "n_heads": 8,
        "n_kv_heads": 1,
        "multiple_of": 128,
        "ffn_dim_multiplier": 1.3,
        **COMMON,
    },
}


def shape(dim: int, n_layers: int, n_heads: int, n_kv_heads: int, **rest) -> dict:
    """params.json for these sizes, then `rest`, in Meta's key order."""
    return {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, **rest}


# The other small shapes, each named for what it is there to show.
SMALL = {
    # the command line's default (python -m testbeds.random_checkpoint OUT)
    "small": shape(256, 2, 4, 2, **SMALL_FFN, **COMMON),
    # head_dim 128, the family's, so that every pair scaled RoPE changes is there; one head
    "scaled-hd128": shape(128, 2, 1, 1, **COMMON, **SMALL_FFN, use_scaled_rope=True),
    "tied-gqa": shape(128, 2, 4, 2, **COMMON, **SMALL_FFN),
    # 8 key/value heads, like the 70B, so that 8 shards hold one kv head each
    "eight-kv-heads": shape(128, 2, 8, 8, **COMMON, **SMALL_FFN),
    "four-heads-one-layer": shape(256, 1, 4, 4, **COMMON, **SMALL_FFN),
    # the Hugging Face tests' shapes: grouped queries, none (and tied), scaled RoPE
    "hf-gqa": shape(64, 2, 8, 2, vocab_size=128256, multiple_of=32, ffn_dim_multiplier=1.5)
    | {"norm_eps": 1e-5, "rope_theta": 500000.0},
    # llama.cpp's converter on scaled RoPE (benchmarks/gguf_parity.py --scaled)
    "gguf-scaled": shape(256, 2, 4, 2, vocab_size=128256, multiple_of=256)
    | {"norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True},
    # the embedded checkpoint's shape (weights/), as its params.json says:
    # generators/train_embedded_checkpoint.py trains it
    "embedded": shape(64, 4, 4, 2, vocab_size=128256, multiple_of=32, ffn_dim_multiplier=1.3)
    | {"norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": False},
}
SMALL["hf-no-gqa"] = {**SMALL["hf-gqa"], "dim": 96, "n_heads": 6, "n_kv_heads": 6}
SMALL["hf-scaled-rope"] = {**SMALL["hf-gqa"], "use_scaled_rope": True}

PRESETS = {**RELEASES, **PARITY, **SMALL}
# Llama 3.2 1B and 3B tie the output matrix to the embedding table (HF's configs say so;
# whether Meta's .pth still carries an output.weight is not verified, and the notebook
# handles both), so their random stand-ins leave output.weight out.
TIED_PRESETS = {"3.2-1b", "3.2-3b"}


def preset(name: str, **changes) -> dict:
    """A fresh copy of preset NAME's params, with `changes`."""
    return {**PRESETS[name], **changes}
