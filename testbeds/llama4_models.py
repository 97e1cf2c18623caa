"""Llama 4's text model in three places: Meta's names, transformers' and Meta's reference code.

A Llama 4 checkpoint here is in the layout Meta's reference code loads
(`llama_models/llama4/model.py`, no load hooks needed): params.json with Meta's keys, and the
tensors under the names its `Transformer.state_dict()` gives. Beside Llama 3's:

    layers.{i}.feed_forward.router_DE                  [dim × experts]      the router
    layers.{i}.feed_forward.experts.w1 / w3            [experts × dim × expert_hidden]
    layers.{i}.feed_forward.experts.w2                 [experts × expert_hidden × dim]
    layers.{i}.feed_forward.shared_expert.w1.weight …  [expert_hidden × dim], as Llama 3's w1

in the mixture-of-experts layers (every `interleave_moe_layer_step`-th); the other layers keep
Llama 3's `feed_forward.w1/w2/w3`. Transformers' `Llama4ForCausalLM` holds the same numbers:
its router is `router_DE` transposed, its `gate_up_proj` is w1 and w3 side by side, and its
query and key rows are in Meta's order (its RoPE, like Meta's, rotates adjacent pairs).

`hf_config`, `meta_from_hf` and `hf_from_meta` convert; `write_released` writes such a folder as
Meta's Llama 4 downloads hold it (plumbing/meta_llama4.py: fused, renamed, split across
model-parallel files). Nothing here computes a part of the model.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch
from transformers import Llama4ForCausalLM, Llama4TextConfig
from transformers.initialization import no_init_weights

from plumbing import model_sizes

# The tiny Llama 4 trained by generators/train_llama4_checkpoint.py: Llama 3's tiny shape,
# Llama 4's vocabulary (200,000 ranks + 2,048 special tokens) and each of its changes: a
# mixture of four experts in every second layer, no RoPE in every fourth, an L2 norm on queries
# and keys where there is RoPE, and attention within chunks of 8 positions there (the release:
# 8,192), so that the Hitchhiker's prompt spans three chunks.
TINY = {
    "dim": 64,
    "n_layers": 4,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 202048,
    "multiple_of": 32,
    "ffn_dim_multiplier": 1.3,
    "ffn_exp": 4.0,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "use_scaled_rope": False,
    "nope_layer_interval": 4,
    "use_qk_norm": True,
    "attn_temperature_tuning": True,
    "floor_scale": 8192.0,
    "attn_scale": 0.1,
    "attention_chunk_size": 8,
    "moe_args": {
        "num_experts": 4,
        "capacity_factor": 1.0,
        "auto_scale_F": True,
        "top_k": 1,
        "interleave_moe_layer_step": 2,
    },
}


# transformers' config keys, each with the filled sizes' name for it (model_sizes.filled)
HF_CONFIG = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "intermediate_size": "expert_hidden",
    "intermediate_size_mlp": "ffn_hidden",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "head_dim": "head_dim",
    "rms_norm_eps": "norm_eps",
    "no_rope_layer_interval": "nope_layer_interval",
    "use_qk_norm": "use_qk_norm",
    "attention_chunk_size": "attention_chunk_size",
    "attn_temperature_tuning": "attn_temperature_tuning",
    "attn_scale": "attn_scale",
}
HF_MOE_CONFIG = {"num_local_experts": "num_experts", "num_experts_per_tok": "top_k"}
HF_MOE_CONFIG |= {"interleave_moe_layer_step": "interleave_moe_layer_step"}


def hf_config(params: dict, bos: int = 200000, eos: int = 200001) -> Llama4TextConfig:
    """transformers' config for the model params.json describes."""
    sizes = model_sizes.filled(params)
    return Llama4TextConfig(
        **{key: sizes[ours] for key, ours in HF_CONFIG.items()},
        **{key: sizes["moe_args"][ours] for key, ours in HF_MOE_CONFIG.items()},
        rope_parameters=rope_parameters(params),
        floor_scale=int(sizes["floor_scale"]),
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=eos,
        max_position_embeddings=1 << 17,
        attn_implementation="eager",
    )


