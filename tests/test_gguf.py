"""GGUF files (llama.cpp's format, which Ollama and LM Studio download) run the notebook
unchanged: Meta's tensors bit for bit in F32 and BF16, within the format's own error in Q8_0
and Q4_0, the same "42", and one sentence for each usual mistake.

The files are written from the embedded checkpoint by testbeds/gguf_writer.py with the
`gguf` package. llama.cpp's own converter and llama.cpp's logits on the same files are
compared by benchmarks/gguf_parity.py, where llama-cpp-python is installed.
"""

from __future__ import annotations

import json
import os
import threading

import gguf
import numpy as np
import pytest
import torch

import tokenizer_setup
from plumbing import (
    checkpoint_files,
    checkpoints,
    gguf_files,
    model_ids,
    quantization,
    weight_loading,
)
from testbeds.gguf_writer import (
    llama31_rope_factors,
    ollama_folder,
    vocabulary_text,
    write_gguf,
)
from tests.support.notebook_values import (
    CANONICAL_TOKENS,
    FLOAT32_CPU,
    TENSORS_ONLY,
    cell_text,
    run_and_read,
    setup_cell_in_process,
)

EMBEDDED = checkpoint_files.EMBEDDED_CHECKPOINT
ANSWER = 2983
KINDS = ["F32", "BF16", "Q8_0", "Q4_0"]


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {kind: write_gguf(EMBEDDED, folder / f"embedded-{kind}.gguf", kind) for kind in KINDS}


@pytest.fixture(scope="session")
def meta():
    weights = checkpoints.open_checkpoint(EMBEDDED).weights
    return {name: weights[name] for name in weights}


@pytest.fixture(scope="session")
def small_vocabulary_file(tmp_path_factory):
    """Llama 3's first 300 tokens only: a file that opens in a fraction of a second, for the
    mistakes the setup finds before it reads the vocabulary."""
    tokens = vocabulary_text(
        tokenizer_setup.load_tokenizer(checkpoints.open_checkpoint(EMBEDDED).tokenizer_source)
    )[:300]
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    return write_gguf(EMBEDDED, path, "F32", vocabulary=("gpt2", tokens))


# ---- the tensors, in-process --------------------------------------------------------------------


@pytest.mark.slow  # every tensor of two files, compared (seconds): in make test, not make quick
def test_f32_and_bf16_give_metas_tensors_bit_for_bit(files, meta):
    for kind in ("F32", "BF16"):
        weights = checkpoints.open_checkpoint(files[kind]).weights
        assert list(weights) == list(meta), kind  # Meta's names, in Meta's order
        for name, tensor in meta.items():
            assert torch.equal(weights[name].float(), tensor.float()), (kind, name)
        expected = torch.bfloat16 if kind == "BF16" else torch.float32
        assert weights["layers.0.attention.wq.weight"].dtype == expected


@pytest.mark.slow  # every tensor of two files (seconds)
@pytest.mark.parametrize("kind, bound", [("Q8_0", 0.5 * 1.13), ("Q4_0", 1.01)])
def test_block_formats_within_their_own_error(files, meta, kind, bound):
    """Each weight within `bound` of its block's step: half a step for Q8_0 (plus the float16
    rounding of the scale, up to 127 × 2^-11 of a step), one step for Q4_0 (its clamp at 7)."""
    weights = checkpoints.open_checkpoint(files[kind]).weights
    levels = 127 if kind == "Q8_0" else 8
    for name, tensor in meta.items():
        if tensor.dim() == 1:
            assert torch.equal(weights[name], tensor.float()), name  # norms stay F32
            continue
        blocks = tensor.float().unflatten(1, (-1, 32))
        step = blocks.abs().amax(dim=2, keepdim=True) / levels
        moved = (weights[name].unflatten(1, (-1, 32)) - blocks).abs()
        assert (moved <= bound * step + 1e-12).all(), name


def test_one_interface_for_a_gguf_file(files):
    meta, ours = checkpoints.open_checkpoint(EMBEDDED), checkpoints.open_checkpoint(files["Q8_0"])
    assert ours.reader is gguf_files
    sizes = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_hidden", "tied_output")
    assert {key: ours.params[key] for key in sizes} == {key: meta.params[key] for key in sizes}
    assert ours.weights.shapes == meta.weights.shapes  # Meta's names, in Meta's order
    name = "layers.0.attention.wq.weight"
    assert ours.weights.describe(name) == f"blk.0.attn_q.weight (Meta's {name})"
    assert ours.weights.about(name) == meta.weights.about(name)


