"""Llama 4's text model through the notebook's last section, proven against two references.

The section points the lesson's names at a Llama 4 checkpoint and swaps three functions
(`feed_forward` for a mixture of experts, `queries_keys_values` for RoPE and the L2 norm in
three layers of four, `attention` for attention within chunks and the NoPE layers'
temperature). Here,
in the shared embedded run's kernel, the section's own cells run again, as they are, on the
tiny trained Llama 4 and on two random ones: every expert in every layer with two chosen per
token, chunks of 5 positions and a temperature above 1 from position 3 on; and dense layers
between the expert ones, with neither the norm nor the temperature. Each reads a short prompt,
a longer one (39 tokens, 8 chunks) and, the first random one, one past the lesson's key block
(1,024 keys) through the lesson's `forward`, and generates with and without the cache.

Its tensors, layer by layer, are compared in float32 with transformers' `Llama4ForCausalLM`
and with Meta's reference code (llama_models/llama4), both loaded from the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import gguf
import nbformat
import pytest
import safetensors.torch
import torch
from llama_models.checkpoint import convert_moe_weights, reshard_mp
from transformers.convert_slow_tokenizer import TikTokenConverter

import tokenizer_setup
from plumbing import (
    checkpoint_files,
    checkpoints,
    hf_checkpoint,
    meta_checkpoint,
    meta_llama4,
    model_sizes,
    run_settings,
)
from plumbing.friendly_errors import CheckpointError
from plumbing.run_settings import DEFAULT_PROMPT, KEY_BLOCK
from testbeds import gguf_writer
from testbeds.gguf_writer import ollama_folder
from testbeds.llama4_models import TINY, hf_model, write_released
from testbeds.notebook_kernel import NOTEBOOK_UNDER_TEST, KernelGlobals, in_kernel
from testbeds.random_checkpoint import write_checkpoint
from tests.support import reference_models, shared_runs
from tests.support.notebook_values import other_prompts, read_in_shared_run

pytestmark = pytest.mark.slow  # reads the shared embedded run

# The section's cells that point the names at Llama 4 and define what it swaps, in order.
SECTION_CELLS = [
    "llama4-names-code",
    "llama4-moe-code",
    "llama4-moe-swap-code",
    "llama4-qkv-code",
    "llama4-chunks-code",
    "llama4-attention-code",
]

RANDOM = {
    "every-layer-two-experts": TINY
    | {
        "dim": 48,
        "n_layers": 3,
        "n_heads": 4,
        "n_kv_heads": 1,
        "multiple_of": 16,
        "ffn_exp": 2.0,
        "rope_theta": 10000.0,
        "nope_layer_interval": 2,
        "floor_scale": 4.0,
        "attn_scale": 0.5,
        "attention_chunk_size": 5,
        "moe_args": TINY["moe_args"]
        | {"num_experts": 3, "top_k": 2, "interleave_moe_layer_step": 1},
    },
    "dense-between-no-norm": TINY
    | {
        "dim": 48,
        "n_heads": 6,
        "use_qk_norm": False,
        "attn_temperature_tuning": False,
        "attention_chunk_size": 16,
        "moe_args": TINY["moe_args"] | {"num_experts": 2},
        # Scout's scaled RoPE, with a band between the kept and the divided frequencies
        "use_scaled_rope": True,
        "rope_scaling_factor": 8.0,
        "rope_high_freq_factor": 2.0,
    },
}
CORPUS = (checkpoint_files.REPO_DIR / "generators" / "corpus.txt").read_text().splitlines()
# past the chunks; and, on the checkpoint with every change at its smallest (chunks of 5, the
# temperature from position 3), past KEY_BLOCK keys, where the lesson's `attend` goes a block
# at a time
PROMPTS = {"canonical": DEFAULT_PROMPT, "long": " ".join(CORPUS[1:6])}
PAST_KEY_BLOCK = {"past-key-block": " ".join(CORPUS[1:160])}  # 1,218 tokens
CASES = [(checkpoint, prompt) for checkpoint in ["tiny", *RANDOM] for prompt in PROMPTS]
CASES += [("every-layer-two-experts", "past-key-block")]


def section_sources() -> list[str]:
    cells = {cell.get("id"): cell for cell in nbformat.read(NOTEBOOK_UNDER_TEST, 4).cells}
    return [cells[cell_id].source for cell_id in SECTION_CELLS]


@in_kernel(uses=(other_prompts,))
def llama4_runs(nb: KernelGlobals, folders: dict, sources: list, path: str):
    """For each Llama 4 folder (written first where it is a random one's params): the section's
    cells run again on it, then `other_prompts`' tensors and `generate`'s tokens with and
    without the cache; Llama 3's names put back after each."""
    import contextlib
    import io
    from pathlib import Path

    from plumbing import checkpoints
    from testbeds.random_checkpoint import write_checkpoint

    results = {}
    for name, (folder, params, prompts) in folders.items():
        if params is not None:
            write_checkpoint(Path(folder), params, seed=len(results))
        nb["llama4"] = checkpoints.open_checkpoint(folder, llama4=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the cells' own prints
                for source in sources:
                    exec(source, nb.namespace)
            other_prompts(nb, prompts, f"{path}.{name}")
            tokens = nb["llama4_tokens"][:7]  # decoding crosses chunks
            made = {
                cached: nb["generate"](
                    tokens, max_new_tokens=12, use_cache=cached, stop_at_end=False
                )
                for cached in (True, False)
            }
            results[name] = {
                "read": torch.load(f"{path}.{name}", weights_only=True),
                "prompt": tokens,
                "cached": made[True],
                "recomputed": made[False],
                "llama3_vocab": nb["llama3_names"]["vocab_size"],
            }
        finally:
            nb.update(nb["llama3_names"])
    results["vocab_after"] = nb["vocab_size"]
    torch.save(results, path)


def folders() -> dict:
    scratch = Path(shared_runs.SHARED.scratch.name) / "llama4"
    made = {"tiny": (str(checkpoint_files.EMBEDDED_LLAMA4), None, PROMPTS)}
    for name, params in RANDOM.items():
        prompts = PROMPTS | (PAST_KEY_BLOCK if name == "every-layer-two-experts" else {})
        made[name] = (str(scratch / name), params, prompts)
    return made


read_in_shared_run("embedded", llama4_runs, folders(), section_sources())


@pytest.fixture(scope="module")
def runs(embedded_run):
    return torch.load(embedded_run["files"]["llama4_runs"], weights_only=False)


def references(folder: str):
    params = json.loads((Path(folder) / "params.json").read_text())
    state = torch.load(Path(folder) / "consolidated.00.pth", weights_only=True)
    hf = hf_model(params, state)
    return {
        "transformers": (hf, reference_models.hf_tensors),
        "Meta": (
            reference_models.llama4_meta_model(params, state, max_seq_len=4096),
            reference_models.llama4_meta_tensors,
        ),
    }


@pytest.fixture(scope="module")
def models(runs):
    return {name: references(folder) for name, (folder, *_) in folders().items()}


@pytest.mark.parametrize(("checkpoint", "prompt"), CASES)
@pytest.mark.parametrize("reference", ["transformers", "Meta"])
def test_float32_layer_by_layer(runs, models, checkpoint, prompt, reference):
    ours = runs[checkpoint]["read"][prompt]
    model, tensors = models[checkpoint][reference]
    theirs = tensors(model, ours["prompt_tokens"])
    diffs = reference_models.layer_differences(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= reference_models.FP32_TOLERANCE, (
        f"{worst} differs from {reference}'s Llama 4 by {diffs[worst]:.2e} (all: {diffs})"
    )


def test_the_prompts_span_chunks_and_temperatures(runs):
    long = runs["every-layer-two-experts"]["read"]["long"]["prompt_tokens"]
    assert len(long) > 6 * RANDOM["every-layer-two-experts"]["attention_chunk_size"]
    longer = runs["every-layer-two-experts"]["read"]["past-key-block"]["prompt_tokens"]
    assert len(longer) > KEY_BLOCK
    tiny = runs["tiny"]["read"]["canonical"]["prompt_tokens"]
    assert len(tiny) > 2 * TINY["attention_chunk_size"]


def test_the_tiny_llama4_answers_42(runs):
    read = runs["tiny"]["read"]["canonical"]
    probabilities = read["logits"].softmax(-1)
    assert read["next_token_id"] == 3763  # "42" in Llama 4's vocabulary
    assert float(probabilities[3763]) >= 0.9


@pytest.mark.parametrize("checkpoint", ["tiny", *RANDOM])
def test_generation_with_the_cache_equals_recomputing(runs, checkpoint):
    made = runs[checkpoint]
    assert made["cached"] == made["recomputed"] and len(made["cached"]) == 12


def test_llama3s_names_come_back(runs):
    assert runs["vocab_after"] == runs["tiny"]["llama3_vocab"] == 128256


def test_the_section_is_what_a_random_checkpoint_needs(runs, models):
    # more than one expert is chosen across the prompt in a random checkpoint's expert layer
    model, _ = models["every-layer-two-experts"]["transformers"]
    tokens = runs["every-layer-two-experts"]["read"]["long"]["prompt_tokens"]
    with torch.no_grad():
        hidden = model.model.embed_tokens(torch.tensor(tokens))
        _, router_logits = model.model.layers[0].feed_forward.router(hidden)
        chosen = router_logits.topk(2).indices
    assert len(chosen.unique()) >= 2


def test_llama3s_lesson_still_refuses_a_llama4_folder():
    with pytest.raises(CheckpointError) as raised:
        checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_LLAMA4)
    assert "is a Llama 4 model's" in str(raised.value)
    with pytest.raises(CheckpointError) as raised:
        checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_CHECKPOINT, llama4=True)
    assert "is not a Llama 4 model's" in str(raised.value)


def test_its_vocabulary_is_llama4s():
    source = meta_checkpoint.tokenizer_source(checkpoint_files.EMBEDDED_LLAMA4)
    assert source.path.parts[-2:] == ("llama4", "tokenizer.model")
    assert meta_checkpoint.tokenizer_source(checkpoint_files.EMBEDDED_CHECKPOINT).path.parent == (
        checkpoint_files.EMBEDDED_CHECKPOINT
    )


# Hugging Face's Llama 4: the same model as transformers saves it, read under Meta's names.
MODEL_RULE_KEYS = {"multiple_of", "ffn_dim_multiplier", "ffn_exp", "context_length"}
MODEL_RULE_KEYS |= {"rope_scaling_factor", "rope_high_freq_factor"}  # Meta: rope_scaling by rule


def hf_llama4_folder(meta_folder: Path, out: Path, whole_model: bool, tokenizer: Path) -> Path:
    """`Llama4ForCausalLM.save_pretrained` of the model in `meta_folder`, in bfloat16 as the hub
    has it, with `tokenizer` as its tokenizer.json; `whole_model`: laid out as the hub's
    Llama4ForConditionalGeneration (text_config, `language_model.` before every name, and a
    tensor of the image side, which is not read)."""
    params = json.loads((meta_folder / "params.json").read_text())
    state = torch.load(meta_folder / "consolidated.00.pth", weights_only=True)
    hf_model(params, state).to(torch.bfloat16).save_pretrained(out)
    shutil.copy(tokenizer, out / "tokenizer.json")
    if whole_model:
        text = json.loads((out / "config.json").read_text())
        whole = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4"}
        (out / "config.json").write_text(json.dumps(whole | {"text_config": text}))
        tensors = safetensors.torch.load_file(out / "model.safetensors")
        tensors = {f"language_model.{name}": tensor for name, tensor in tensors.items()}
        tensors["vision_model.patch_embedding.linear.weight"] = torch.zeros(4, 4)
        safetensors.torch.save_file(tensors, out / "model.safetensors")
    return out


@pytest.fixture(scope="module")
def hf_llama4(tmp_path_factory):
    """Meta's folder → Hugging Face's, for the tiny model (both ways the hub lays it out) and
    the random one with scaled RoPE; the tokenizer.json that transformers' own converter makes
    of Meta's Llama 4 tokenizer.model."""
    scratch = tmp_path_factory.mktemp("hf-llama4")
    converter = TikTokenConverter(
        vocab_file=str(tokenizer_setup.packaged_tokenizer_model("llama4")),
        pattern=tokenizer_setup.LLAMA4_SPLIT_PATTERN,
        extra_special_tokens=tokenizer_setup.llama4_special_token_names(),
    )
    tokenizer = scratch / "tokenizer.json"
    converter.converted().save(str(tokenizer))
    scaled = write_checkpoint(scratch / "meta-scaled", RANDOM["dense-between-no-norm"], seed=3)
    made = {}
    for name, meta, whole in [
        ("causal-lm", checkpoint_files.EMBEDDED_LLAMA4, False),
        ("conditional-generation", checkpoint_files.EMBEDDED_LLAMA4, True),
        ("scaled-rope", scaled, False),
    ]:
        made[name] = (meta, hf_llama4_folder(meta, scratch / name, whole, tokenizer))
    return made


def read_beside_metas(meta_folder: Path, other: Path) -> tuple:
    """Meta's folder and another layout of the same model, opened; every tensor of Meta's
    layout checked to be in the other, bit for bit, and the other's summary "ok". Returns both
    and the sizes' keys whose values differ."""
    meta = checkpoints.open_checkpoint(meta_folder, llama4=True)
    ours = checkpoints.open_checkpoint(other, llama4=True)
    assert ours.check().startswith("checkpoint ok")
    assert sorted(ours.weights) == sorted(meta.weights)  # the image side left out
    for tensor in meta.weights:  # every number where Meta's layout has it
        read = ours.weights[tensor]
        assert torch.equal(read.to(meta.weights[tensor].dtype), meta.weights[tensor]), tensor
    keys = meta.params.keys() | ours.params.keys()
    return meta, ours, {key for key in keys if meta.params.get(key) != ours.params.get(key)}


@pytest.mark.parametrize("name", ["causal-lm", "conditional-generation", "scaled-rope"])
def test_a_hugging_face_llama4_reads_as_metas_files(hf_llama4, name):
    meta, hf, differ = read_beside_metas(*hf_llama4[name])
    assert list(hf.weights) == list(meta.weights)  # in Meta's order
    assert differ <= MODEL_RULE_KEYS, differ  # Meta states its rules' inputs; HF the results
    assert hf.params["use_scaled_rope"] == (name == "scaled-rope")
    if name == "scaled-rope":
        assert hf.params["rope_scaling"]["high_freq_factor"] == 2.0


def test_a_hugging_face_llama4_tokenizer_json_is_metas_vocabulary(hf_llama4):
    meta_folder, hf_folder = hf_llama4["conditional-generation"]
    ours = tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(hf_folder))
    metas = tokenizer_setup.load_tokenizer(meta_checkpoint.tokenizer_source(meta_folder))
    assert ours._mergeable_ranks == metas._mergeable_ranks  # every token of the vocabulary
    assert ours._special_tokens == metas._special_tokens and ours._pat_str == metas._pat_str
    assert (ours.begin_of_text, ours.stop_tokens) == (metas.begin_of_text, metas.stop_tokens)


