"""Read Meta's released Llama 4 files as the reference code's names — plumbing only.

The notebook's last section reads a Llama 4 under the names Meta's reference code gives its
modules (testbeds/llama4_models.py lists them). Meta's own downloads of Llama 4 (Scout,
Maverick: `consolidated.00.pth …`, one file per model-parallel rank) hold the text model under
other names, each tensor split across the files by a rule of its own. The reference code
joins them (llama_models/checkpoint.py: `convert_moe_weights`, `reshard_mp`) and renames them
(the load hooks of llama4/model.py, ffn.py and moe.py); transformers' converter
(convert_llama4_weights_to_hf.py) reads them the same way. Per layer, in each file:

    attention.wqkv.weight                   the file's rows of wq, then of wk, then of wv
    attention.wqkv.layer_norm_weight        attention_norm.weight (the same in every file)
    attention.wo.weight                     the file's columns of wo
    feed_forward.mlp.fc1_weight             the file's rows of w1, then of w3 (a dense layer)
    feed_forward.mlp.fc2_weight             the file's columns of w2
    feed_forward.mlp.layer_norm_weight      ffn_norm.weight (a dense layer)
    feed_forward.norm.weight                ffn_norm.weight (a layer of experts)
    feed_forward.router_DE                  the router (the same in every file)
    feed_forward.experts.moe_w_in_eD_F      experts.w1 [experts·dim × the file's F]
    feed_forward.experts.moe_w_swiglu_eD_F  experts.w3, the same way
    feed_forward.experts.moe_w_out_eF_D     experts.w2 [experts·the file's F × dim]
    feed_forward.w_in_shared_FD.weight      shared_expert.w1.weight: the file's rows
    feed_forward.w_swiglu_FD.weight         shared_expert.w3.weight: the file's rows
    feed_forward.w_out_shared_DF.weight     shared_expert.w2.weight: the file's columns

and `tok_embeddings.weight` and `output.weight` split by rows (the vocabulary), `norm.weight`
the same in every file. The image side (`vision_…`), RoPE's stored frequencies and the training
statistics and kernel states beside the weights (`…_extra_state`, `…gate_stats…`) are left
unread. `ReleasedWeights` hands out each tensor under the reference code's name, joined from
the files when it is looked up.
"""

from __future__ import annotations

import re

import torch

from plumbing.friendly_errors import CheckpointError
from plumbing.tensor_names import NamedWeights

# A layer's tensor in Meta's released files → the reference code's names for its parts, and
# how the files split it: "same" in every file; by "rows" or "columns"; "qkv": each file's
# rows of wq, wk and wv stacked; "halves": each file's rows of w1, then of w3; "experts in" /
# "experts out": each expert's F columns / rows, the experts flattened into the first axis.
LAYER = {
    "attention.wqkv.weight": (
        ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
        "qkv",
    ),
    "attention.wqkv.layer_norm_weight": (("attention_norm.weight",), "same"),
    "attention.wo.weight": (("attention.wo.weight",), "columns"),
    "feed_forward.mlp.fc1_weight": (("feed_forward.w1.weight", "feed_forward.w3.weight"), "halves"),
    "feed_forward.mlp.fc2_weight": (("feed_forward.w2.weight",), "columns"),
    "feed_forward.mlp.layer_norm_weight": (("ffn_norm.weight",), "same"),
    "feed_forward.norm.weight": (("ffn_norm.weight",), "same"),
    "feed_forward.router_DE": (("feed_forward.router_DE",), "same"),
    "feed_forward.experts.moe_w_in_eD_F": (("feed_forward.experts.w1",), "experts in"),
    "feed_forward.experts.moe_w_swiglu_eD_F": (("feed_forward.experts.w3",), "experts in"),
    "feed_forward.experts.moe_w_out_eF_D": (("feed_forward.experts.w2",), "experts out"),
    "feed_forward.w_in_shared_FD.weight": (("feed_forward.shared_expert.w1.weight",), "rows"),
    "feed_forward.w_swiglu_FD.weight": (("feed_forward.shared_expert.w3.weight",), "rows"),
    "feed_forward.w_out_shared_DF.weight": (("feed_forward.shared_expert.w2.weight",), "columns"),
}
TOP = {
    "tok_embeddings.weight": (("tok_embeddings.weight",), "rows"),
    "output.weight": (("output.weight",), "rows"),
    "norm.weight": (("norm.weight",), "same"),
}
# Beside the text model's weights, left unread (the reference code's hooks drop them too).
UNREAD = re.compile(
    r"^(vision_|rope\.freqs$|freq_cis)|_extra_state$|gate_stats|expert_activation_DE$"
)


