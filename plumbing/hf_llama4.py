"""Read a Hugging Face Llama 4 folder as if it were Meta's layout — plumbing only.

The notebook's last section runs Llama 4 on Meta's names (testbeds/llama4_models.py lists
them). A Llama 4 from the Hugging Face hub is `Llama4ForConditionalGeneration`: its
config.json holds the text model's sizes under `text_config`, and its tensors carry
`language_model.` before the text model's names (the vision model's are left unread).
`Llama4ForCausalLM` is the text model alone. Their tensors differ from Meta's in three ways:

    feed_forward.router.weight             [experts × dim]       Meta's router_DE, transposed
    feed_forward.experts.gate_up_proj      [experts × dim × 2F]  Meta's w1 and w3, side by side
    feed_forward.experts.down_proj         [experts × F × dim]   Meta's w2

and q and k keep Meta's row order (transformers' Llama 4 rotates adjacent pairs, as Meta's
code does), so no rows are moved. `read_params` turns the config into params.json's keys,
Llama 4's included; `to_meta` names each tensor as Meta does, and says how its numbers are
laid out there, for hf_checkpoint's reader, which hands them out.
"""

from __future__ import annotations

import re
from pathlib import Path

from plumbing import checkpoint_checks, release_facts
from plumbing.friendly_errors import CheckpointError

MODEL_TYPES = ("llama4", "llama4_text")  # the whole model (text and vision), the text model

# config.json's text keys beyond Llama 3's (hf_checkpoint reads those: its `intermediate_size`
# is an expert's width here), each with params.json's name for it (Meta's llama4/args.py) and
# the kind it must be; `intermediate_size_mlp` is a dense layer's width.
CONFIG_KEYS = {
    "intermediate_size_mlp": ("ffn_hidden", int),
    "no_rope_layer_interval": ("nope_layer_interval", int),
    "use_qk_norm": ("use_qk_norm", bool),
    "attn_temperature_tuning": ("attn_temperature_tuning", bool),
    "floor_scale": ("floor_scale", float),
    "attn_scale": ("attn_scale", float),
}
MOE_KEYS = {
    "num_local_experts": "num_experts",
    "num_experts_per_tok": "top_k",
    "interleave_moe_layer_step": "interleave_moe_layer_step",
}


def text_config(config: dict, path: Path) -> dict:
    """The text model's keys: `text_config` of the whole model's config, else the config."""
    if config.get("model_type") != "llama4":
        return config
    text = config.get("text_config")
    if not isinstance(text, dict):
        raise CheckpointError(
            f"{path} describes a Llama 4 with no text_config object, where its text model's "
            "sizes belong: download config.json again from the same model."
        )
    return text


def read_params(text: dict, path: Path, read: dict) -> dict:
    """config.json's text model as params.json's keys, checked: `read`, what hf_checkpoint read
    as for Llama 3 (the sizes, RoPE; its `ffn_hidden` is an expert's width), then Llama 4's own
    keys and `moe_args`, with which layers hold experts and which skip RoPE checked against
    Meta's rules (every n-th layer)."""
    fix = "download config.json again from the same model"
    params = {key: value for key, value in read.items() if key != "ffn_hidden"}
    params["expert_hidden"] = read["ffn_hidden"]
    for key, (meta, kind) in CONFIG_KEYS.items():
        value = text.get(key)
        if value is None and key == "no_rope_layer_interval":
            continue
        if key == "attn_temperature_tuning" and checkpoint_checks.is_kind(value, int):
            value = bool(value)  # some releases' files write 4 for true
        if not checkpoint_checks.is_kind(value, kind):
            words = checkpoint_checks.KIND_WORDS[kind]
            raise CheckpointError(f"{path}: {key} is {value!r}, it must be {words}; {fix}.")
        params[meta] = float(value) if kind is float else value
    chunk = text.get("attention_chunk_size")
    if chunk is not None and not (checkpoint_checks.is_kind(chunk, int) and chunk > 0):
        raise CheckpointError(
            f"{path}: attention_chunk_size is {chunk!r}, it must be a positive integer or null; "
            f"{fix}."
        )
    params["attention_chunk_size"] = chunk
    moe = {}
    for key, meta in MOE_KEYS.items():
        if not checkpoint_checks.is_kind(text.get(key), int) or text[key] <= 0:
            raise CheckpointError(
                f"{path}: {key} is {text.get(key)!r}, it must be a positive integer; {fix}."
            )
        moe[meta] = text[key]
    params["moe_args"] = moe
    check_layer_lists(text, params, params.get("nope_layer_interval"), path)
    return params


