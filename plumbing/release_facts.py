"""What params.json does not say about Meta's Llama 3 releases — facts, no math.

params.json gives every size, but not the context length a release was trained for,
nor the factor of Llama 3.1+'s scaled RoPE (it only says *whether* RoPE is scaled). Also
the architectures met beside Llama 3 that the notebook does not teach, and what each adds.
"""

from __future__ import annotations

# Context lengths Meta trained for.
CONTEXT_LLAMA3 = 8192  # Llama 3
CONTEXT_SCALED_ROPE = 131072  # Llama 3.1 and later (use_scaled_rope)

# Scaled RoPE's other constants, the same in every release that scales (a Hugging Face
# config.json states them; params.json does not).
ROPE_LOW_FREQ_FACTOR, ROPE_HIGH_FREQ_FACTOR, ROPE_ORIGINAL_CONTEXT = 1.0, 4.0, 8192

# Meta-Llama-3-8B's params.json: the notebook counts what quantization saves on the 8B.
LLAMA3_8B_PARAMS = {
    "dim": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "multiple_of": 1024,
    "ffn_dim_multiplier": 1.3,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
}

# The scaled-RoPE factor by release.
ROPE_SCALE_FACTOR_3_1 = 8.0  # Llama 3.1 8B/70B/405B, Llama 3.3 70B
ROPE_SCALE_FACTOR_3_2 = 32.0  # Llama 3.2 1B and 3B


def context_length(params: dict) -> int:
    """The positions the model was trained to read: as a Hugging Face config.json or a GGUF
    file states it (`context_length`), else by release: Llama 3 was trained on 8,192
    positions, releases with scaled RoPE (3.1+) on 131,072 (params.json does not say)."""
    if params.get("context_length"):
        return params["context_length"]
    return CONTEXT_SCALED_ROPE if params.get("use_scaled_rope") else CONTEXT_LLAMA3


def rope_scale_factor(params: dict) -> tuple[float | None, str]:
    """The scaled-RoPE factor of the release these params belong to, and why; None if unscaled.

    Rule: among Meta's releases with use_scaled_rope, only Llama 3.2's text models
    (1B: dim 2048, 3B: dim 3072) have dim ≤ 3072, and they use 32; every other one
    (3.1 8B/70B/405B, 3.3 70B) uses 8.
    """
    if not params.get("use_scaled_rope"):
        return None, "use_scaled_rope is not set: plain Llama 3 RoPE"
    if params["dim"] <= 3072:
        return ROPE_SCALE_FACTOR_3_2, f"dim {params['dim']} ≤ 3072: a Llama 3.2 model"
    return ROPE_SCALE_FACTOR_3_1, f"dim {params['dim']} > 3072: a Llama 3.1/3.3 model"


# Architectures met on the hub, in Ollama and in GGUF files that the notebook does not teach,
# each with what it adds to Llama 3 (facts, from their releases). By the name config.json's
# model_type and GGUF's general.architecture give it.
NOT_TAUGHT = {
    "qwen2": "biases on the query, key and value projections",
    "qwen3_moe": "a mixture of experts in place of the feed-forward network",
    "mistral": "attention over a sliding window",
    "gemma3": "norms after attention and the feed-forward too, and a scaled embedding",
    "llama4": "a mixture of experts, chunked attention and layers without RoPE",
}
# the same architectures under their other names: GGUF's, and the text models' model_type
NOT_TAUGHT |= {"qwen3moe": NOT_TAUGHT["qwen3_moe"], "llama4_text": NOT_TAUGHT["llama4"]}
NOT_TAUGHT |= {"gemma3_text": NOT_TAUGHT["gemma3"]}
# Meta's own layout says the same through params.json: the keys of its Llama 4 release (fact:
# llama_models/llama4/args.py), each with what it adds.
LLAMA4_PARAMS = {
    "moe_args": "a mixture of experts in place of the feed-forward network",
    "nope_layer_interval": "layers without RoPE",
    "attention_chunk_size": "attention within chunks of positions",
    "use_qk_norm": "an L2 norm on queries and keys",
}


# What llama.cpp assumes of a Llama 4 GGUF file, which states none of it (facts: its
# src/models/llama4.cpp): chunks of 8,192 positions, every fourth layer without RoPE (the file
# may state another step as attention.sliding_window_pattern), the NoPE layers' temperature
# from position 8,191 on (counting from 0) with scale 0.1, and the norm on queries and keys
# unless the model has 128 experts (Maverick has none). A file that states
# attention.sliding_window = 0 has no chunks and RoPE in every layer.
LLAMA_CPP_LLAMA4 = {
    "attention_chunk_size": 8192,
    "nope_layer_interval": 4,
    "attn_temperature_tuning": True,
    "floor_scale": 8192.0,
    "attn_scale": 0.1,
    "experts_without_qk_norm": 128,
}