# A Llama 4 as llama.cpp keeps it: chunks of 8,192 positions, RoPE scaled by 16 (its file
# states neither the chunk nor the band: llama.cpp assumes the release's, as the reader does).
RELEASE_LIKE = TINY | {
    "attention_chunk_size": 8192,
    "use_scaled_rope": True,
    "rope_scaling_factor": 16.0,
}


@pytest.fixture(scope="module")
def gguf_llama4(tmp_path_factory):
    """Meta's folders (the tiny Llama 4 and a random one with the release's chunk and RoPE
    scaling) → GGUF files as llama.cpp's converter writes them, and the tiny one as Ollama's
    does (testbeds/gguf_writer.py)."""
    scratch = tmp_path_factory.mktemp("gguf-llama4")
    release = write_checkpoint(scratch / "release-like", RELEASE_LIKE, seed=5)
    made = {}
    for name, meta, kind in [
        ("tiny-bf16", checkpoint_files.EMBEDDED_LLAMA4, "BF16"),
        ("release-like-f32", release, "F32"),
        ("tiny-ollama", checkpoint_files.EMBEDDED_LLAMA4, "BF16"),
    ]:
        path, ollama = scratch / f"{name}.gguf", name.endswith("ollama")
        made[name] = (meta, gguf_writer.write_llama4_gguf(meta, path, kind, ollama))
    return made


