"""A Hugging Face folder runs the notebook unchanged: Meta's tensors bit for bit, the same "42".

The folders are written by transformers' own `save_pretrained` (testbeds/hf_folder.py)
from Meta-layout checkpoints: the embedded one, single-file and sharded, and random ones of
several shapes (grouped-query, tied output, scaled RoPE with a factor no rule would guess).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

import tokenizer_setup
from plumbing import (
    checkpoint_files,
    checkpoints,
    hf_checkpoint,
    model_sizes,
    tensor_names,
)
from testbeds.hf_folder import respell_config, save_streaming, save_with_transformers
from testbeds.hub_cache import cache_model
from testbeds.presets import PRESETS
from testbeds.random_checkpoint import write_checkpoint
from tests.support import reference_models
from tests.support.notebook_values import (
    FLOAT32_CPU,
    TENSORS_ONLY,
    run_and_read,
    setup_cell_in_process,
)

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out

EMBEDDED = checkpoint_files.EMBEDDED_CHECKPOINT
FP32_TOLERANCE = reference_models.FP32_TOLERANCE

# (params, tied output, RoPE scale factor)
SHAPES = {
    "gqa": (PRESETS["hf-gqa"], False, None),
    "no-gqa-tied": (PRESETS["hf-no-gqa"], True, None),
    "scaled-rope": (PRESETS["hf-scaled-rope"], False, 16.0),  # neither 8 nor 32: the file says
}


@pytest.fixture(scope="session")
def embedded_hf(tmp_path_factory):
    return save_with_transformers(EMBEDDED, tmp_path_factory.mktemp("hf") / "single")


@pytest.fixture(scope="session")
def embedded_hf_sharded(tmp_path_factory):
    return save_with_transformers(
        EMBEDDED, tmp_path_factory.mktemp("hf") / "sharded", shard_size="8MB", spelling="4"
    )


@pytest.fixture(scope="session")
def random_pairs(tmp_path_factory):
    """Each shape: (Meta folder, Hugging Face folder, scale factor)."""
    pairs = {}
    for index, (name, (params, tied, factor)) in enumerate(SHAPES.items()):
        base = tmp_path_factory.mktemp(name)
        meta = write_checkpoint(base / "meta", dict(params), seed=20 + index, tied_output=tied)
        shard_size = "6MB" if name == "gqa" else None  # one random folder sharded too
        pairs[name] = (
            meta,
            save_with_transformers(meta, base / "hf", shard_size=shard_size, scale_factor=factor),
            factor,
        )
    return pairs


def assert_same_tensors(meta_folder, hf_folder):
    meta, hf = (
        checkpoints.open_checkpoint(meta_folder).weights,
        checkpoints.open_checkpoint(hf_folder).weights,
    )
    assert list(hf) == list(meta)  # in the order of Meta's file, which the notebook's listing shows
    for name in meta:
        assert hf[name].dtype == meta[name].dtype, name
        assert torch.equal(hf[name], meta[name]), name


def test_embedded_tensors_bit_for_bit(embedded_hf, embedded_hf_sharded):
    assert (embedded_hf / "model.safetensors").exists()
    assert (embedded_hf_sharded / "model.safetensors.index.json").exists()
    assert len(list(embedded_hf_sharded.glob("model-*.safetensors"))) > 2
    for folder in (embedded_hf, embedded_hf_sharded):
        assert checkpoints.reader_for(folder) is hf_checkpoint
        assert_same_tensors(EMBEDDED, folder)


def test_streamed_writer_matches_transformers(tmp_path, embedded_hf):
    """The benchmark's writer (shard by shard, for the 8B) makes the same folder as
    save_pretrained."""
    folder = save_streaming(EMBEDDED, tmp_path / "streamed", shard_bytes=8 * 2**20)
    assert len(list(folder.glob("model-*.safetensors"))) > 2
    assert_same_tensors(EMBEDDED, folder)
    assert hf_checkpoint.read_params(folder) == hf_checkpoint.read_params(embedded_hf)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_random_shapes_bit_for_bit(random_pairs, shape):
    meta, hf, factor = random_pairs[shape]
    assert (hf / "model.safetensors.index.json").exists() == (shape == "gqa")
    assert_same_tensors(meta, hf)
    ours, theirs = checkpoints.open_checkpoint(hf).params, checkpoints.open_checkpoint(meta).params
    for key in ("dim", "n_layers", "n_heads", "vocab_size", "norm_eps", "rope_theta"):
        assert ours[key] == theirs[key], key
    for key in ("n_kv_heads", "ffn_hidden", "tied_output"):  # stated by one, filled for the other
        assert ours[key] == theirs[key], key
    assert ours["use_scaled_rope"] == bool(theirs.get("use_scaled_rope"))
    if factor is not None:
        assert ours["rope_scaling"]["factor"] == factor


def read_in_both_spellings(hf, tmp_path) -> dict[str, dict]:
    """config.json rewritten as transformers 4.x wrote it (the hub's files: rope_theta +
    rope_scaling) and as 5.x does (rope_parameters), each read by the loader."""
    read = {}
    for spelling in ("4", "5"):
        folder = tmp_path / spelling
        folder.mkdir()
        (folder / "config.json").write_text((hf / "config.json").read_text())
        respell_config(folder, spelling)
        config = json.loads((folder / "config.json").read_text())
        assert ("rope_parameters" in config) == (spelling == "5")
        read[spelling] = hf_checkpoint.read_params(folder)
    return read


def test_one_interface_for_a_hugging_face_folder(embedded_hf):
    meta, ours = checkpoints.open_checkpoint(EMBEDDED), checkpoints.open_checkpoint(embedded_hf)
    assert ours.reader is hf_checkpoint
    sizes = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_hidden", "tied_output")
    assert {key: ours.params[key] for key in sizes} == {key: meta.params[key] for key in sizes}
    assert ours.weights.shapes == meta.weights.shapes  # Meta's names, in Meta's order
    assert ours.weights.dtypes == meta.weights.dtypes
    name = "layers.0.attention.wq.weight"
    assert ours.weights.describe(name) == f"model.layers.0.self_attn.q_proj.weight (Meta's {name})"


def test_both_config_spellings(tmp_path, embedded_hf):
    read = read_in_both_spellings(embedded_hf, tmp_path)
    assert read["4"] == read["5"]


def test_both_spellings_of_scaled_rope(tmp_path, random_pairs):
    _, hf, factor = random_pairs["scaled-rope"]
    read = read_in_both_spellings(hf, tmp_path)
    assert read["4"] == read["5"]
    assert read["4"]["rope_scaling"] == {
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def test_rows_round_trip():
    """The loader's un-permutation inverts Hugging Face's converter (as reference_models does
    it)."""
    weight = torch.arange(6 * 16 * 4, dtype=torch.float32).view(6 * 16, 4)
    assert torch.equal(
        hf_checkpoint.hf_rows_to_meta(reference_models.meta_rows_to_hf(weight, 6), 6), weight
    )
    assert not torch.equal(reference_models.meta_rows_to_hf(weight, 6), weight)


def test_tokenizer_json_is_llama3(embedded_hf, tokenizer):
    from_json = tokenizer_setup.load_tokenizer(
        checkpoints.open_checkpoint(embedded_hf).tokenizer_source
    )
    assert from_json.name.endswith("tokenizer.json")
    text = (
        "the answer to the ultimate question of life, the universe, and everything is 42 "
        "— ¿qué? 東京 🦙\n\tend"
    )
    assert from_json.encode(text) == tokenizer.encode(text)
    assert from_json.n_vocab == tokenizer.n_vocab
    for special in [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]:
        assert from_json.encode_single_token(special) == tokenizer.encode_single_token(special)


HUB_ID = "test-org/llama3-tiny-hitchhiker"


@pytest.fixture(scope="session")
def hf_run(embedded_hf_sharded, tmp_path_factory):
    """The lesson's tensors on the Hugging Face folder, reached by its model id: the folder is
    a snapshot in a hub cache made by hand (LLAMA3_CKPT=org/name, HF_HUB_CACHE), read in place.
    The demos run on a Hugging Face folder in test_requirements (fresh_env)."""
    hub = tmp_path_factory.mktemp("hub")
    snapshot = cache_model(embedded_hf_sharded, hub, HUB_ID)
    settings = {**TENSORS_ONLY, "LLAMA3_CKPT": HUB_ID, "HF_HUB_CACHE": str(hub)}
    run = run_and_read(tmp_path_factory.mktemp("hf-run"), settings)
    run["snapshot"] = snapshot
    return run


def test_notebook_on_hf_folder_gives_the_same_tensors_and_42(hf_run, embedded_run):
    assert hf_run["next_token_id"] == embedded_run["next_token_id"] == 2983
    assert hf_run["prompt_tokens"] == embedded_run["prompt_tokens"]
    for name in ("token_embeddings", "final_normed", "logits"):
        assert torch.equal(hf_run[name], embedded_run[name]), name
    for stage in ("residual_after_attention", "residual_after_ffn"):
        for mine, meta in zip(hf_run[stage], embedded_run[stage], strict=True):
            assert torch.equal(mine, meta), stage
    cells = {cell.id: cell for cell in hf_run["notebook"].cells}
    setup = "".join(output.get("text", "") for output in cells["prelims-code"].outputs)
    assert "Hugging Face layout" in setup
    assert f"checkpoint: {hf_run['snapshot']}" in setup  # the cache's own folder: nothing copied
    embedded_cells = {cell.id: cell for cell in embedded_run["notebook"].cells}
    listing = "model-load"  # the tensor names and count the lesson prints, in Meta's order
    assert cells[listing].outputs == embedded_cells[listing].outputs, listing


def from_pretrained(folder):
    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_parity_with_transformers_from_the_same_folder(hf_run, embedded_hf_sharded):
    theirs = reference_models.hf_tensors(
        from_pretrained(embedded_hf_sharded), hf_run["prompt_tokens"]
    )
    diffs = reference_models.layer_differences(hf_run, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= FP32_TOLERANCE, f"{worst}: {diffs[worst]:.2e} relative"
    assert int(theirs["logits"].argmax()) == hf_run["next_token_id"]


def test_scaled_rope_uses_the_files_factor(random_pairs, tmp_path):
    """factor 16 is in no rule: the notebook must take it from config.json, as transformers does."""
    _, hf, factor = random_pairs["scaled-rope"]
    ours = run_and_read(tmp_path, {**TENSORS_ONLY, "LLAMA3_CKPT": str(hf)})
    assert ours["rope_scale_factor"] == factor
    theirs = reference_models.hf_tensors(from_pretrained(hf), ours["prompt_tokens"])
    diffs = reference_models.layer_differences(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= FP32_TOLERANCE, f"{worst}: {diffs[worst]:.2e} relative"
    n_parameters = sum(
        math.prod(shape)
        for shape in tensor_names.tensor_shapes(checkpoints.open_checkpoint(hf).weights).values()
    )
    assert n_parameters == model_sizes.n_parameters(checkpoints.read_params(hf))


# ---- bad input: one sentence each, nothing written into the folder ------------------------


@pytest.fixture
def hf_copy(tmp_path, embedded_hf_sharded):
    return shutil.copytree(embedded_hf_sharded, tmp_path / "copy")


def setup_error(folder) -> str:
    """What the notebook's setup cell would raise for this folder (its first steps, in order)."""
    with pytest.raises(checkpoint_files.CheckpointError) as caught:
        checkpoints.open_checkpoint(checkpoint_files.find_checkpoint_dir(str(folder))).check()
    return str(caught.value)