def every_block(kind: str) -> np.ndarray:
    """The whole space of a block format's blocks, in 65,536 rows of one block: every float16
    scale (zeros, subnormals, infinities and NaNs among them), and every byte value at every
    integer position (the bytes run through 0 … 255 down the rows, shifted at each position)."""
    size = gguf_files.TORCH_BLOCKS[kind]
    scales = np.arange(2**16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    positions = np.arange(size - 2, dtype=np.uint16)
    ints = ((np.arange(2**16, dtype=np.uint16)[:, None] + 37 * positions) % 256).astype(np.uint8)
    return np.concatenate([scales, ints], axis=1)


# Where each K format keeps its float16 numbers: Q4_K d and dmin first, Q6_K d last.
K_FLOAT16_AT = {"Q4_K": [0, 2], "Q6_K": [208]}


def every_k_block(kind: str) -> np.ndarray:
    """Q4_K's and Q6_K's space as every_block covers the others': 65,536 super-blocks, every
    float16 value in each float16 field, every byte value at every other position."""
    size = gguf_files.K_BLOCKS[kind]
    rows = np.arange(2**16, dtype=np.uint32)[:, None]
    blocks = ((rows + 37 * np.arange(size, dtype=np.uint32)) % 256).astype(np.uint8)
    for at in K_FLOAT16_AT[kind]:
        blocks[:, at : at + 2] = np.arange(2**16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    return blocks


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """float32 values as their bits, every NaN as one: equal bits, or NaN on both sides."""
    return torch.where(tensor.isnan(), -1, tensor.view(torch.int32))


@pytest.mark.parametrize("kind", sorted(gguf_files.TORCH_BLOCKS) + sorted(gguf_files.K_BLOCKS))
def test_torch_reads_every_block_as_gguf_dequantizes_it(kind):
    blocks = every_k_block(kind) if kind in gguf_files.K_BLOCKS else every_block(kind)
    with np.errstate(invalid="ignore"):  # gguf's numpy on the infinities: inf · 0
        expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[kind])
    ours = gguf_files.dequantize(kind, blocks)
    assert torch.equal(bits(ours), bits(torch.from_numpy(expected)))  # bit for bit, -0 too
    if kind in gguf_files.K_BLOCKS:
        return  # no integers for a kernel: the K formats are dequantized when read
    ints, _ = gguf_files.ints_and_scales(kind, blocks)
    low, high = (-128, 127) if kind == "Q8_0" else (-8, 7)
    assert int(ints.min()) == low and int(ints.max()) == high  # every integer the format has


@pytest.mark.parametrize("rows", [32, 96, 8192])
def test_q4_0_bytes_become_the_kernels_bytes_as_its_integers_would(rows):
    """pack_q4_0 turns the file's bytes into the int4 kernel's with byte operations: the very
    bytes pack_int4 makes from the integers. 8,192 rows of 8 blocks are every_block's 65,536
    (every byte value at every place); 96 rows, a tile of 64 and a tail of 32; 32, a tail."""
    blocks = torch.as_tensor(every_block("Q4_0")).reshape(-1, 8, 18)[:rows]
    packed, scales = quantization.pack_q4_0(blocks)
    ints, expected_scales = gguf_files.ints_and_scales("Q4_0", blocks.flatten(1).numpy())
    assert torch.equal(packed, quantization.pack_int4(ints)) and packed.is_contiguous()
    torch.testing.assert_close(scales, expected_scales, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("rows", [64, 96, 320])
def test_q4_k_bytes_become_the_kernels_bytes_as_its_integers_would(rows):
    """Q4_K's integers go to the kernel's bytes by byte operations too (its 32-byte runs),
    the very bytes pack_int4 makes from the integers, scales and zero points as q4_k_groups
    gives them. Byte p of row r is (r + 7p) mod 256: in 256 rows every value at every place;
    96 rows, a tile and a tail of 32 (through the integers)."""
    places = torch.arange(2 * 144)
    blocks = ((torch.arange(rows)[:, None] + 7 * places) % 256).to(torch.uint8).view(rows, 2, 144)
    blocks[..., 0:4] = torch.tensor([0.01, 0.02]).half().view(torch.uint8)  # d, dmin: finite
    packed, scales, zeros = quantization._file_groups("Q4_K", blocks, cpu=True)
    unsigned, expected_scales, expected_zeros = gguf_files.q4_k_groups(blocks)
    assert torch.equal(packed, quantization.pack_int4(unsigned)) and packed.is_contiguous()
    assert torch.equal(scales, expected_scales) and torch.equal(zeros, expected_zeros)


def test_q4_0_blocks_go_to_the_int4_kernel_as_they_are(files):
    """By default a Q4_0 file's matrices go to the int4 kernel: the file's own integers, and
    its float16 scales rounded to bfloat16 (the kernel's); nothing is quantized twice."""
    weights = checkpoints.open_checkpoint(files["Q4_0"]).weights
    name = "layers.1.feed_forward.w2.weight"
    matrices, note = quantization.from_file_blocks(weights, "cpu")
    assert len(matrices) == 4 * 7 + 1 and "Q4_0 blocks as the file holds them" in note
    raw = np.asarray(weights.tensors[name].data).reshape(-1, 18)  # blocks: float16 d, 16 bytes
    scales = torch.from_numpy(raw[:, :2].copy().view(np.float16).astype(np.float32))
    nibbles = torch.from_numpy(raw[:, 2:].astype(np.int16))
    ints = torch.cat([nibbles & 15, nibbles >> 4], dim=1) - 8  # Q4_0: low nibbles first
    shape = weights.shapes[name]
    assert torch.equal(matrices[name].ints, ints.reshape(shape).to(torch.int8))
    assert torch.equal(
        matrices[name].scales.float(), scales.reshape(shape[0], -1).bfloat16().float()
    )
    x = torch.randn(3, shape[1], generator=torch.Generator().manual_seed(0))
    kernel, dequantized = matrices[name].times_transposed(x), x @ matrices[name].dequantize().T
    assert (kernel - dequantized).abs().max() <= 1e-2 * dequantized.abs().max()  # bf16 input
    # LLAMA3_QUANTIZE=int4 adds nothing: the Q4_0 matrices are held, the rest are norms
    assert quantization.quantize_checkpoint(weights, "int4", "cpu", held=matrices)[0] == {}


def test_string_arrays_read_in_one_loop_are_what_ggufs_reader_reads(files, tmp_path):
    """The vocabulary's 128,256 strings are read in one loop (PlainSlices._string_array): every
    field, its types, parts and values, equals gguf's own reader's. A string whose length
    runs past the file's end is one sentence."""

    class OneStringAtATime(gguf_files.PlainSlices):  # gguf's own way through the fields
        _get_field_parts = gguf.GGUFReader._get_field_parts

    path = files["Q4_0"]
    ours, theirs = gguf_files.PlainSlices(path, "c"), OneStringAtATime(path, "c")
    assert list(ours.fields) == list(theirs.fields)
    for key, field in theirs.fields.items():
        mine = ours.fields[key]
        assert (mine.types, mine.data, mine.offset) == (field.types, field.data, field.offset)
        assert len(mine.parts) == len(field.parts) and mine.contents() == field.contents()
        assert [a.dtype for a in mine.parts] == [b.dtype for b in field.parts]
        assert b"".join(a.tobytes() for a in mine.parts) == b"".join(
            b.tobytes() for b in field.parts
        )
    tokens = theirs.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 128_256
    last = tokens[-1].encode()
    data = bytearray(path.read_bytes())
    at = data.rfind(len(last).to_bytes(8, "little") + last)
    data[at : at + 8] = (2**40).to_bytes(8, "little")  # the last token: past the end
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(bytes(data))
    with pytest.raises(checkpoint_files.CheckpointError, match="is not a readable GGUF file"):
        gguf_files.open_gguf(damaged)


def test_the_tokenizer_is_llama3s(files):
    from_gguf = tokenizer_setup.load_tokenizer(
        checkpoints.open_checkpoint(files["F32"]).tokenizer_source
    )
    packaged = tokenizer_setup.load_tokenizer(None)
    assert from_gguf._mergeable_ranks == packaged._mergeable_ranks
    assert from_gguf._special_tokens == packaged._special_tokens
    text = "the answer to the ultimate question of life 🦙\n\n<|eot_id|>"
    assert from_gguf.encode(text, allowed_special="all") == packaged.encode(
        text, allowed_special="all"
    )


def test_llama31_rope_scaling_comes_from_rope_freqs(tmp_path, small_vocabulary_file):
    factors = llama31_rope_factors(16, 500000.0, 32.0)
    tokens = gguf_files.vocabulary(small_vocabulary_file)[1]
    path = write_gguf(
        EMBEDDED, tmp_path / "scaled.gguf", vocabulary=("gpt2", tokens), rope_factors=factors
    )
    params = checkpoints.read_params(path)
    assert params["use_scaled_rope"] and params["rope_scaling"]["factor"] == 32.0
    assert "rope_freqs.weight" not in checkpoints.open_checkpoint(path).weights  # not a weight
    factors[3] *= 1.01  # not Llama 3.1's rule
    path = write_gguf(
        EMBEDDED, tmp_path / "odd.gguf", vocabulary=("gpt2", tokens), rope_factors=factors
    )
    with pytest.raises(checkpoint_files.CheckpointError, match="not Llama 3.1's RoPE scaling"):
        checkpoints.read_params(path)


def block_bytes(kind: str, rows: int, columns: int = 256) -> np.ndarray:
    """Random blocks of a format: any bytes are valid blocks (a scale may come out NaN)."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    generator = np.random.default_rng(5)
    return generator.integers(0, 256, (rows, columns // block * size), dtype=np.uint8)


def one_tensor_file(path, data, qtype):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.ffn_down.weight", data, raw_dtype=qtype)
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file):
        step()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("kind", [k for k in gguf_files.BLOCK_FORMATS if k not in KINDS])
def test_other_block_formats_are_read_as_gguf_dequantizes_them(tmp_path, kind):
    """Ollama's Q4_K_M files mix Q4_K and Q6_K (and, where rows are not a multiple of 256,
    the legacy formats); LM Studio offers the rest. A dim-64 model can't hold blocks of 256,
    so here one matrix of each, under Meta's name, in its shape."""
    data, qtype = block_bytes(kind, rows=3), gguf.GGMLQuantizationType[kind]
    weights = gguf_files.GGUFWeights(one_tensor_file(tmp_path / "one.gguf", data, qtype), {})
    tensor = weights["layers.0.feed_forward.w2.weight"].float()  # dequantized when used
    assert tensor.shape == (3, 256) and weights.formats["layers.0.feed_forward.w2.weight"] == kind
    expected = torch.from_numpy(gguf.quants.dequantize(data, qtype))
    torch.testing.assert_close(tensor, expected, rtol=0, atol=0, equal_nan=True)


# ---- the notebook on GGUF files -----------------------------------------------------------------


@pytest.fixture(scope="session")
def gguf_run(files, tmp_path_factory):
    """One run on everything a GGUF reader meets at once: an Ollama name whose blob is the
    Q4_0 file, whose blocks go to the int4 kernel as they are, by default. (F32 and BF16
    give Meta's tensors bit for bit, and Q8_0's and the other formats' blocks are dequantized
    as gguf does, above: the same notebook on the same numbers.)"""
    models = ollama_folder(tmp_path_factory.mktemp("ollama"), "llama3-tiny:q4_0", files["Q4_0"])
    settings = {"LLAMA3_CKPT": "llama3-tiny:q4_0", "OLLAMA_MODELS": str(models)}
    before = {path: path.stat().st_mtime_ns for path in files.values()}
    run = run_and_read(
        tmp_path_factory.mktemp("run-gguf"),
        {**TENSORS_ONLY, **settings},
    )
    assert {path: path.stat().st_mtime_ns for path in files.values()} == before  # nothing written
    return run


@pytest.mark.slow
def test_the_notebook_on_an_ollama_gguf_blob_predicts_42(gguf_run):
    # no shared run read: this one runs early, beside the shared executions, not at the end
    assert gguf_run["next_token_id"] == ANSWER
    assert gguf_run["prompt_tokens"] == CANONICAL_TOKENS  # Meta's tokens for the prompt
    setup = cell_text(gguf_run["notebook"], "prelims-code")
    assert "GGUF file (F32/Q4_0); Q4_0 to the int4 kernel as stored" in setup, setup
    assert "blobs/sha256-" in setup, setup
    assert "int4, one scale per 32 weights: 29 matrices' Q4_0 blocks as the file holds" in setup


# ---- one sentence for each mistake ------------------------------------------------------------


def setup_error(path_or_name, **env) -> str:
    saved = os.environ.get("OLLAMA_MODELS")
    try:
        text = setup_cell_in_process({**FLOAT32_CPU, "LLAMA3_CKPT": str(path_or_name), **env})
    finally:
        os.environ.pop("OLLAMA_MODELS", None)
        if saved is not None:
            os.environ["OLLAMA_MODELS"] = saved
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text  # one sentence, no traceback
    return lines[0]


@pytest.mark.parametrize(
    ("architecture", "adds"),
    [
        ("qwen2", "biases on the query, key and value projections"),
        ("llama4", "a mixture of experts, chunked attention and layers without RoPE"),
        ("qwen3moe", "a mixture of experts in place of the feed-forward network"),
        ("phi3", None),  # nothing said of what it adds: the sentence without it
    ],
)
def test_another_architecture(tmp_path, architecture, adds):
    path = tmp_path / f"{architecture}.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(2)
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file):
        step()
    writer.write_tensors_to_file()
    writer.close()
    said = setup_error(path)
    if architecture == "llama4":  # the last section's to run: its own keys checked at once
        assert (
            "states no llama4.embedding_length in its metadata: it is not a complete Llama 4"
            in said
        )
        return
    assert f"holds a {architecture} model (general.architecture), not llama or qwen3" in said
    if adds:
        assert f"({architecture} adds {adds}, which it does not teach)" in said
    else:
        assert "adds" not in said


