"""Write a Meta-layout checkpoint as a GGUF file with the `gguf` package, for tests.

llama.cpp's own converter needs a Hugging Face folder and its environment (see
benchmarks/quantized_decode.py; tests/test_gguf.py uses it where build/llama-cpp has it).
This writer makes the same kind of file from the checkpoint directly: llama.cpp's tensor
names, q and k rows in Meta's order (as the converter leaves them), norms in F32, the
metadata keys the converter writes, and Llama 3's vocabulary as byte-level BPE text.
Matrices in F32, F16, BF16, or quantized by `gguf.quants` (Q8_0, Q4_0; Q4_1 for a format the
notebook does not read).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import gguf
import numpy as np

import tokenizer_setup
from plumbing import checkpoints, gguf_files, hf_checkpoint, model_ids, model_sizes

GGML = gguf.GGMLQuantizationType


# llama.cpp's name for each of Meta's tensors, from gguf's own table (gguf.TENSOR_NAMES),
# not from plumbing/gguf_files.py, which these files test.
MT = gguf.MODEL_TENSOR
LLAMA_CPP_TENSORS = {
    "tok_embeddings": MT.TOKEN_EMBD,
    "attention_norm": MT.ATTN_NORM,
    "attention.wq": MT.ATTN_Q,
    "attention.wk": MT.ATTN_K,
    "attention.wv": MT.ATTN_V,
    "attention.wo": MT.ATTN_OUT,
    "ffn_norm": MT.FFN_NORM,
    "feed_forward.w1": MT.FFN_GATE,  # Meta's w1 goes through SiLU: the gate
    "feed_forward.w3": MT.FFN_UP,
    "feed_forward.w2": MT.FFN_DOWN,
    "norm": MT.OUTPUT_NORM,
    "output": MT.OUTPUT,
    "attention.q_norm": MT.ATTN_Q_NORM,  # Qwen3's
    "attention.k_norm": MT.ATTN_K_NORM,
}


def gguf_name(meta: str) -> str:
    parts = meta.removesuffix(".weight").split(".")
    layer = parts[1] if parts[0] == "layers" else None
    kind = ".".join(parts[2:] if layer is not None else parts)
    return gguf.TENSOR_NAMES[LLAMA_CPP_TENSORS[kind]].format(bid=layer) + ".weight"


def vocabulary_text(tokenizer) -> list[str]:
    """Every token id's text as GGUF stores it: byte-level BPE's alphabet, then the specials."""
    to_char = {byte: char for char, byte in tokenizer_setup.byte_level_alphabet().items()}
    tokens = []
    for token_id in range(tokenizer.n_vocab):
        raw = tokenizer.decode_single_token_bytes(token_id)
        if token_id >= len(tokenizer._mergeable_ranks):
            tokens.append(raw.decode())
        else:
            tokens.append("".join(to_char[byte] for byte in raw))
    return tokens


def metadata_writer(
    path: Path,
    params: dict,
    vocabulary: tuple[str, list[str]],
    architecture: str = "llama",
    context_length: int | None = None,
    merges: list[str] | None = None,
    pre: str = "llama-bpe",
    token_types: list[int] | None = None,
) -> gguf.GGUFWriter:
    """A GGUF writer with the sizes (filled params) and the vocabulary in its metadata, as
    llama.cpp's converter writes them; the tensors are the caller's to add. `merges` (the BPE
    merges, `llama3_merges()`): llama.cpp loads no BPE vocabulary without them (the notebook
    needs only the tokens); `pre`: the split pattern's name, and `token_types` each token's kind
    (llama.cpp's: 1 ranked, 3 control), as a Qwen3 file has them."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(params["n_layers"])
    writer.add_context_length(context_length or params["context_length"])
    writer.add_embedding_length(params["dim"])
    writer.add_feed_forward_length(params["ffn_hidden"])
    writer.add_head_count(params["n_heads"])
    writer.add_head_count_kv(params["n_kv_heads"])
    writer.add_rope_freq_base(params["rope_theta"])
    writer.add_layer_norm_rms_eps(params["norm_eps"])
    writer.add_vocab_size(params["vocab_size"])
    writer.add_rope_dimension_count(model_sizes.head_dim(params))
    if params.get("head_dim") is not None:  # stated (Qwen3): as llama.cpp's converter states it
        writer.add_key_length(params["head_dim"])
        writer.add_value_length(params["head_dim"])
    writer.add_tokenizer_model(vocabulary[0])
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocabulary[1])
    if token_types is not None:
        writer.add_token_types(token_types)
    if merges is not None:
        writer.add_token_merges(merges)
    if pre == "llama-bpe":
        writer.add_bos_token_id(128000)
    return writer