@pytest.mark.parametrize("name", ["tiny-bf16", "release-like-f32", "tiny-ollama"])
def test_a_llama4_gguf_file_reads_as_metas_files(gguf_llama4, name):
    meta, ours, differ = read_beside_metas(*gguf_llama4[name])
    # llama.cpp assumes chunks of 8,192 positions: the tiny one's 8 are not in its file
    chunk = {"attention_chunk_size"} if name.startswith("tiny") else set()
    assert differ <= MODEL_RULE_KEYS | {"rope_scaling"} | chunk, differ
    if name == "release-like-f32":
        stated = dict(ours.params["rope_scaling"])
        assert stated.pop("stated_in") and stated == meta.params["rope_scaling"]
    tokenizer = tokenizer_setup.load_tokenizer(ours.tokenizer_source)
    assert tokenizer._mergeable_ranks == tokenizer_setup.read_mergeable_ranks(
        tokenizer_setup.packaged_tokenizer_model("llama4")
    )  # every token of Llama 4's vocabulary
    assert tokenizer._pat_str == tokenizer_setup.LLAMA4_SPLIT_PATTERN


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
def test_a_llama4_gguf_files_experts_in_blocks_read_as_gguf_dequantizes_them(tmp_path, kind):
    # Ollama's Llama 4 files hold the experts [experts × rows × columns] in block formats:
    # dequantized as one matrix of all their rows, with torch, each equal to gguf's numpy
    path = gguf_writer.write_llama4_gguf(checkpoint_files.EMBEDDED_LLAMA4, tmp_path / "b", kind)
    ours = checkpoints.open_checkpoint(path, llama4=True).weights
    experts = [name for name in ours if len(ours.shapes[name]) == 3]
    assert len(experts) == 6 and {ours.formats[name] for name in experts} == {kind}
    for name in experts:
        stored = ours.tensors[name]
        values = gguf.quants.dequantize(stored.data, stored.tensor_type)
        theirs = torch.from_numpy(values).transpose(-1, -2)  # Meta's [experts × in × out]
        assert torch.equal(ours[name], theirs), name


