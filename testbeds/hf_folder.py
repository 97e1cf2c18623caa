"""Write a Meta-layout checkpoint as a Hugging Face model folder — for tests and benchmarks.

    python -m testbeds.hf_folder META_FOLDER OUT [--shard-size 2GB] [--spelling 4|5]
                                  [--scale-factor 8] [--stream]

Default: transformers builds LlamaForCausalLM from the Meta files (testbeds/transformers_llama.py,
which reorders the q/k rows as Hugging Face's own converter does) and writes it with
`save_pretrained` — config.json, model.safetensors or sharded files with their index — in
bfloat16, like the hub's files. tokenizer.json is made from Llama 3's tokenizer.model by
transformers' TikTokenConverter. `--spelling` rewrites config.json's RoPE keys as
transformers 4.x wrote them (top-level rope_theta, rope_scaling; the hub's files) or as 5.x
does (rope_parameters).

`--stream` writes the safetensors files directly, one shard at a time, from the
memory-mapped Meta file, for models too large to build in memory (the 8B benchmark);
the names, row order and config are the same.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM
from transformers.convert_slow_tokenizer import TikTokenConverter

import tokenizer_setup
from plumbing import checkpoints, release_facts, tensor_names
from testbeds import transformers_llama

SPECIAL_TOKENS = tokenizer_setup.special_token_names()


@functools.cache
def llama3_tokenizer_json() -> str:
    """Llama 3's tokenizer.json as transformers' converter writes it (seconds: made once)."""
    model = tokenizer_setup.find_tokenizer_model(None)
    converter = TikTokenConverter(
        vocab_file=str(model),
        pattern=tokenizer_setup.SPLIT_PATTERN,
        extra_special_tokens=SPECIAL_TOKENS,
    )
    return converter.converted().to_str(pretty=True)


def write_tokenizer_json(out: Path) -> None:
    (out / "tokenizer.json").write_text(llama3_tokenizer_json(), encoding="utf-8")


# Qwen3's special tokens, in its order after its ranked tokens (a fact); the first three are
# the ones the notebook uses, the others stand in for the rest (tool calls, thinking).
QWEN3_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
]


def qwen_tokenizer(model):
    """Hugging Face's `tokenizers` around a BPE `model` as Qwen3's tokenizer.json has it: NFC,
    Qwen's split pattern, then the bytes in byte-level BPE's alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers

    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(tokenizer_setup.QWEN_SPLIT_PATTERN), behavior="isolated")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def write_qwen_tokenizer_json(out: Path, texts: list[str], size: int = 4_000) -> Path:
    """A byte-level BPE laid out as Qwen3's tokenizer.json is, trained here on `texts` by
    Hugging Face's `tokenizers` (Qwen3's own vocabulary, 151,669 tokens, is not here): NFC,
    Qwen's split pattern, the 256 bytes as ids 0 … 255, each merge's token next, one merge a
    token in rank order, then ChatML's special tokens."""
    from tokenizers import models, pre_tokenizers, trainers

    tokenizer = qwen_tokenizer(models.BPE())
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(QWEN3_SPECIAL_TOKENS[:3])
    tokenizer.add_tokens(QWEN3_SPECIAL_TOKENS[3:])  # Qwen3's are added, not special, too
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    return out / "tokenizer.json"