def check_layer_lists(text: dict, params: dict, interval: int | None, path: Path) -> None:
    """transformers writes which layers hold experts (`moe_layers`) and which have RoPE
    (`no_rope_layers`, 1 where a layer has RoPE) as lists; Meta states a rule. The lists must
    be the rule's, or empty (then transformers fills the rule's in): no experts at all is an
    empty `moe_layers` written out, and then `moe_args` is dropped."""
    n_layers, step = params["n_layers"], params["moe_args"]["interleave_moe_layer_step"]
    rule_moe = [i for i in range(n_layers) if (i + 1) % step == 0]
    stated_moe = text.get("moe_layers")
    if stated_moe == [] and "moe_layers" in text:
        params["moe_args"] = None
    elif stated_moe is not None and stated_moe != rule_moe:
        raise CheckpointError(
            f"{path}: moe_layers is {stated_moe!r}, not every interleave_moe_layer_step-th "
            f"layer ({rule_moe}), which is the only pattern Meta's Llama 4 has and the notebook "
            "reads."
        )
    rope_flags = text.get("no_rope_layers") or None
    rule_rope = [int(not interval or (i + 1) % interval != 0) for i in range(n_layers)]
    if rope_flags is not None and rope_flags != rule_rope:
        if rope_flags == [1] * n_layers:
            params.pop("nope_layer_interval", None)  # RoPE in every layer
        else:
            raise CheckpointError(
                f"{path}: no_rope_layers is {rope_flags!r}, not RoPE everywhere but in every "
                f"no_rope_layer_interval-th layer ({rule_rope}), the only pattern Meta's Llama 4 "
                "has and the notebook reads."
            )


# Each Llama 4 tensor's name in transformers' text model (after any `language_model.`) →
# Meta's, and how its numbers are laid out in Meta's: "" as they are, "T" transposed, "gate"
# and "up" the two halves of the last axis.
NAMES = [
    (r"model\.embed_tokens\.weight", "tok_embeddings.weight", ""),
    (r"model\.norm\.weight", "norm.weight", ""),
    (r"lm_head\.weight", "output.weight", ""),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "attention_norm.weight", ""),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "ffn_norm.weight", ""),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", "attention.w{}.weight", ""),
    (r"model\.layers\.(\d+)\.feed_forward\.(gate|up|down)_proj\.weight", "feed_forward.{}", ""),
    (
        r"model\.layers\.(\d+)\.feed_forward\.shared_expert\.(gate|up|down)_proj\.weight",
        "feed_forward.shared_expert.{}",
        "",
    ),
    (r"model\.layers\.(\d+)\.feed_forward\.router\.weight", "feed_forward.router_DE", "T"),
    (r"model\.layers\.(\d+)\.feed_forward\.experts\.down_proj", "feed_forward.experts.w2", ""),
    (r"model\.layers\.(\d+)\.feed_forward\.experts\.gate_up_proj", "feed_forward.experts", "gu"),
]
PATTERNS = [(re.compile(f"(?:language_model\\.)?{hf}$"), meta, how) for hf, meta, how in NAMES]
SWIGLU = {"gate": "w1.weight", "up": "w3.weight", "down": "w2.weight"}  # Meta's w1, w3, w2


def to_meta(name: str) -> list[tuple[str, str]]:
    """A transformers tensor name → [(Meta's name, how)]: two for gate_up_proj, none for a
    tensor of the vision model, the name itself for one Llama 4's text model does not have."""
    for pattern, meta, how in PATTERNS:
        match = pattern.match(name)
        if not match:
            continue
        layer, *part = match.groups() or (None,)
        if part:
            meta = meta.format(SWIGLU[part[0]] if part[0] in SWIGLU else part[0])
        prefix = f"layers.{layer}." if layer is not None else ""
        if how == "gu":
            return [(prefix + meta + ".w1", "gate"), (prefix + meta + ".w3", "up")]
        return [(prefix + meta, how)]
    if name.startswith(("vision_model.", "multi_modal_projector.")):
        return []  # the image side of Llama4ForConditionalGeneration
    return [(name, "")]  # not Llama 4's: the check names it


def meta_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    """A tensor's shape in Meta's layout, from the file's (`how`: to_meta's)."""
    if how == "T":
        return shape[::-1]
    return (*shape[:-1], shape[-1] // 2) if how in ("gate", "up") else shape


def read_as_meta(handle, name: str, how: str):
    """A tensor from the open safetensors file, as Meta lays it out: transposed (a view), or
    the half of gate_up_proj Meta's w1 or w3 is, read alone (not the whole of it twice)."""
    if how in ("gate", "up"):
        stored = handle.get_slice(name)
        half = stored.get_shape()[-1] // 2
        return stored[:, :, :half] if how == "gate" else stored[:, :, half:]
    tensor = handle.get_tensor(name)
    return tensor.T if how == "T" else tensor


def is_llama4(params: dict) -> bool:
    """Whether these params (read_params') are a Llama 4's: they hold its own keys."""
    return any(key in params for key in release_facts.LLAMA4_PARAMS)
