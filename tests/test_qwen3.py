"""Qwen3 through the same cells: its norm on every query and key head, its stated head width.

A random Qwen3 checkpoint is made here with transformers' own `Qwen3ForCausalLM` and saved as
the hub's files are (config.json, safetensors in bfloat16), every norm's gains random so that
a gain read in the wrong order shows. It is tied, has grouped queries and heads of 32 features
where its width split among its heads would give 16. It carries Llama 3's vocabulary (the
notebook reads no other yet; a Qwen3 folder's own `tokenizer.json` is refused in one sentence).

The notebook runs on it unchanged, in float32, with the demos off; in the same kernel its
`forward` also reads a 200-token prompt (notebook_values.other_prompts), and `generate` writes
with and without the cache, one prompt alone and in a batch (test_generation.generations). Its
tensors, layer by layer, and its greedy tokens are compared with transformers' model loaded from
the same folder. A GGUF file of it, as llama.cpp's converter writes one (architecture qwen3: its
rows in Hugging Face's order, its head width as the key length), gives the folder's tensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Qwen3ForCausalLM

from plumbing import checkpoints, gguf_files, hf_checkpoint
from plumbing.friendly_errors import CheckpointError
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds.gguf_writer import write_gguf
from testbeds.hf_folder import write_random_qwen3
from tests.support import reference_models
from tests.support.notebook_values import (
    FLOAT32_CPU,
    TENSORS_ONLY,
    cell_text,
    other_prompts,
    run_and_read,
    setup_cell_in_process,
)
from tests.support.parity_runs import PROMPTS
from tests.test_generation import STOP, generations

pytestmark = pytest.mark.slow  # runs the notebook in a kernel: `make quick` leaves it out


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return write_random_qwen3(tmp_path_factory.mktemp("qwen3") / "random-qwen3")


@pytest.fixture(scope="module")
def run(qwen3, tmp_path_factory):
    settings = {**TENSORS_ONLY, "LLAMA3_CKPT": str(qwen3), "OMP_NUM_THREADS": "1"}
    also = [(other_prompts, {"long": PROMPTS["long"]}), (generations,)]
    return run_and_read(tmp_path_factory.mktemp("qwen3-run"), settings, also=also)


@pytest.fixture(scope="module")
def reference(qwen3):
    return Qwen3ForCausalLM.from_pretrained(qwen3, dtype=torch.float32).eval()


def test_the_folder_opens_with_its_sizes_and_its_norms(qwen3):
    checkpoint = checkpoints.open_checkpoint(qwen3)
    assert checkpoint.reader is hf_checkpoint
    params = checkpoint.params
    assert (params["head_dim"], params["qk_norm"], params["tied_output"]) == (32, True, True)
    assert params["rope_theta"] == 1_000_000.0
    gains = checkpoint.weights["layers.1.attention.k_norm.weight"]
    assert gains.shape == (32,)


def test_each_heads_gains_come_in_the_order_of_its_rows(qwen3, reference):
    # the reader puts each head's q and k rows in Meta's order (RoPE pairs side by side):
    # the gains of that head's features must move with them
    weights = checkpoints.open_checkpoint(qwen3).weights
    attention = reference.model.layers[0].self_attn
    order = hf_checkpoint.hf_rows_to_meta(torch.arange(32.0), 1).long()
    for ours, theirs in (("q_norm", attention.q_norm), ("k_norm", attention.k_norm)):
        read = weights[f"layers.0.attention.{ours}.weight"].float()
        assert torch.equal(read, theirs.weight.detach()[order]), ours
        assert not torch.equal(read, theirs.weight.detach())  # random gains: the order shows


def test_the_notebook_states_the_head_width_and_predicts_what_transformers_does(run, reference):
    assert "head_dim = 32, as stated" in cell_text(run["notebook"], "sizes-read")
    assert "Hugging Face layout" in cell_text(run["notebook"], "prelims-code")
    theirs = reference_models.hf_tensors(reference, run["prompt_tokens"])
    assert int(theirs["logits"].argmax()) == run["next_token_id"]


@pytest.mark.parametrize("prompt", ["canonical-17", "long"])
def test_float32_layer_by_layer(run, reference, prompt):
    ours = run
    if prompt == "long":
        ours = torch.load(run["files"]["other_prompts"], weights_only=True)["long"]
        assert len(ours["prompt_tokens"]) >= 200
    theirs = reference_models.hf_tensors(reference, ours["prompt_tokens"])
    diffs = reference_models.layer_differences(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= reference_models.FP32_TOLERANCE, (
        f"{worst} differs from transformers' Qwen3 by {diffs[worst]:.2e} (all: {diffs})"
    )


def test_generation_with_the_cache_equals_recomputing_and_transformers(run, reference):
    made = json.loads(run["files"]["generations"].read_text())
    assert made["cached"] == made["recomputed"]
    assert made["batches"]["together"] == made["batches"]["alone"]
    tokens = run["prompt_tokens"]  # the canonical prompt's
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([tokens]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=STOP,
            pad_token_id=STOP[0],
        )
    new = out[0, len(tokens) :].tolist()
    new = new[: next((i for i, token in enumerate(new) if token in STOP), len(new))]
    assert made["cached"][DEFAULT_PROMPT] == new and len(new) > 0


def edited_config(qwen3: Path, folder: Path, **changes) -> Path:
    folder.mkdir()
    config = json.loads((qwen3 / "config.json").read_text()) | changes
    config = {key: value for key, value in config.items() if value is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
            "describes Qwen2ForCausalLM, not LlamaForCausalLM or Qwen3ForCausalLM: this notebook "
            "runs Llama 3 and Qwen3 models only (qwen2 adds biases on the query, key and value "
            "projections, which it does not teach)",
        ),
        ({"use_sliding_window": True}, "sets use_sliding_window: attention over a sliding window"),
        ({"attention_bias": True}, "sets attention_bias: biases on attention's projections"),
        ({"head_dim": None}, "states no head_dim, which every Qwen3 config.json states"),
    ],
)
def test_what_the_notebook_does_not_teach_is_one_sentence(qwen3, tmp_path, changes, message):
    folder = edited_config(qwen3, tmp_path / "edited", **changes)
    with pytest.raises(CheckpointError) as raised:
        hf_checkpoint.read_params(folder)
    assert message in str(raised.value)
    assert str(raised.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("kind", ["BF16", "Q8_0"])
def test_a_qwen3_gguf_file_gives_the_folders_tensors(qwen3, tmp_path, kind):
    path = write_gguf(qwen3, tmp_path / f"qwen3-{kind}.gguf", kind, architecture="qwen3")
    folder, file = checkpoints.open_checkpoint(qwen3), checkpoints.open_checkpoint(path)
    assert file.reader is gguf_files
    for key in ("head_dim", "qk_norm", "n_kv_heads", "rope_theta", "norm_eps", "tied_output"):
        assert file.params[key] == folder.params[key], key
    assert list(file.weights) == list(folder.weights)
    for name in folder.weights:
        ours, theirs = file.weights[name], folder.weights[name].float()
        ours = ours.full() if isinstance(ours, gguf_files.BlockMatrix) else ours.float()
        if kind == "BF16" or ours.dim() == 1:  # bf16 as stored; vectors are kept in float32
            assert torch.equal(ours, theirs), name
        else:  # Q8_0: within a step of 1/127 of each block's largest; a row out of place: far
            step = theirs.abs().max() / 127
            assert (ours - theirs).abs().max() <= step, name


def test_its_own_vocabulary_stops_the_setup_cell_in_one_sentence(qwen3, tmp_path):
    # Qwen3's 151,669 tokens are not here to test with; another vocabulary stands in: Llama 3's
    # with two ranks swapped, which is not Llama 3's
    folder = shutil.copytree(qwen3, tmp_path / "own-vocabulary")
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["Ġthe"], vocab["Ġand"] = vocab["Ġand"], vocab["Ġthe"]
    (folder / "tokenizer.json").write_text(json.dumps(data))
    text = setup_cell_in_process({**FLOAT32_CPU, "LLAMA3_CKPT": str(folder)})
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "such as Qwen3's, which this notebook does not read yet" in text