def respell_config(out: Path, spelling: str) -> None:
    """Rewrite config.json's RoPE keys in transformers 4.x's spelling or 5.x's."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    rope = dict(config.pop("rope_parameters", None) or {})
    scaling = config.pop("rope_scaling", None)
    theta = config.pop("rope_theta", rope.pop("rope_theta", None))
    if scaling is None and rope.get("rope_type", "default") != "default":
        scaling = rope
    if spelling == "4":
        config["rope_theta"] = theta
        config["rope_scaling"] = scaling
    else:
        config["rope_parameters"] = (
            {"rope_type": "default", "rope_theta": theta}
            if scaling is None
            else {**scaling, "rope_theta": theta}
        )
    path.write_text(json.dumps(config, indent=2) + "\n")


def rope_scaling(params: dict, factor: float | None) -> dict | None:
    if not params.get("use_scaled_rope"):
        return None
    if factor is None:
        factor = release_facts.rope_scale_factor(params)[0]
    return transformers_llama.hf_rope_scaling(factor)


def save_with_transformers(
    meta: Path,
    out: Path,
    shard_size: str | None = None,
    spelling: str = "5",
    scale_factor: float | None = None,
) -> Path:
    params = checkpoints.read_params(meta)
    factor = (rope_scaling(params, scale_factor) or {}).get("factor")
    model = transformers_llama.hf_model(
        meta, params, dtype=torch.bfloat16, rope_scale_factor=factor
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=shard_size or "50GB")
    write_tokenizer_json(out)
    respell_config(out, spelling)
    return out


# A small Qwen3: tied, grouped queries, heads of 32 features where 64 / 4 would give 16.
QWEN3_SIZES = {
    "vocab_size": 128_256,  # Llama 3's vocabulary: the one the notebook's tokenizer reads
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "max_position_embeddings": 40_960,
}


def write_random_qwen3(
    folder: Path,
    seed: int = 0,
    vocab_size: int = 128_256,
    tokenizer: bool = True,
    texts: list[str] | None = None,
) -> Path:
    """A random Qwen3 folder as the hub lays one out, written by transformers' own
    `Qwen3ForCausalLM` (bfloat16 safetensors), every RMSNorm's gains random so that a gain read
    in the wrong order shows; Llama 3's tokenizer.json beside it unless `tokenizer` is False,
    or with `texts`, a vocabulary like Qwen3's trained on them, its rows a multiple of 64
    past its tokens as Qwen3's are."""
    if texts is not None:
        data = json.loads(write_qwen_tokenizer_json(folder, texts).read_text())
        n_tokens = len(data["model"]["vocab"]) + len(data["added_tokens"])
        vocab_size, tokenizer = 64 * (n_tokens // 64 + 1), False
    torch.manual_seed(seed)
    config = Qwen3Config(**(QWEN3_SIZES | {"vocab_size": vocab_size}))
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):  # q_norm, k_norm and the others
                parameter.copy_(1 + 0.5 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    if tokenizer:
        write_tokenizer_json(folder)
    return folder


def save_streaming(
    meta: Path,
    out: Path,
    shard_bytes: int = 5 * 2**30,
    spelling: str = "4",
    scale_factor: float | None = None,
    tokenizer: bool = True,
) -> Path:
    """Meta's folder `meta` in Hugging Face's layout under `out`, a tensor at a time (shards of
    `shard_bytes`); `tokenizer=False`: no tokenizer.json (its conversion takes seconds)."""
    checkpoint = checkpoints.open_checkpoint(meta)
    params, weights = checkpoint.stated, checkpoint.weights
    n_kv_heads = checkpoint.params["n_kv_heads"]
    tied = "output.weight" not in weights
    out.mkdir(parents=True, exist_ok=True)
    factor = (rope_scaling(params, scale_factor) or {}).get("factor")
    config = transformers_llama.hf_config(params, tied, factor)
    config.save_pretrained(out)  # config.json, as transformers writes it
    respell_config(out, spelling)
    shards, current, size = [], {}, 0
    for name in weights:
        tensor = weights[name]
        if name.endswith("attention.wq.weight"):
            tensor = transformers_llama.meta_rows_to_hf(tensor, params["n_heads"])
        elif name.endswith("attention.wk.weight"):
            tensor = transformers_llama.meta_rows_to_hf(tensor, n_kv_heads)
        if current and size + tensor.numel() * tensor.element_size() > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[tensor_names.HUGGING_FACE.from_meta(name)] = tensor.contiguous()
        size += tensor.numel() * tensor.element_size()
    shards.append(current)
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        file = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        )
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map |= {name: file for name in shard}
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for shard in shards for t in shard.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            + "\n"
        )
    if tokenizer:
        write_tokenizer_json(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("meta", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--shard-size",
        default=None,
        help="e.g. 2GB (transformers) — with --stream, bytes per shard",
    )
    parser.add_argument("--spelling", choices=["4", "5"], default="4")
    parser.add_argument("--scale-factor", type=float, default=None)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; choose a new folder")
    if args.stream:
        save_streaming(
            args.meta, args.out, int(args.shard_size or 5 * 2**30), args.spelling, args.scale_factor
        )
    else:
        save_with_transformers(
            args.meta, args.out, args.shard_size, args.spelling, args.scale_factor
        )
    print(f"wrote {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir())))


if __name__ == "__main__":
    main()