def test_llama2s_vocabulary(tmp_path, small_vocabulary_file):
    tokens = gguf_files.vocabulary(small_vocabulary_file)[1]
    path = write_gguf(EMBEDDED, tmp_path / "llama2.gguf", vocabulary=("llama", tokens))
    message = setup_error(path)
    assert "a SentencePiece vocabulary, like Llama 2's (300 tokens)" in message
    assert "use a Llama 3 or Qwen3 GGUF file" in message


def test_another_vocabulary(small_vocabulary_file):
    assert "tokens that are not Llama 3's vocabulary" in setup_error(small_vocabulary_file)


def test_truncated_file(tmp_path, small_vocabulary_file):
    data = small_vocabulary_file.read_bytes()
    for fraction in (0.6, 0.001):  # cut inside the tensors; inside the header
        (tmp_path / "cut.gguf").write_bytes(data[: int(len(data) * fraction)])
        message = setup_error(tmp_path / "cut.gguf")
        assert "truncated or damaged; download it again" in message or (
            "shorter than its tensors need" in message
        ), message


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "model.gguf").write_text("<!doctype html><html>Sign in</html>")
    assert "does not start with GGUF's magic bytes" in setup_error(tmp_path / "model.gguf")


def test_a_format_that_is_not_read(tmp_path):
    path = one_tensor_file(tmp_path / "i32.gguf", np.zeros((3, 256), np.int32), None)
    with pytest.raises(checkpoint_files.CheckpointError) as error:
        gguf_files.GGUFWeights(path, {})
    message = str(error.value)
    assert "blk.0.ffn_down.weight (Meta's layers.0.feed_forward.w2.weight) is stored as I32" in (
        message
    )
    assert "use a file in F32, F16, BF16 or one of llama.cpp's block formats" in message