def test_another_architecture(hf_copy):
    config = json.loads((hf_copy / "config.json").read_text())
    config["architectures"], config["model_type"] = ["MistralForCausalLM"], "mistral"
    (hf_copy / "config.json").write_text(json.dumps(config))
    assert (
        "describes MistralForCausalLM, not LlamaForCausalLM or Qwen3ForCausalLM: this notebook "
        "runs Llama 3 and Qwen3 models only (mistral adds attention over a sliding window, which "
        "it does not teach)" in setup_error(hf_copy)
    )


def test_pytorch_model_bin_only(tmp_path, embedded_hf):
    (tmp_path / "config.json").write_text((embedded_hf / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    assert (
        "holds its weights as pytorch_model*.bin (pickles), which this notebook does not load: "
        "download the model's *.safetensors" in setup_error(tmp_path)
    )


def test_missing_shard(hf_copy):
    shard = sorted(hf_copy.glob("model-*.safetensors"))[1]
    shard.unlink()
    assert (
        f"has no {shard.name}, which model.safetensors.index.json lists: download the missing "
        "shard(s)" in setup_error(hf_copy)
    )


def test_tensor_of_the_wrong_shape(hf_copy):
    index = json.loads((hf_copy / "model.safetensors.index.json").read_text())
    file = hf_copy / index["weight_map"]["model.layers.0.self_attn.k_proj.weight"]
    tensors = load_file(file)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64, dtype=torch.bfloat16)
    save_file(tensors, file, metadata={"format": "pt"})
    expected = (
        "model.layers.0.self_attn.k_proj.weight (Meta's layers.0.attention.wk.weight) "
        "has shape [64, 64] but config.json implies [32, 64]"
    )
    assert expected in setup_error(hf_copy)


def test_truncated_safetensors(hf_copy):
    shard = sorted(hf_copy.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    assert "is not a readable safetensors file" in setup_error(hf_copy)
    assert "download it again" in setup_error(hf_copy)


LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d2b\nsize 4976698672\n"


def test_git_lfs_pointers_instead_of_files(hf_copy):
    shard = sorted(hf_copy.glob("model-*.safetensors"))[0]
    shard.write_text(LFS_POINTER)
    assert f"{shard} is a Git LFS pointer, not the file itself (run `git lfs pull`" in setup_error(
        hf_copy
    )
    (hf_copy / "tokenizer.json").write_text(LFS_POINTER)
    with pytest.raises(
        tokenizer_setup.TokenizerFileError, match="tokenizer.json is a Git LFS pointer"
    ):  # the folder's own answer: its weights, pointers too, would stop open_checkpoint first
        tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(hf_copy))


def edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rms_norm_eps": "1e-5"}, "config.json: rms_norm_eps is '1e-5', it must be a number."),
        (
            {"num_hidden_layers": 4.5},
            "config.json: num_hidden_layers is 4.5, it must be an integer.",
        ),
        ({"rope_theta": [500000]}, "config.json: rope_theta is [500000], it must be a number"),
        (
            {"num_key_value_heads": 3},
            "num_attention_heads 4 is not divisible by num_key_value_heads 3, so query heads "
            "cannot share key/value heads; fix config.json",
        ),
        (
            {"rope_scaling": "llama3"},
            "config.json: rope_scaling is 'llama3', not an object of RoPE settings",
        ),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": "eight",
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                }
            },
            "the llama3 RoPE scaling's factor is 'eight', it must be a positive number",
        ),
    ],
)
def test_bad_config_values_name_the_key_as_config_json_spells_it(hf_copy, changes, message):
    edit_config(hf_copy, **changes)
    assert message in setup_error(hf_copy)