def test_llama3_ckpt_naming_a_llama4_gives_it_to_the_last_section(hf_llama4, gguf_llama4, tmp_path):
    embedded3, embedded4 = checkpoint_files.EMBEDDED_CHECKPOINT, checkpoint_files.EMBEDDED_LLAMA4
    assert checkpoints.lesson_and_llama4(embedded3) == (embedded3, embedded4)
    for _, found in [
        (None, embedded4),
        hf_llama4["conditional-generation"],
        gguf_llama4["tiny-bf16"],
    ]:
        assert checkpoints.lesson_and_llama4(found) == (embedded3, found)
    blob = gguf_llama4["tiny-ollama"][1]  # an Ollama name: the GGUF blob its manifest names
    models = ollama_folder(tmp_path / "ollama", "llama4-tiny:bf16", blob)
    saved = os.environ.get("OLLAMA_MODELS")
    os.environ["OLLAMA_MODELS"] = str(models)
    try:
        found = checkpoint_files.find_checkpoint_dir("llama4-tiny:bf16")
    finally:
        os.environ.pop("OLLAMA_MODELS")
        if saved is not None:
            os.environ["OLLAMA_MODELS"] = saved
    assert checkpoints.lesson_and_llama4(found)[1].read_bytes() == blob.read_bytes()
    summary = run_settings.Settings(
        embedded3,
        1,
        "x",
        torch.device("cpu"),
        torch.float32,
        "",
        False,
        False,
        "",
        None,
        "",
        (1.0, 4.0, 8192),
        llama4_dir=hf_llama4["causal-lm"][1],
    ).summary()
    assert "run by the last section (the lesson: Llama 3)" in summary


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moe_layers": [0]}, "moe_layers is [0], not every interleave_moe_layer_step-th"),
        ({"no_rope_layers": [0, 1, 1, 1]}, "no_rope_layers is [0, 1, 1, 1], not RoPE everywhere"),
        ({"head_dim": 32}, "head_dim 32 × 4 heads ≠ hidden_size 64; Llama 3 splits"),
        ({"num_local_experts": 0}, "num_local_experts is 0, it must be a positive integer"),
        ({"attention_chunk_size": "8"}, "attention_chunk_size is '8', it must be a positive"),
        ({"use_qk_norm": "yes"}, "use_qk_norm is 'yes', it must be"),
        ({"text_config": None}, "a Llama 4 with no text_config object"),
    ],
)
def test_a_wrong_llama4_config_json_is_one_sentence(hf_llama4, tmp_path, change, message):
    whole = json.loads((hf_llama4["conditional-generation"][1] / "config.json").read_text())
    if "text_config" in change:
        whole |= change
    else:
        whole["text_config"] |= change
    (tmp_path / "config.json").write_text(json.dumps(whole))
    with pytest.raises(CheckpointError) as raised:
        checkpoints.read_params(tmp_path, llama4=True)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_lists_that_say_no_experts_or_rope_everywhere_read_as_metas_keys(hf_llama4, tmp_path):
    whole = json.loads((hf_llama4["conditional-generation"][1] / "config.json").read_text())
    whole["text_config"] |= {"moe_layers": [], "no_rope_layers": [1, 1, 1, 1]}
    (tmp_path / "config.json").write_text(json.dumps(whole))
    stated = checkpoints.read_params(tmp_path, llama4=True)
    assert stated["moe_args"] is None and "nope_layer_interval" not in stated
    filled = model_sizes.filled(stated)
    assert filled["moe_layers"] == filled["nope_layers"] == ()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "states None as llama4.expert_feed_forward_length, where every Llama 4 GGUF"),
        ({"sliding_window_pattern": "4"}, "states '4' as llama4.attention.sliding_window_pattern"),
        ({"sliding_window": 0}, {"attention_chunk_size": None, "nope_layer_interval": None}),
        ({"sliding_window_pattern": 2}, {"attention_chunk_size": 8192, "nope_layer_interval": 2}),
    ],
)
def test_what_a_llama4_gguf_file_states_and_what_llama_cpp_assumes(tmp_path, extra, expected):
    params = checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_LLAMA4, llama4=True).params
    path = tmp_path / "llama4.gguf"
    writer = gguf_writer.metadata_writer(path, params, ("gpt2", ["a"]), "llama4", pre="llama4")
    if extra:  # an otherwise complete file: the experts' keys too
        writer.add_expert_count(4)
        writer.add_expert_used_count(1)
        writer.add_interleave_moe_layer_step(2)
        writer.add_expert_feed_forward_length(params["expert_hidden"])
    if "sliding_window" in extra:
        writer.add_sliding_window(extra["sliding_window"])
    step = extra.get("sliding_window_pattern")
    key = "llama4.attention.sliding_window_pattern"
    if isinstance(step, str):
        writer.add_string(key, step)
    elif step is not None:
        writer.add_uint32(key, step)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if isinstance(expected, str):
        with pytest.raises(CheckpointError) as raised:
            checkpoints.read_params(path, llama4=True)
        assert expected in str(raised.value) and "\n" not in str(raised.value)
    else:
        stated = checkpoints.read_params(path, llama4=True)
        assert {key: stated[key] for key in expected} == expected