def test_a_folder_with_one_or_several_gguf_files(tmp_path, small_vocabulary_file):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.gguf").symlink_to(small_vocabulary_file)
    assert checkpoint_files.find_checkpoint_dir(str(tmp_path / "one")).name == "model.gguf"
    (tmp_path / "one" / "other.gguf").symlink_to(small_vocabulary_file)
    assert "holds 2 GGUF files" in setup_error(tmp_path / "one")


def test_ollama_name_not_pulled(tmp_path):
    message = setup_error("llama3.2:1b", OLLAMA_MODELS=str(tmp_path))
    assert f"Ollama has no model llama3.2:1b in {tmp_path}" in message
    assert "run `ollama pull llama3.2:1b`" in message


def test_ollama_blob_missing_or_manifest_broken(tmp_path, small_vocabulary_file):
    models = ollama_folder(tmp_path / "models", "llama3:8b", small_vocabulary_file)
    for blob in (models / "blobs").iterdir():
        blob.unlink()
    assert "which is not in" in setup_error("llama3:8b", OLLAMA_MODELS=str(models))
    manifest = model_ids.ollama_manifest(models, "llama3:8b")
    manifest.write_text("{}")
    assert "is not an Ollama manifest" in setup_error("llama3:8b", OLLAMA_MODELS=str(models))


