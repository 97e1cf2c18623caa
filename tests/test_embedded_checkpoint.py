"""The embedded checkpoint is in Meta's exact layout, within the size limits."""

import json

import pytest
import torch

from plumbing import checkpoint_files

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
    assert checkpoint_files.read_params(FOLDER) == params


def test_keys_shapes_and_dtype(params, state_dict):
    shapes = checkpoint_files.expected_shapes(params)
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