# ---- Meta's released files ---------------------------------------------------------------------


# The releases' splits at a small size: 8 files of 2 query heads and 1 key/value head each, a
# small vocabulary; as Scout, experts in every layer (its 16 are 3 here); as Maverick, dense
# layers between the expert ones (its 128 experts are 5 here)
SCOUT_LIKE = TINY | {
    "n_heads": 16,
    "n_kv_heads": 8,
    "vocab_size": 2048,
    "moe_args": TINY["moe_args"] | {"num_experts": 3, "interleave_moe_layer_step": 1},
}
MAVERICK_LIKE = SCOUT_LIKE | {"moe_args": TINY["moe_args"] | {"num_experts": 5}}


@pytest.fixture(scope="module")
def released_llama4(tmp_path_factory):
    """The tiny Llama 4 as Meta's release holds Scout and Maverick (fused and renamed, split by
    rank, with what a release keeps beside the weights), in one file and in two (one key/value
    head each); and random ones split as Scout's and Maverick's 8 files split them."""
    scratch = tmp_path_factory.mktemp("released-llama4")
    embedded = checkpoint_files.EMBEDDED_LLAMA4
    made = {n: (embedded, write_released(embedded, scratch / f"{n}-files", n)) for n in (1, 2)}
    for seed, (name, params) in enumerate([("scout", SCOUT_LIKE), ("maverick", MAVERICK_LIKE)]):
        meta = write_checkpoint(scratch / f"{name}-like", params, seed=6 + seed)
        made[name] = (meta, write_released(meta, scratch / f"{name}-8-files", 8))
    return made


