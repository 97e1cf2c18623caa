"""The embedded checkpoint is in Meta's exact layout, within the size limits."""

import io
import json

import pytest
import torch

from plumbing import checkpoint_files, checkpoints, meta_checkpoint, model_sizes, tensor_names
from plumbing.friendly_errors import CheckpointError

FOLDER = checkpoint_files.EMBEDDED_CHECKPOINT
META_PARAM_KEYS = {
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "multiple_of",
    "ffn_dim_multiplier",
    "norm_eps",
    "rope_theta",
}


@pytest.fixture(scope="module")
def params():
    return json.loads((FOLDER / "params.json").read_text())


@pytest.fixture(scope="module")
def state_dict():
    return torch.load(
        FOLDER / "consolidated.00.pth", map_location="cpu", mmap=True, weights_only=True
    )


def test_files(params):
    assert sorted(p.name for p in FOLDER.iterdir()) == [
        "consolidated.00.pth",
        "params.json",
    ]  # no tokenizer.model: Meta's file
    assert (FOLDER / "consolidated.00.pth").stat().st_size <= 40_000_000
    assert META_PARAM_KEYS <= set(params) <= META_PARAM_KEYS | {"use_scaled_rope"}


def test_params_meet_the_design(params):
    assert params["vocab_size"] == 128256
    assert params["rope_theta"] == 500000.0
    assert params["n_layers"] >= 2
    assert params["n_kv_heads"] >= 2 and params["n_heads"] // params["n_kv_heads"] >= 2
    assert params["n_heads"] % params["n_kv_heads"] == 0 and params["dim"] % params["n_heads"] == 0
    assert checkpoints.read_params(FOLDER) == params


def test_keys_shapes_and_dtype(params, state_dict):
    shapes = model_sizes.expected_shapes(params)
    assert set(state_dict) == set(shapes)
    for name, tensor in state_dict.items():
        assert tuple(tensor.shape) == shapes[name], name
        assert tensor.dtype == torch.bfloat16, name
        assert torch.isfinite(tensor.float()).all(), name


def test_unused_vocabulary_rows_are_exactly_zero(state_dict):
    # Rows for tokens the corpus never uses stay zero (that is why git stores the file in under 1
    # MB).
    used = state_dict["tok_embeddings.weight"].float().abs().sum(-1) > 0
    assert 1000 < int(used.sum()) < 5000
    assert torch.equal(state_dict["output.weight"].float().abs().sum(-1) > 0, used)


def test_one_interface_opens_it():
    checkpoint = checkpoints.open_checkpoint(FOLDER)
    assert checkpoint.reader is meta_checkpoint
    assert checkpoint.stated == checkpoints.read_params(FOLDER)
    # params.json states n_kv_heads; head_dim is dim / n_heads; ffn_hidden follows Meta's rule;
    # the file holds output.weight; the context is Llama 3's (no use_scaled_rope); no QK-norm
    filled_in = {"head_dim": 16, "ffn_hidden": 224, "tied_output": False, "context_length": 8192}
    filled_in["qk_norm"] = False
    assert checkpoint.params == {**checkpoint.stated, **filled_in}
    assert checkpoint.weights.shapes == model_sizes.expected_shapes(checkpoint.params)
    assert set(checkpoint.weights.dtypes.values()) == {torch.bfloat16}
    assert all(checkpoint.weights.about(name) for name in checkpoint.weights)
    assert checkpoint.check().startswith("checkpoint ok: 4 layers")


def test_defaults_are_filled_once():
    stated = {"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 256, "multiple_of": 32}
    sizes = model_sizes.filled(stated)
    filled_in = (sizes["n_kv_heads"], sizes["head_dim"], sizes["ffn_hidden"], sizes["tied_output"])
    assert filled_in == (4, 16, 192, False) and sizes["qk_norm"] is False
    assert model_sizes.filled(stated | {"head_dim": 32})["head_dim"] == 32  # stated (Qwen3)
    assert model_sizes.filled(sizes, tied_output=True) == sizes  # filled params stay as they are
    assert "n_kv_heads" not in stated  # a copy


def test_one_name_map_both_ways(params):
    for name in model_sizes.expected_shapes(params):
        for layout in (tensor_names.HUGGING_FACE, tensor_names.GGUF):
            assert layout.to_meta(layout.from_meta(name)) == name
    assert tensor_names.GGUF.from_meta("layers.3.feed_forward.w1.weight") == "blk.3.ffn_gate.weight"
    assert tensor_names.HUGGING_FACE.to_meta("model.norm.weight") == "norm.weight"


def test_the_filled_sizes_are_frozen_and_travel():
    # one ModelArgs, read as a dict or by attribute, never changed in place; a copy is a dict;
    # it pickles as itself (torch.save, worker processes)
    params = checkpoints.open_checkpoint(FOLDER).params
    assert params.head_dim == params["head_dim"] == 16 and params.get("missing") is None
    for change in (
        lambda: params.__setitem__("dim", 1),
        lambda: params.update(dim=1),
        lambda: params.pop("dim"),
        lambda: params.setdefault("x", 1),
    ):
        with pytest.raises(TypeError, match="frozen"):
            change()
    assert params["dim"] == 64
    assert type(params | {"dim": 1}) is dict and type(dict(params)) is dict
    buffer = io.BytesIO()
    torch.save(params, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert type(again) is model_sizes.ModelArgs and again == params
    assert model_sizes.filled(params) == params  # filling filled sizes changes nothing


def test_each_path_is_read_by_the_reader_it_looks_like(tmp_path):
    assert checkpoints.reader_for(FOLDER) is meta_checkpoint
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CheckpointError, match=r"is in none of the layouts this notebook reads"):
        checkpoints.reader_for(tmp_path)


def test_the_tiny_llama4_is_in_the_layout_metas_code_loads():
    # generators/train_llama4_checkpoint.py: the names Meta's llama4 Transformer's state_dict
    # gives (tests/test_llama4.py loads it there, strict), in bf16; Llama 4's vocabulary
    folder = checkpoint_files.EMBEDDED_LLAMA4
    assert (folder / "consolidated.00.pth").stat().st_size <= 60_000_000
    checkpoint = checkpoints.open_checkpoint(folder, llama4=True)
    params = checkpoint.params
    assert list(checkpoint.weights.shapes.items()) == list(
        model_sizes.expected_shapes(params).items()
    )
    assert set(checkpoint.weights.dtypes.values()) == {torch.bfloat16}
    assert params["vocab_size"] == 202048 and params["moe_layers"] == (1, 3)
    assert params["nope_layers"] == (3,) and params["expert_hidden"] == 128
    assert model_sizes.filled(params) == params  # filling filled sizes changes nothing
    # the rows of tokens the corpus never uses are exactly zero: the file compresses in git
    embedding = checkpoint.weights["tok_embeddings.weight"]
    assert int((embedding != 0).any(dim=1).sum()) < 2000