@pytest.mark.parametrize(
    "digest",
    ["sha256:../../../outside", "../outside", "/etc/hostname", "sha256:" + "0" * 63, 7],
)
def test_a_manifest_that_names_a_path_is_refused(tmp_path, small_vocabulary_file, digest):
    # a blob's name is its digest: a crafted manifest must not reach a file outside blobs/
    models = ollama_folder(tmp_path / "models", "llama3:8b", small_vocabulary_file)
    (models / "outside").symlink_to(small_vocabulary_file)  # what blobs/../outside reaches
    manifest = model_ids.ollama_manifest(models, "llama3:8b")
    layers = json.loads(manifest.read_text())["layers"]
    layers[1]["digest"] = digest
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    message = setup_error("llama3:8b", OLLAMA_MODELS=str(models))
    assert "not a sha256 digest: run `ollama pull llama3:8b` again." in message


def test_an_ollama_name_resolves_to_its_blob_in_place(tmp_path, small_vocabulary_file, monkeypatch):
    models = ollama_folder(tmp_path / "models", "llama3.2:1b", small_vocabulary_file)
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    found = checkpoint_files.find_checkpoint_dir("llama3.2:1b")
    assert found.parent == models / "blobs" and found.resolve() == small_vocabulary_file.resolve()
    # a blob has no .gguf suffix: the magic says
    assert checkpoints.reader_for(found) is gguf_files