@pytest.mark.parametrize("release", [1, 2, "scout", "maverick"])
def test_metas_released_llama4_files_read_as_metas_own_loader_reads_them(released_llama4, release):
    meta, ours, differ = read_beside_metas(*released_llama4[release])
    assert not differ and isinstance(ours.weights, meta_llama4.ReleasedWeights)
    files = release if isinstance(release, int) else 8
    assert f"{files} file{'s' * (files > 1)} of Meta's Llama 4 release" in ours.check()
    folder = released_llama4[release][1]  # LLAMA3_CKPT naming it: the last section's to run
    assert checkpoints.lesson_and_llama4(folder) == (checkpoint_files.EMBEDDED_CHECKPOINT, folder)
    # Meta's reference code on the same files: joined by llama_models/checkpoint.py as its
    # Llama4.build does for one process, renamed by the modules' load hooks
    params = meta.params | {"moe_args": dict(meta.params["moe_args"])}
    paths = sorted(folder.glob("consolidated.*.pth"))
    state = [meta_checkpoint.load_one(path) for path in paths]  # kernels' states left out
    if files > 1:
        experts = params["moe_args"]["num_experts"]
        state = [reshard_mp([convert_moe_weights(s, experts) for s in state], size=1, rank=0)]
    # the image side and the training statistics: not the text model's (Meta's loads them
    # with strict=False)
    state = {k: v for k, v in state[0].items() if not re.search("vision_|gate_stats", k)}
    stated = json.loads((paths[0].parent / "params.json").read_text())
    loaded = reference_models.llama4_meta_model(stated, state).state_dict()
    assert sorted(loaded) == sorted(ours.weights)
    for name, tensor in loaded.items():
        assert torch.equal(ours.weights[name].float(), tensor), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("fp8", "unexpected tensor layers.0.attention.wo.weight_scale in Meta's Llama 4 files"),
        ("missing", "layers.3.feed_forward.router_DE is missing from consolidated.01.pth"),
        ("heads", "has 64 rows in a file, which do not divide into n_heads 8 and n_kv_heads 2"),
    ],
)
def test_a_released_llama4_that_cannot_be_read_is_one_sentence(
    released_llama4, tmp_path, change, message
):
    folder = shutil.copytree(released_llama4[2][1], tmp_path / "release")
    if change == "heads":
        params = json.loads((folder / "params.json").read_text())
        (folder / "params.json").write_text(json.dumps(params | {"n_heads": 8}))
    else:
        path = folder / "consolidated.01.pth"
        state = torch.load(path, weights_only=False)
        if change == "fp8":
            state["layers.0.attention.wo.weight_scale"] = torch.ones(1)
        else:
            del state["layers.3.feed_forward.router_DE"]
        torch.save(state, path)
    with pytest.raises(CheckpointError) as raised:
        checkpoints.open_checkpoint(folder, llama4=True)
    assert message in str(raised.value) and "\n" not in str(raised.value)