def test_an_untied_config_needs_its_output_matrix(random_pairs, tmp_path):
    tied = shutil.copytree(
        random_pairs["no-gqa-tied"][1], tmp_path / "tied"
    )  # no lm_head.weight in its files
    assert "tied output matrix" in checkpoints.open_checkpoint(tied).check()
    edit_config(tied, tie_word_embeddings=False)
    expected = (
        "The checkpoint has no output matrix lm_head.weight (Meta's output.weight), "
        "and config.json does not say it is tied to the embedding"
    )
    assert expected in setup_error(tied)


def test_rope_scaling_of_the_default_type_is_plain_rope(hf_copy):
    edit_config(hf_copy, rope_scaling={"rope_type": "default"})
    params = checkpoints.read_params(hf_copy)
    assert params["use_scaled_rope"] is False and "rope_scaling" not in params


def test_index_without_a_map_of_names_to_files(hf_copy):
    (hf_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": ["model-00001-of-00003.safetensors"]})
    )
    assert (
        "is not a readable safetensors index (no weight_map from names to files): download it "
        "again." in setup_error(hf_copy)
    )


def test_tokenizer_json_of_another_vocabulary(hf_copy):
    data = json.loads((hf_copy / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    first, second = "Ġthe", "Ġand"
    vocab[first], vocab[second] = vocab[second], vocab[first]  # two ranks swapped: another BPE
    (hf_copy / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(tokenizer_setup.TokenizerFileError, match="not Llama 3's vocabulary"):
        tokenizer_setup.load_tokenizer(checkpoints.open_checkpoint(hf_copy).tokenizer_source)


def test_setup_cell_on_a_bad_hf_folder_is_one_sentence_and_writes_nothing(hf_copy):
    (sorted(hf_copy.glob("model-*.safetensors"))[1]).unlink()
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in hf_copy.iterdir())
    text = setup_cell_in_process({**FLOAT32_CPU, "LLAMA3_CKPT": str(hf_copy)})
    assert text.startswith("CheckpointError: ") and text.count("\n") == 1
    assert "which model.safetensors.index.json lists: download the missing shard(s)" in text
    assert (
        sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in hf_copy.iterdir())
        == before
    )


def test_the_context_is_the_one_config_json_states(hf_copy):
    # max_position_embeddings, where a config.json states it; else the release's rule
    stated = json.loads((hf_copy / "config.json").read_text())["max_position_embeddings"]
    assert checkpoints.open_checkpoint(hf_copy).params["context_length"] == stated
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    assert checkpoints.open_checkpoint(hf_copy).params["context_length"] == 4096
    del config["max_position_embeddings"]
    (hf_copy / "config.json").write_text(json.dumps(config))
    assert checkpoints.open_checkpoint(hf_copy).params["context_length"] == 8192  # Llama 3's