@pytest.mark.slow  # writes a whole GGUF file of the embedded model (seconds)
def test_the_context_is_the_one_the_file_states(tmp_path):
    # llama.context_length, where the metadata states it (as llama.cpp's converter writes it)
    stated = write_gguf(EMBEDDED, tmp_path / "short.gguf", "F32", context_length=2048)
    assert checkpoints.open_checkpoint(stated).params["context_length"] == 2048


def test_asking_whether_a_tensor_is_there_reads_nothing(files, monkeypatch):
    # `"output.weight" in model` (the output cell) once dequantized the whole matrix to answer
    weights = checkpoints.open_checkpoint(files["Q4_0"]).weights
    monkeypatch.setattr(gguf_files, "dequantize", lambda *_: pytest.fail("a tensor was read"))
    assert "output.weight" in weights and "layers.0.attention.wq.weight" in weights
    assert "lm_head.weight" not in weights and "layers.9.attention.wq.weight" not in weights
    with pytest.raises(pytest.fail.Exception):
        weights["output.weight"].float()  # using it does dequantize: the check above can fail


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
def test_a_prompts_rows_of_a_block_matrix_are_all_that_is_dequantized(files, kind, monkeypatch):
    # the embedding's lookup, table[token_ids], in any shape of ids, reads only those rows;
    # any other use sees the whole matrix, as gguf dequantizes it
    table = checkpoints.open_checkpoint(files[kind]).weights["tok_embeddings.weight"]
    whole = table.float()
    assert torch.equal(
        whole,
        torch.from_numpy(gguf.quants.dequantize(table.blocks, gguf.GGMLQuantizationType[kind])),
    )
    monkeypatch.setattr(gguf_files.BlockMatrix, "full", lambda _: pytest.fail("all rows read"))
    ids = [128000, 1820, 4320, 220]
    assert torch.equal(table[ids], whole[ids]) and torch.equal(table[7], whole[7])
    batch = torch.tensor([[128000, 1820], [4320, 220]])
    assert torch.equal(table[batch], whole[batch]) and table.shape == whole.shape
    # a range of rows (the quantization lesson's `w1[:1024]`), alone or with columns
    for rows in [slice(None, 1024), slice(5, -3, 7), slice(-2, None), slice(9, 3), slice(None)]:
        assert torch.equal(table[rows], whole[rows]), rows
        assert torch.equal(table[rows, 2:9], whole[rows, 2:9]), rows
    assert torch.equal(table[:3, 0], whole[:3, 0]) and torch.equal(table[1:4, ...], whole[1:4])
    with pytest.raises(pytest.fail.Exception):
        table.float()  # the whole matrix: the patch above sees it


