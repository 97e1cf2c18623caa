"""A Meta-layout checkpoint as transformers sees it: its `LlamaConfig`, Llama 3.1's RoPE scaling
in Hugging Face's words, q/k rows in Hugging Face's order, and a `LlamaForCausalLM` holding its
weights.

Hugging Face stores each head's q/k rows in a different order (RoPE pairs half a head apart
instead of adjacent), so the Meta rows are permuted on the way in — the same conversion as
Hugging Face's own Meta→HF converter. The parity tests use the model as a reference
(tests/support/reference_models.py); testbeds/hf_folder.py saves it as a model folder, and
generators/train_embedded_checkpoint.py trains one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.initialization import no_init_weights

from plumbing import checkpoints, model_sizes, release_facts, tensor_names
from plumbing.hf_checkpoint import meta_rows_to_hf  # Meta's q/k rows in Hugging Face's order

# Each Llama layer's tensors, Meta's name → Hugging Face's, read off the one name map (not
# Qwen3's norms of each query and key head, which Llama has not).
HF_LAYER_KEYS = {
    meta.removeprefix("layers.{i}."): hf.removeprefix("model.layers.{i}.")
    for meta, hf in tensor_names.HUGGING_FACE.names.items()
    if meta.startswith("layers.{i}.") and not meta.endswith(("q_norm.weight", "k_norm.weight"))
}


def load_meta_checkpoint(checkpoint_dir: Path):
    """The checkpoint's tensors by name (one file or Meta's shards), as the notebook reads them."""
    return checkpoints.open_checkpoint(Path(checkpoint_dir)).weights


def hf_rope_scaling(factor: float) -> dict:
    """Llama 3.1+ scaled RoPE as a Hugging Face config states it (rope_type "llama3")."""
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": release_facts.ROPE_LOW_FREQ_FACTOR,
        "high_freq_factor": release_facts.ROPE_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": release_facts.ROPE_ORIGINAL_CONTEXT,
    }


def hf_config(
    params: dict, tied_output: bool = False, rope_scale_factor: float | None = None
) -> LlamaConfig:
    """transformers' LlamaConfig for these params.json sizes: the one place a config is built.

    rope_scale_factor: Llama 3.1+ scaled RoPE (HF's rope_type "llama3"); required when
    params.json sets use_scaled_rope, since the file does not say which factor.
    """
    rope_scaling = None
    if params.get("use_scaled_rope"):
        if rope_scale_factor is None:
            raise ValueError(
                "use_scaled_rope is set: pass rope_scale_factor (8 for Llama 3.1/3.3, 32 for 3.2)"
            )
        rope_scaling = hf_rope_scaling(rope_scale_factor)
    return LlamaConfig(
        vocab_size=params["vocab_size"],
        hidden_size=params["dim"],
        intermediate_size=model_sizes.filled(params)["ffn_hidden"],
        num_hidden_layers=params["n_layers"],
        num_attention_heads=params["n_heads"],
        num_key_value_heads=model_sizes.filled(params)["n_kv_heads"],
        head_dim=model_sizes.head_dim(params),
        rms_norm_eps=params["norm_eps"],
        rope_theta=params["rope_theta"],
        rope_scaling=rope_scaling,
        max_position_embeddings=release_facts.context_length(params),
        tie_word_embeddings=tied_output,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        bos_token_id=128000,  # <|begin_of_text|>
        eos_token_id=128001,  # <|end_of_text|>
        architectures=["LlamaForCausalLM"],
    )


def hf_model(
    checkpoint_dir: Path,
    params: dict,
    dtype: torch.dtype = torch.float32,
    rope_scale_factor: float | None = None,
):
    """transformers' LlamaForCausalLM holding the checkpoint's weights (q/k rows in HF's order)."""
    state_dict = load_meta_checkpoint(checkpoint_dir)
    n_kv_heads = model_sizes.filled(params)["n_kv_heads"]
    tied = "output.weight" not in state_dict
    config = hf_config(params, tied, rope_scale_factor)
    hf = {
        "model.embed_tokens.weight": state_dict["tok_embeddings.weight"],
        "model.norm.weight": state_dict["norm.weight"],
    }
    hf["lm_head.weight"] = state_dict["tok_embeddings.weight" if tied else "output.weight"]
    for i in range(params["n_layers"]):
        for meta_key, hf_key in HF_LAYER_KEYS.items():
            tensor = state_dict[f"layers.{i}.{meta_key}"]
            if meta_key == "attention.wq.weight":
                tensor = meta_rows_to_hf(tensor, params["n_heads"])
            elif meta_key == "attention.wk.weight":
                tensor = meta_rows_to_hf(tensor, n_kv_heads)
            hf[f"model.layers.{i}.{hf_key}"] = tensor
    with no_init_weights():  # every parameter is loaded below: no random start first (0.5 s)
        model = LlamaForCausalLM(config)
    model.tie_weights()  # which no_init_weights skips with the random start
    model.load_state_dict({k: v.to(torch.float32) for k, v in hf.items()}, strict=True)
    return model.to(dtype).eval()