def rope_parameters(params: dict) -> dict:
    """transformers' RoPE settings for Meta's: Llama 3's scaling where use_scaled_rope is set,
    with the factor (16 unless stated), the high-frequency factor (1 unless stated), and the
    low-frequency factor 1 and original context 8,192 that Meta's apply_scaling fixes (facts:
    llama_models/llama4/args.py, model.py)."""
    plain = {"rope_type": "default", "rope_theta": params["rope_theta"]}
    if not params.get("use_scaled_rope"):
        return plain
    return plain | {
        "rope_type": "llama3",
        "factor": params.get("rope_scaling_factor", 16.0),
        "high_freq_factor": params.get("rope_high_freq_factor", 1.0),
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    }


def hf_model(params: dict, meta: dict[str, torch.Tensor]) -> Llama4ForCausalLM:
    """transformers' `Llama4ForCausalLM` of these sizes holding Meta's tensors `meta`, in
    float32."""
    with no_init_weights():  # every parameter is loaded next: no random start first
        model = Llama4ForCausalLM(hf_config(params)).float().eval()
    model.load_state_dict({name: t.float() for name, t in hf_from_meta(meta, params).items()})
    return model


HF_NAMES = {  # Meta's name → transformers', for the tensors one name maps to another
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "feed_forward.gate_proj.weight",
    "feed_forward.w3.weight": "feed_forward.up_proj.weight",
    "feed_forward.w2.weight": "feed_forward.down_proj.weight",
    "feed_forward.shared_expert.w1.weight": "feed_forward.shared_expert.gate_proj.weight",
    "feed_forward.shared_expert.w3.weight": "feed_forward.shared_expert.up_proj.weight",
    "feed_forward.shared_expert.w2.weight": "feed_forward.shared_expert.down_proj.weight",
    "feed_forward.experts.w2": "feed_forward.experts.down_proj",
}


def meta_from_hf(hf: dict[str, torch.Tensor], params: dict) -> dict[str, torch.Tensor]:
    """transformers' state dict under Meta's names (every expected tensor, nothing else)."""
    out = {}
    for name in model_sizes.expected_shapes(params):
        if not name.startswith("layers."):
            top = {
                "tok_embeddings.weight": "model.embed_tokens.weight",
                "norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight",
            }[name]
            out[name] = hf[top]
            continue
        _, layer, rest = name.split(".", 2)
        prefix = f"model.layers.{layer}."
        if rest == "feed_forward.router_DE":
            out[name] = hf[prefix + "feed_forward.router.weight"].T
        elif rest in ("feed_forward.experts.w1", "feed_forward.experts.w3"):
            gate, up = hf[prefix + "feed_forward.experts.gate_up_proj"].chunk(2, dim=-1)
            out[name] = gate if rest.endswith("w1") else up
        else:
            out[name] = hf[prefix + HF_NAMES[rest]]
    return {name: tensor.detach().contiguous().clone() for name, tensor in out.items()}


def hf_from_meta(meta: dict[str, torch.Tensor], params: dict) -> dict[str, torch.Tensor]:
    """Meta's state dict under transformers' names, for `Llama4ForCausalLM.load_state_dict`."""
    back = {meta_name: hf_name for meta_name, hf_name in HF_NAMES.items()}
    out = {
        "model.embed_tokens.weight": meta["tok_embeddings.weight"],
        "model.norm.weight": meta["norm.weight"],
        "lm_head.weight": meta.get("output.weight", meta["tok_embeddings.weight"]),
    }
    for layer in range(params["n_layers"]):
        prefix, hf_prefix = f"layers.{layer}.", f"model.layers.{layer}."
        for name, tensor in meta.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if rest == "feed_forward.router_DE":
                out[hf_prefix + "feed_forward.router.weight"] = tensor.T
            elif rest == "feed_forward.experts.w1":
                up = meta[prefix + "feed_forward.experts.w3"]
                out[hf_prefix + "feed_forward.experts.gate_up_proj"] = torch.cat(
                    [tensor, up], dim=-1
                )
            elif rest != "feed_forward.experts.w3":
                out[hf_prefix + back[rest]] = tensor
    return {name: tensor.contiguous() for name, tensor in out.items()}