def test_q4_k_blocks_go_to_the_int4_kernel_with_a_zero_point(tmp_path):
    """Q4_K (Ollama's llama3.1:8b is mostly Q4_K) goes to the int4 kernel as the file holds it:
    per group of 32, scale d·sc and zero point 8·scale − dmin·m, so that the kernel's
    (q − 8)·scale + zero is Q4_K's d·sc·q − dmin·m. The kernel holds both in bfloat16, so each
    weight is within 2^-8·(8·|scale| + |zero|) of gguf's own dequantization (half a bfloat16
    step of each), and nothing else
    moves."""
    data = block_bytes("Q4_K", rows=64, columns=512)
    blocks = data.reshape(64, 2, 144)
    scales = np.random.default_rng(6).uniform(1e-3, 1e-2, (64, 2, 2)).astype(np.float16)
    blocks[..., 0:4] = scales.view(np.uint8)  # d and dmin: finite, as a quantizer writes them
    path = one_tensor_file(tmp_path / "q4_k.gguf", data, gguf.GGMLQuantizationType.Q4_K)
    weights = gguf_files.GGUFWeights(path, {})
    name = "layers.0.feed_forward.w2.weight"
    assert weights.kernel_ready == [name] and "Q4_K to the int4 kernel as stored" in weights.note()
    matrices, note = quantization.from_file_blocks(weights, "cpu")
    assert "1 matrices' Q4_K blocks as the file holds them" in note
    matrix = matrices[name]
    expected = torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q4_K))
    _, exact_scales, exact_zeros = gguf_files.q4_k_groups(torch.as_tensor(blocks))
    bound = 2**-8 * (8 * exact_scales.abs() + exact_zeros.abs()) * (1 + 2**-20)
    moved = (matrix.dequantize() - expected).abs().unflatten(1, (-1, 32)).amax(dim=-1)
    assert (moved <= bound).all() and moved.max() > 0  # rounded, within the bound
    x = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    kernel = matrix.times_transposed(x)
    reference = x.bfloat16().float() @ matrix.dequantize().T
    assert (kernel - reference).abs().max() <= 1e-2 * reference.abs().max()


def test_q8_0_blocks_go_to_the_int4_kernel_in_two_halves(tmp_path):
    """Q8_0 (Ollama's llama3.2:1b) goes to the int4 kernel as two halves of each 8-bit q:
    q = 16·high + low, high with scale 16·d, low − 8 with scale d and zero point 8·d. The
    kernel holds d in bfloat16, so the matrix is bf16(d)·q exactly, every q from -128 to 127
    included, whether read back from the kernel's own bytes or from the file's blocks; and
    x @ W.T through the kernel is that matrix's product."""
    data = block_bytes("Q8_0", rows=64, columns=512)
    blocks = data.reshape(64, 16, 34)
    blocks[:, :, 2:] = np.arange(256, dtype=np.uint8).reshape(8, 32).repeat(8, axis=0)[:, None]
    d = np.random.default_rng(8).uniform(1e-3, 1e-2, (64, 16)).astype(np.float16)
    blocks[..., 0:2] = d.view(np.uint8).reshape(64, 16, 2)
    path = one_tensor_file(tmp_path / "q8_0.gguf", data, gguf.GGMLQuantizationType.Q8_0)
    weights = gguf_files.GGUFWeights(path, {})
    name = "layers.0.feed_forward.w2.weight"
    assert weights.kernel_ready == [name]
    assert "Q8_0 to the int4 kernel in two halves" in weights.note()
    matrices, note = quantization.from_file_blocks(weights, "cpu")
    assert "1 matrices' Q8_0 (as two int4 halves) blocks as the file holds them" in note
    matrix = matrices[name]
    ints, scales = gguf_files.ints_and_scales("Q8_0", data)
    assert ints.min() == -128 and ints.max() == 127  # every integer Q8_0 can hold
    exact = torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q8_0))
    assert torch.equal(quantization.dequantized(ints, scales), exact)  # gguf's, in float32
    expected = quantization.dequantized(ints, scales.bfloat16().float())  # d in bfloat16
    kernel_values = matrix.halves.dequantize(torch.float32)  # read back from the kernel's bytes
    assert torch.equal(kernel_values[:, :512] + kernel_values[:, 512:], expected)
    assert torch.equal(matrix.dequantize(torch.float32), expected)  # and from the file's blocks
    assert matrix.held_nbytes == 64 * 512 * 5 // 4  # 1.25 bytes a weight; bfloat16 takes 2
    x = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    kernel = matrix.times_transposed(x)
    reference = x.bfloat16().float() @ expected.T
    assert (kernel - reference).abs().max() <= 1e-2 * reference.abs().max()
    on_gpu = quantization.from_file_blocks(weights, "cuda", others=False)[0]  # no int4 kernel
    assert on_gpu == {}  # so it is dequantized, as below