def llama3_merges() -> list[str]:
    """Llama 3's BPE merges as a GGUF file lists them ("Ġ t" for ' ' + 't'), from the
    tokenizer.json that transformers' converter writes (testbeds/hf_folder.py; seconds)."""
    from testbeds.hf_folder import llama3_tokenizer_json  # it imports transformers

    merges = json.loads(llama3_tokenizer_json())["model"]["merges"]
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]


def q4_k_m_kind(name: str, n_layers: int, columns: int = 256) -> str:
    """The format llama.cpp's Q4_K_M quantizer gives a matrix: Q4_K, and Q6_K for the output
    matrix and for `wv` and `w2` in the layers its rule gives more bits (the first and last
    eighth, and every third between). Rows that hold no whole block of 256 (`columns`) fall
    back to Q5_0 and Q8_0, as its converter's file of a small model shows (F32/Q5_0/Q8_0)."""
    eighth = n_layers // 8
    six_bits = name == "output.weight"
    if name.endswith(("attention.wv.weight", "feed_forward.w2.weight")):
        layer = int(name.split(".")[1])
        six_bits = layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2
    if columns % 256:
        return "Q8_0" if six_bits else "Q5_0"
    return "Q6_K" if six_bits else "Q4_K"


def write_gguf(
    checkpoint: Path,
    path: Path,
    kind: str = "F32",
    architecture: str = "llama",
    vocabulary: tuple[str, list[str]] | None = None,
    merges: list[str] | None = None,
    rope_factors: list[float] | None = None,
    keep: set[str] | None = None,
    context_length: int | None = None,
    kind_of: dict[str, str] | None = None,
) -> Path:
    """`kind`: the matrices' format (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0); `vocabulary`:
    (kind, tokens) instead of Llama 3's; `rope_factors`: a rope_freqs tensor; `keep`: only
    these Meta names (to make a file that lacks a tensor); `context_length`: instead of the
    checkpoint's; `kind_of`: a format of its own for the matrices it names (a mixed file, as
    llama.cpp's Q4_K_M is)."""
    opened = checkpoints.open_checkpoint(checkpoint)
    params, weights = opened.params, opened.weights
    pre, token_types = "llama-bpe", None
    if vocabulary is None:
        tokenizer = tokenizer_setup.load_tokenizer(opened.tokenizer_source)
        vocabulary = ("gpt2", vocabulary_text(tokenizer))
        patterns = {pattern: name for name, pattern in tokenizer_setup.GGUF_SPLIT_PATTERNS.items()}
        pre = patterns[tokenizer._pat_str]  # llama.cpp's name for the vocabulary's split pattern
        if pre != "llama-bpe":  # a vocabulary like Qwen3's: its token types and merges too
            n_ranked = len(tokenizer._mergeable_ranks)
            token_types = [1] * n_ranked + [3] * (tokenizer.n_vocab - n_ranked)
            data = json.loads(opened.tokenizer_source.path.read_text())["model"]["merges"]
            merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in data]
    writer = metadata_writer(
        path, params, vocabulary, architecture, context_length, merges, pre, token_types
    )
    # llama.cpp keeps Llama's query and key rows in Meta's order and Qwen3's in Hugging Face's
    # (it rotates halves there): those put in Hugging Face's order, as its converter leaves them
    shapes = dict(weights.shapes)
    rotated = hf_checkpoint.rotate_half_rows(shapes, params) if architecture == "qwen3" else {}
    for name in weights:
        if keep is not None and name not in keep:
            continue
        values = weights[name].float()
        if name in rotated:
            values = hf_checkpoint.meta_rows_to_hf(values, rotated[name])
        values = values.numpy()
        its_kind = (kind_of or {}).get(name, kind)
        if values.ndim == 1 or its_kind == "F32":
            writer.add_tensor(gguf_name(name), values)
        elif its_kind == "F16":
            writer.add_tensor(gguf_name(name), values.astype(np.float16))
        else:
            qtype = GGML[its_kind]
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    return finish(writer, path, rope_factors)