def released_pieces(name: str, tensor: torch.Tensor, meta: dict, n: int) -> dict:
    """One tensor of the reference code's state dict → {released name: [each file's piece]},
    split as Meta's release splits it (the rules plumbing/meta_llama4.py reads, written here
    the other way round); {} where the fused tensor is written with another of its parts."""
    prefix = ".".join(name.split(".")[:2]) + "." if name.startswith("layers.") else ""
    rest = name.removeprefix(prefix)
    moe = prefix + "feed_forward.router_DE" in meta
    experts = meta[prefix + "feed_forward.router_DE"].shape[1] if moe else 0

    def rows(t):
        return list(t.chunk(n, dim=0))

    def columns(t):
        return list(t.chunk(n, dim=-1))

    if rest in ("tok_embeddings.weight", "output.weight"):
        return {name: rows(tensor)}
    if rest in ("norm.weight", "feed_forward.router_DE"):
        return {name: [tensor] * n}
    if rest == "attention.wq.weight":
        q, k, v = (rows(meta[prefix + f"attention.w{x}.weight"]) for x in "qkv")
        return {prefix + "attention.wqkv.weight": [torch.cat(p) for p in zip(q, k, v, strict=True)]}
    if rest == "attention_norm.weight":
        return {prefix + "attention.wqkv.layer_norm_weight": [tensor] * n}
    if rest == "attention.wo.weight":
        return {name: columns(tensor)}
    if rest == "ffn_norm.weight":
        released = "feed_forward.norm.weight" if moe else "feed_forward.mlp.layer_norm_weight"
        return {prefix + released: [tensor] * n}
    if rest == "feed_forward.w1.weight":
        w3 = rows(meta[prefix + "feed_forward.w3.weight"])
        halves = zip(rows(tensor), w3, strict=True)
        return {prefix + "feed_forward.mlp.fc1_weight": [torch.cat(p) for p in halves]}
    if rest == "feed_forward.w2.weight":
        return {prefix + "feed_forward.mlp.fc2_weight": columns(tensor)}
    if rest in ("feed_forward.experts.w1", "feed_forward.experts.w3"):
        released = "moe_w_in_eD_F" if rest.endswith("w1") else "moe_w_swiglu_eD_F"
        pieces = [piece.reshape(experts * tensor.shape[1], -1) for piece in columns(tensor)]
        return {prefix + "feed_forward.experts." + released: pieces}
    if rest == "feed_forward.experts.w2":
        pieces = [piece.reshape(-1, tensor.shape[-1]) for piece in tensor.chunk(n, dim=1)]
        return {prefix + "feed_forward.experts.moe_w_out_eF_D": pieces}
    shared = {
        "feed_forward.shared_expert.w1.weight": ("w_in_shared_FD.weight", rows),
        "feed_forward.shared_expert.w3.weight": ("w_swiglu_FD.weight", rows),
        "feed_forward.shared_expert.w2.weight": ("w_out_shared_DF.weight", columns),
    }
    if rest in shared:
        released, split = shared[rest]
        return {prefix + "feed_forward." + released: split(tensor)}
    return {}  # wk, wv (in wqkv), w3 (in fc1_weight)


def write_released(meta_folder: Path, out: Path, n: int) -> Path:
    """A Llama 4 folder in the reference code's layout → the same model as Meta's release holds
    it, in `n` files `consolidated.00.pth …` (n divides the key/value heads, as in Scout's 8 of
    8), with what the release keeps beside the weights (a kernel's state as an io.BytesIO, RoPE's
    frequencies, an image-side tensor, expert statistics), which a reader leaves unread."""
    meta = torch.load(Path(meta_folder) / "consolidated.00.pth", weights_only=True)
    files: list[dict] = [{} for _ in range(n)]
    for name, tensor in meta.items():
        for released, pieces in released_pieces(name, tensor, meta, n).items():
            for file, piece in zip(files, pieces, strict=True):
                file[released] = piece.contiguous().clone()  # its own storage, not the whole
    params = json.loads((Path(meta_folder) / "params.json").read_text())
    for j, file in enumerate(files):
        file["rope.freqs"] = torch.ones(params["dim"] // params["n_heads"] // 2)
        file["vision_projection.weight"] = torch.zeros(4, 8)
        file["layers.0.attention.wqkv._extra_state"] = io.BytesIO(b"kernel state")
        if "layers.1.feed_forward.router_DE" in meta:
            file["layers.1.feed_forward.global_gate_stats_3E"] = torch.zeros(3, 4)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(file, out / f"consolidated.{j:02d}.pth")
    shutil.copy(Path(meta_folder) / "params.json", out / "params.json")
    return out