def is_released(state_dict: dict) -> bool:
    """Whether a file holds Meta's released Llama 4 names (its fused `wqkv`)."""
    return any(name.endswith("attention.wqkv.weight") for name in state_dict)


def rule(name: str) -> tuple[str, tuple[str, ...], str]:
    """A released tensor's layer prefix ("layers.3." or ""), the reference names of its parts,
    and how the files split it."""
    layer = re.match(r"layers\.\d+\.", name)
    prefix = layer.group(0) if layer else ""
    found = (LAYER if layer else TOP).get(name.removeprefix(prefix))
    if found is None:
        raise CheckpointError(
            f"unexpected tensor {name} in Meta's Llama 4 files: this is not the bf16 text model "
            "of Meta's Llama 4 release (an FP8 or INT4 release, or another model); download "
            "the bf16 one."
        )
    return prefix, *found


def cat(pieces: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The pieces side by side along `dim`; one piece as it is (a view: no copy of it)."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=dim)


def join(pieces: list[torch.Tensor], how: str, part: int, experts: int, q_share: float):
    """One reference tensor from each file's piece (`part`: which of a fused tensor's parts;
    `q_share`: the queries' share of `wqkv`'s rows). Works on meta tensors too, for shapes."""
    if how == "same":
        return pieces[0]
    if how in ("rows", "columns"):
        return cat(pieces, 0 if how == "rows" else -1)
    if how == "halves":  # each file: [its rows of w1; its rows of w3]
        return cat([piece.unflatten(0, (2, -1))[part] for piece in pieces], 0)
    if how == "qkv":  # each file: [its rows of wq; of wk; of wv]
        parts = []
        for piece in pieces:
            q_rows = round(piece.shape[0] * q_share)
            kv_rows = (piece.shape[0] - q_rows) // 2
            parts.append(piece.split([q_rows, kv_rows, kv_rows])[part])
        return cat(parts, 0)
    # each file: [experts·dim × its F] ("experts in") or [experts·its F × dim] ("experts out")
    by_expert = [piece.reshape(experts, -1, piece.shape[-1]) for piece in pieces]
    return cat(by_expert, -1 if how == "experts in" else 1)


class ReleasedWeights(NamedWeights):
    """Meta's released Llama 4 files (one or several), memory-mapped, read under the reference
    code's names: each tensor joined from its pieces when it is looked up."""

    files = "consolidated.*.pth"

    def __init__(self, shards: list[dict[str, torch.Tensor]], params: dict):
        self.shards = shards
        self.experts = (params.get("moe_args") or {}).get("num_experts", 1)
        n_kv_heads = params.get("n_kv_heads") or params["n_heads"]
        self.q_share = params["n_heads"] / (params["n_heads"] + 2 * n_kv_heads)
        self.parts: dict[str, tuple[str, str, int]] = {}  # reference name → released, how, part
        self.shapes, self.dtypes = {}, {}
        released_names = dict.fromkeys(name for shard in shards for name in shard)  # all files'
        for released in released_names:
            if UNREAD.search(released):
                continue
            prefix, reference_names, how = rule(released)
            missing = [i for i, shard in enumerate(shards) if released not in shard]
            if missing:
                raise CheckpointError(
                    f"tensor {released} is missing from consolidated.{missing[0]:02d}.pth: "
                    "download that file again."
                )
            shapes = [torch.empty(shard[released].shape, device="meta") for shard in shards]
            if how == "qkv" and any(
                (shape.shape[0] * params["n_heads"]) % (params["n_heads"] + 2 * n_kv_heads)
                for shape in shapes
            ):
                raise CheckpointError(
                    f"{released} has {shapes[0].shape[0]} rows in a file, which do not divide "
                    f"into n_heads {params['n_heads']} and n_kv_heads {n_kv_heads} as params.json"
                    " states them: copy params.json from the same download as the weights."
                )
            for part, name in enumerate(reference_names):
                self.parts[prefix + name] = (released, how, part)
                self.shapes[prefix + name] = tuple(self.join(shapes, how, part).shape)
                self.dtypes[prefix + name] = shards[0][released].dtype

    def join(self, pieces: list[torch.Tensor], how: str, part: int) -> torch.Tensor:
        return join(pieces, how, part, self.experts, self.q_share)

    def describe(self, name: str) -> str:
        return f"{name} (from {self.parts[name][0]})"

    def note(self) -> str:
        n = len(self.shards)
        return f", {n} file{'s' * (n != 1)} of Meta's Llama 4 release"

    def __getitem__(self, name: str) -> torch.Tensor:
        released, how, part = self.parts[name]
        return self.join([shard[released] for shard in self.shards], how, part)