def finish(writer: gguf.GGUFWriter, path: Path, rope_factors: list[float] | None) -> Path:
    """The rope_freqs tensor where there is one, then the file written and closed."""
    if rope_factors is not None:
        writer.add_tensor(gguf_files.ROPE_FACTORS, np.array(rope_factors, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama31_rope_factors(head_dim: int, theta: float, factor: float) -> list[float]:
    """The per-pair factors llama.cpp's converter stores for Llama 3.1's scaled RoPE,
    written out here the way its conversion/llama.py computes them (a test reference)."""
    low, high, original = 1.0, 4.0, 8192
    factors = []
    for pair in range(head_dim // 2):
        frequency = 1.0 / theta ** (2 * pair / head_dim)
        wavelength = 2 * math.pi / frequency
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def llama4_rope_factors(head_dim: int, theta: float, factor: float) -> list[float]:
    """The per-pair factors llama.cpp's converter stores for Llama 4's scaled RoPE (its band:
    frequency factors 1 and 1 over 8,192 positions): the factor past that wavelength, else 1."""
    return [
        factor if 2 * math.pi * theta ** (2 * pair / head_dim) > 8192 else 1.0
        for pair in range(head_dim // 2)
    ]


# Llama 4's tensors beyond Llama 3's, as llama.cpp's converter writes them (its
# conversion/llama.py, Llama4Model): name, and whether Meta's last two axes are swapped.
LLAMA4_EXTRA = {
    "feed_forward.router_DE": (MT.FFN_GATE_INP, True),
    "feed_forward.experts.w1": (MT.FFN_GATE_EXP, True),
    "feed_forward.experts.w3": (MT.FFN_UP_EXP, True),
    "feed_forward.experts.w2": (MT.FFN_DOWN_EXP, True),
    "feed_forward.shared_expert.w1.weight": (MT.FFN_GATE_SHEXP, False),
    "feed_forward.shared_expert.w3.weight": (MT.FFN_UP_SHEXP, False),
    "feed_forward.shared_expert.w2.weight": (MT.FFN_DOWN_SHEXP, False),
}


def write_llama4_gguf(checkpoint: Path, path: Path, kind: str = "F32", ollama=False) -> Path:
    """A Meta-layout Llama 4 as llama.cpp's converter writes it: architecture `llama4`, the
    experts' keys, Llama 4's vocabulary ("llama4" split pattern), the router stored
    [experts × dim] and each expert matrix [experts × out × in], q and k rows in Meta's order
    (its converter leaves them: transformers' Llama 4 rotates adjacent pairs too), a
    rope_freqs tensor where RoPE is scaled. `kind`: the 2-D matrices' format (F32, BF16 …).
    `ollama`: as Ollama's converter writes it instead (its convert/convert_llama4.go): the
    widths as intermediate_size_moe and intermediate_size (feed_forward_length an expert's),
    use_qk_norm stated, the pattern not named, and the image side's tensors in the same file."""
    opened = checkpoints.open_checkpoint(checkpoint, llama4=True)
    params, weights = opened.params, opened.weights
    tokenizer = tokenizer_setup.load_tokenizer(opened.tokenizer_source)
    vocabulary = ("gpt2", vocabulary_text(tokenizer))
    moe = params["moe_args"]
    if ollama:
        sizes = params | {"ffn_hidden": params["expert_hidden"]}
        writer = metadata_writer(path, sizes, vocabulary, "llama4", pre="default")
        writer.add_uint32("llama4.intermediate_size", params["ffn_hidden"])
        writer.add_uint32("llama4.intermediate_size_moe", params["expert_hidden"])
        writer.add_bool("llama4.use_qk_norm", params["use_qk_norm"])
        for name in ("v.patch_embedding.weight", "mm.linear_1.weight"):
            writer.add_tensor(name, np.zeros((4, 4), dtype=np.float32))
    else:
        writer = metadata_writer(path, params, vocabulary, "llama4", pre="llama4")
        writer.add_expert_feed_forward_length(params["expert_hidden"])
    writer.add_expert_count(moe["num_experts"])
    writer.add_expert_used_count(moe["top_k"])
    writer.add_interleave_moe_layer_step(moe["interleave_moe_layer_step"])
    for name in weights:
        values = weights[name].float()
        layer, rest = name.split(".", 2)[1:] if name.startswith("layers.") else (None, name)
        if rest in LLAMA4_EXTRA:
            tensor, swapped = LLAMA4_EXTRA[rest]
            values = values.transpose(-1, -2).contiguous() if swapped else values
            gguf_tensor = gguf.TENSOR_NAMES[tensor].format(bid=layer) + ".weight"
        else:
            gguf_tensor = gguf_name(name)
        values = values.numpy()
        if values.ndim == 1 or kind == "F32":
            writer.add_tensor(gguf_tensor, values)
        elif kind == "BF16":
            raw = gguf.quants.quantize(values, GGML.BF16)
            writer.add_tensor(gguf_tensor, raw, raw_dtype=GGML.BF16)
        else:
            writer.add_tensor(
                gguf_tensor, gguf.quants.quantize(values, GGML[kind]), raw_dtype=GGML[kind]
            )
    factors = None
    if params.get("use_scaled_rope"):
        factors = llama4_rope_factors(
            params["head_dim"], params["rope_theta"], params["rope_scaling"]["factor"]
        )
    return finish(writer, path, factors)


def ollama_folder(root, name, blob):
    """Ollama's models folder with `name` pulled: a manifest naming `blob`'s digest."""
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").symlink_to(blob)  # Ollama's own blob, read in place
    manifest = model_ids.ollama_manifest(root, name)
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
        {"mediaType": model_ids.OLLAMA_MODEL_LAYER, "digest": f"sha256:{digest}"},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root
