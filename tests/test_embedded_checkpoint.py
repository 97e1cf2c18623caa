"""The embedded checkpoint is in Meta's exact layout, within the size limits."""

import json
import math

import pytest
import torch

import checkpoint_setup

FOLDER = checkpoint_setup.EMBEDDED_CHECKPOINT
META_PARAM_KEYS = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier", "norm_eps", "rope_theta"}


@pytest.fixture(scope="module")
def params():
    return json.loads((FOLDER / "params.json").read_text())


@pytest.fixture(scope="module")
def state_dict():
    return torch.load(FOLDER / "consolidated.00.pth", map_location="cpu", mmap=True, weights_only=True)


def test_files(params):
    assert sorted(p.name for p in FOLDER.iterdir()) == ["consolidated.00.pth", "params.json"]  # no tokenizer.model: Meta's file
    assert (FOLDER / "consolidated.00.pth").stat().st_size <= 40_000_000
    assert META_PARAM_KEYS <= set(params) <= META_PARAM_KEYS | {"use_scaled_rope"}


def test_params_meet_the_design(params):
    assert params["vocab_size"] == 128256
    assert params["rope_theta"] == 500000.0
    assert params["n_layers"] >= 2
    assert params["n_kv_heads"] >= 2 and params["n_heads"] // params["n_kv_heads"] >= 2
    assert params["n_heads"] % params["n_kv_heads"] == 0 and params["dim"] % params["n_heads"] == 0
    assert checkpoint_setup.read_params(FOLDER) == params


def expected_shapes(p):
    head_dim = p["dim"] // p["n_heads"]
    hidden = int(p["ffn_dim_multiplier"] * int(2 * 4 * p["dim"] / 3))
    hidden = p["multiple_of"] * math.ceil(hidden / p["multiple_of"])
    shapes = {"tok_embeddings.weight": (p["vocab_size"], p["dim"]), "norm.weight": (p["dim"],), "output.weight": (p["vocab_size"], p["dim"])}
    for i in range(p["n_layers"]):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (p["n_heads"] * head_dim, p["dim"]),
            f"layers.{i}.attention.wk.weight": (p["n_kv_heads"] * head_dim, p["dim"]),
            f"layers.{i}.attention.wv.weight": (p["n_kv_heads"] * head_dim, p["dim"]),
            f"layers.{i}.attention.wo.weight": (p["dim"], p["n_heads"] * head_dim),
            f"layers.{i}.feed_forward.w1.weight": (hidden, p["dim"]),
            f"layers.{i}.feed_forward.w2.weight": (p["dim"], hidden),
            f"layers.{i}.feed_forward.w3.weight": (hidden, p["dim"]),
            f"layers.{i}.attention_norm.weight": (p["dim"],),
            f"layers.{i}.ffn_norm.weight": (p["dim"],),
        }
    return shapes


def test_keys_shapes_and_dtype(params, state_dict):
    shapes = expected_shapes(params)
    assert set(state_dict) == set(shapes)
    for name, tensor in state_dict.items():
        assert tuple(tensor.shape) == shapes[name], name
        assert tensor.dtype == torch.bfloat16, name
        assert torch.isfinite(tensor.float()).all(), name


def test_unused_vocabulary_rows_are_exactly_zero(state_dict):
    # Rows for tokens the corpus never uses stay zero (that is why git stores the file in under 1 MB).
    used = state_dict["tok_embeddings.weight"].float().abs().sum(-1) > 0
    assert 1000 < int(used.sum()) < 5000
    assert torch.equal(state_dict["output.weight"].float().abs().sum(-1) > 0, used)