def test_a_files_blocks_are_made_in_the_background_and_waited_for_one_by_one():
    """Setup does not wait for a file's blocks: a thread makes the matrices in the order a
    forward pass reads them (layer by layer, the output matrix last), what is asked for is
    known at once, reading one waits for it alone, and a failure is raised where its matrix
    is read, not in the thread."""
    names = [
        "output.weight",
        "layers.10.attention.wq.weight",
        "layers.2.attention.wk.weight",
        "layers.2.attention.wq.weight",
    ]
    order = quantization.in_use_order(names)
    assert order == names[2:] + names[1:2] + names[:1]
    released, made = threading.Event(), []

    def maker(name):
        def make():
            if name == "layers.10.attention.wq.weight":
                released.wait(timeout=60)
                raise MemoryError("out of memory: made in the thread")
            made.append(name)
            return torch.zeros(1)

        return make

    matrices = quantization.MadeInTheBackground({name: maker(name) for name in order})
    assert "output.weight" in matrices and "layers.3.attention.wq.weight" not in matrices
    assert len(matrices) == 4 and list(matrices) == order
    assert torch.equal(matrices["layers.2.attention.wq.weight"], torch.zeros(1))
    assert "output.weight" not in made  # still waiting behind layer 10's
    released.set()
    with pytest.raises(MemoryError, match="made in the thread"):
        matrices["layers.10.attention.wq.weight"]
    with pytest.raises(MemoryError):
        matrices.finish()
    assert made == order[:2]
    with pytest.raises(KeyError):
        matrices["layers.3.attention.wq.weight"]


def test_a_block_matrix_no_kernel_takes_is_dequantized_in_the_background_too(tmp_path, monkeypatch):
    """Q6_K (a Q4_K_M file's output matrix and half its w2 and wv) is dequantized into the
    compute dtype in the same background thread as the kernel's blocks, in the order a
    forward pass reads them, unless LLAMA3_QUANTIZE quantizes it again (`others=False`). Here
    3 rows at a time: 22 blocks of rows, the last one partial."""
    monkeypatch.setattr(gguf_files.BlockMatrix, "WEIGHTS_AT_A_TIME", 3 * 512)
    data = block_bytes("Q6_K", rows=64, columns=512)
    data.reshape(64, 2, 210)[..., 208:210] = np.array([1e-3], dtype=np.float16).view(np.uint8)
    path = one_tensor_file(tmp_path / "q6_k.gguf", data, gguf.GGMLQuantizationType.Q6_K)
    weights = gguf_files.GGUFWeights(path, {})
    name = "layers.0.feed_forward.w2.weight"
    matrices, note = quantization.from_file_blocks(weights, "cpu", torch.bfloat16)
    assert note.startswith("1 Q6_K matrices dequantized to bfloat16: in the background")
    expected = torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q6_K))
    assert torch.equal(matrices[name], expected.bfloat16())
    assert quantization.from_file_blocks(weights, "cpu", torch.bfloat16, others=False) == ({}, None)


def test_a_block_matrix_no_kernel_takes_is_dequantized_once_and_kept(files):
    """Q6_K's matrices (and Q8_0's where no int4 kernel takes them) are dequantized at their
    first read, a block of rows at a time, into the compute dtype, and kept: every later read,
    and the output projection's row blocks, hand out that copy, where dequantizing again would
    cost each pass seconds."""
    weights = checkpoints.open_checkpoint(files["Q8_0"]).weights
    reader = weight_loading.WeightReader(weights, torch.device("cpu"), torch.bfloat16, True)
    name = "output.weight"
    first = reader(name)
    expected = weights[name].full().bfloat16()
    assert first.dtype == torch.bfloat16 and torch.equal(first, expected)
    assert reader(name) is first and list(reader.in_row_blocks(name))[0] is first
    budget = weights[name].WEIGHTS_AT_A_TIME
    weights[name].__class__.WEIGHTS_AT_A_TIME = 7 * weights[name].shape[1]  # many blocks of rows
    try:
        assert torch.equal(weights[name].dequantized(torch.bfloat16), expected)  # the same values
    finally:
        weights[name].__class__.WEIGHTS_AT_A_TIME = budget
