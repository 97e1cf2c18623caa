"""The same notebook, unchanged, across the Llama 3 family: scaled RoPE, tied output, shards,
chat."""

from __future__ import annotations

import json

import pytest
import torch
from llama_models.datatypes import RawMessage
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

import tokenizer_setup
from plumbing import checkpoint_files, meta_checkpoint, model_sizes, release_facts, run_settings
from plumbing.checkpoints import open_checkpoint, read_params
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from testbeds.presets import PRESETS, preset
from testbeds.random_checkpoint import write_checkpoint
from testbeds.sharded_checkpoint import write_shards
from tests.support import parity_runs, reference_models
from tests.support.notebook_values import TENSORS_ONLY, cell_text, other_prompts, run_and_read

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out


def compare(ours: dict, theirs: dict) -> None:
    diffs = reference_models.layer_differences(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= reference_models.FP32_TOLERANCE, (
        f"{worst}: {diffs[worst]:.2e} relative (all: {diffs})"
    )


# ---- which scale factor -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "factor"),
    [("3.1-8b", 8.0), ("3.2-1b", 32.0), ("3.2-3b", 32.0), ("8b", None)],
)
def test_scale_factor_rule_on_real_params(preset, factor, clean_env):
    assert release_facts.rope_scale_factor(PRESETS[preset])[0] == factor
    assert run_settings.choose_rope_scale_factor(PRESETS[preset])[0] == factor


def test_scale_factor_rule_on_70b_and_override(clean_env):
    llama_3_3_70b = {"dim": 8192, "n_heads": 64, "use_scaled_rope": True}
    assert run_settings.choose_rope_scale_factor(llama_3_3_70b)[0] == 8.0
    assert run_settings.choose_rope_scale_factor(llama_3_3_70b, "32")[0] == 32.0
    with pytest.raises(
        run_settings.SettingError, match="LLAMA3_ROPE_SCALE_FACTOR='x' is not a positive number"
    ):
        run_settings.choose_rope_scale_factor(llama_3_3_70b, "x")


# ---- scaled RoPE, tied output: parity ------------------------------------------------------------


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """head_dim 128 (the family's), so the slow pairs that scaling changes are all there; one
    head of it keeps the model narrow."""
    params = preset("scaled-hd128")
    return write_checkpoint(tmp_path_factory.mktemp("scaled") / "ckpt", params, seed=11)


# Positions for the test past Llama 3's 8,192 (`long_logits`, below: the notebook's
# chunked prefill, keys in blocks).
PAST_THE_CONTEXT = 10_000
LONG_PROMPT = " ".join(
    ["the answer to the ultimate question of life, the universe, and everything is 42."] * 20
)


@pytest.fixture(scope="module")
def scaled_runs(scaled, tmp_path_factory):
    """The notebook with factor 8 (LLAMA3_ROPE_SCALE_FACTOR), and in the same kernel its
    `forward` with factor 32 (`at_rope_scale`, below)."""
    run = run_and_read(
        tmp_path_factory.mktemp("scaled-run"),
        {
            **TENSORS_ONLY,
            "LLAMA3_CKPT": str(scaled),
            "LLAMA3_PROMPT": LONG_PROMPT,
            "LLAMA3_ROPE_SCALE_FACTOR": "8",
        },
        also=[
            (at_rope_scale, 32.0, {"long": LONG_PROMPT}),
            (long_logits, PAST_THE_CONTEXT, [None, 8.0, 32.0]),
        ],
    )
    at_32 = torch.load(run["files"]["at_rope_scale"], weights_only=True)["long"]
    past = torch.load(run["files"]["long_logits"], weights_only=True)
    return {8.0: run, 32.0: at_32, "past the context": past}


@pytest.mark.parametrize("factor", [8.0, 32.0])
def test_scaled_rope_matches_references(scaled, scaled_runs, factor):
    ours = scaled_runs[factor]
    assert len(ours["prompt_tokens"]) > 300
    if factor == 8.0:
        assert ours["rope_scale_factor"] == factor
    params = json.loads((scaled / "params.json").read_text())
    hf = reference_models.hf_model(scaled, params, rope_scale_factor=factor)
    # Frequencies decide every position's angle (position × frequency), so equal frequencies
    # mean equal rotations far past the 8,192 positions a test prompt can reach here.
    assert torch.allclose(
        ours["rope_frequencies"], hf.model.rotary_emb.inv_freq.float(), rtol=1e-6, atol=0
    )
    assert not torch.equal(
        ours["rope_frequencies"], 1.0 / 500000.0 ** (torch.arange(0, 128, 2).float() / 128)
    )
    compare(ours, reference_models.hf_tensors(hf, ours["prompt_tokens"]))
    if factor == 8.0:  # Meta's reference hard-codes 8
        compare(
            ours,
            reference_models.meta_tensors(
                reference_models.meta_model(scaled, params), ours["prompt_tokens"]
            ),
        )


@pytest.mark.parametrize("factor", [None, 8.0, 32.0])
def test_past_the_training_context_equals_transformers(scaled, scaled_runs, factor):
    # 10,000 positions, fed a chunk at a time with the keys in blocks: the last position's
    # logits, unscaled (Llama 3) and scaled as Llama 3.1 (8) and 3.2 (32) scale
    past = scaled_runs["past the context"]
    tokens = past["tokens"]
    assert len(tokens) == PAST_THE_CONTEXT > release_facts.CONTEXT_LLAMA3
    params = json.loads((scaled / "params.json").read_text())
    if factor is None:
        params = {**params, "use_scaled_rope": False}
    hf = reference_models.hf_model(scaled, params, rope_scale_factor=factor)
    with torch.no_grad():
        theirs = hf(torch.tensor([tokens]), logits_to_keep=1).logits[0, -1].float()
    ours = past[str(factor)]
    difference = float((ours - theirs).abs().max() / theirs.abs().max())
    assert difference <= reference_models.FP32_TOLERANCE, f"{difference:.2e} relative"
    assert int(ours.argmax()) == int(theirs.argmax())


def test_default_factor_for_a_small_scaled_model_is_32(scaled, clean_env, tokenizer):
    # the setup cell's choice, made by run_settings.decide with no LLAMA3_ROPE_SCALE_FACTOR
    params, weights = read_params(scaled), open_checkpoint(scaled).weights
    assert run_settings.decide(scaled, params, tokenizer, weights).rope_scale_factor == 32.0


def test_tied_output_runs_every_demo(runs, checkpoints):
    # The parity tests compare this checkpoint's tensors with both references at every
    # prompt (tests/test_parity.py); its run also has the demos, so learning trained one
    # matrix that is both the embedding and the output.
    folder = checkpoints[parity_runs.TIED]
    checkpoint = open_checkpoint(folder)
    assert "output.weight" not in checkpoint.weights
    assert "tied output matrix" in checkpoint.check()
    run = runs.notebook(parity_runs.TIED, "canonical-17")
    projection = cell_text(run["notebook"], "family-tied-code")
    assert projection == "output projection: tok_embeddings.weight\n", projection
    learned = cell_text(run["notebook"], "learn-teach-code")
    assert "mean loss:" in learned and "skipped" not in learned, learned


def test_a_tied_checkpoint_counts_its_shared_matrix_once(tmp_path, clean_env, tokenizer):
    params = preset("tied-gqa")
    folder = write_checkpoint(tmp_path / "tied", params, seed=12, tied_output=True)
    settings = run_settings.decide(
        folder,
        read_params(folder),
        tokenizer,
        open_checkpoint(folder).weights,
    )
    untied = model_sizes.n_parameters(params, tied_output=False)
    assert settings.n_parameters == untied - params["vocab_size"] * params["dim"]
    assert f"({settings.n_parameters / 1e6:.1f}M parameters)" in settings.summary()


# ---- shards --------------------------------------------------------------------------------------


def test_sharded_checkpoints_give_identical_results(tmp_path):
    # 8 key/value heads, like the 70B, so that 8 shards hold one kv head each.
    params = preset("eight-kv-heads")
    whole = write_checkpoint(tmp_path / "whole", params, seed=13)
    single = open_checkpoint(whole).weights
    for n in (2, 8):  # the loader joins the shards into the very tensors of the one file
        folder = write_shards(whole, tmp_path / f"shards{n}", n)
        assert len(list(folder.glob("consolidated.*.pth"))) == n
        sharded = open_checkpoint(folder).weights
        assert isinstance(sharded, meta_checkpoint.ShardedWeights)
        for name in single:
            assert torch.equal(sharded[name], single[name]), name
    # so the notebook on 8 shards computes what the references compute from the one file
    eight = run_and_read(
        tmp_path / "run-shards8", {**TENSORS_ONLY, "LLAMA3_CKPT": str(tmp_path / "shards8")}
    )
    assert "8 shards" in cell_text(eight["notebook"], "prelims-code")
    compare(
        eight,
        reference_models.hf_tensors(
            reference_models.hf_model(whole, params), eight["prompt_tokens"]
        ),
    )


def test_missing_shard_is_named(tmp_path):
    params = preset("four-heads-one-layer")
    folder = write_shards(write_checkpoint(tmp_path / "whole", params), tmp_path / "shards", 4)
    (folder / "consolidated.02.pth").unlink()
    with pytest.raises(
        checkpoint_files.CheckpointError, match=r"consolidated.02.pth is missing or misnamed"
    ):
        checkpoint_files.find_checkpoint_dir(str(folder))


# ---- chat format ---------------------------------------------------------------------------------


def test_chat_tokens_match_metas_chat_format(embedded_run):
    question = "What is the answer to the ultimate question of life, the universe, and everything?"
    meta = ChatFormat(MetaTokenizer(tokenizer_setup.packaged_tokenizer_model()))
    expected = meta.encode_dialog_prompt([RawMessage(role="user", content=question)]).tokens
    assert embedded_run["chat_tokens"] == expected


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel(uses=(other_prompts,))
def at_rope_scale(nb: KernelGlobals, factor: float, prompts: dict[str, str], path: str) -> None:
    """other_prompts with the notebook's frequencies scaled by another factor, through its own
    `scale_rope_frequencies`: a second factor without a second kernel. (Which factor the setup
    cell picks is tested on its own.)"""
    chosen = nb["rope_frequencies"]
    nb["rope_frequencies"] = nb["scale_rope_frequencies"](nb["unscaled_rope_frequencies"], factor)
    try:
        other_prompts(nb, prompts, path)
        values = torch.load(path, weights_only=True)
        for name in values:
            values[name]["rope_frequencies"] = nb["rope_frequencies"].float().cpu()
        torch.save(values, path)
    finally:
        nb["rope_frequencies"] = chosen


@in_kernel
def long_logits(nb: KernelGlobals, n_positions: int, factors: list, path: str) -> None:
    """The notebook's `prefill` (a chunk of positions at a time, keys in blocks) over
    n_positions tokens: the last position's logits with RoPE's frequencies scaled by each
    factor through its own `scale_rope_frequencies` (None: unscaled)."""
    sentence = nb["tokenizer"].encode(" the answer to the ultimate question is 42.")
    tokens = nb["begin"] + (sentence * (n_positions // len(sentence) + 1))[: n_positions - 1]
    chosen, unscaled = nb["rope_frequencies"], nb["unscaled_rope_frequencies"]
    result = {"tokens": tokens}
    try:
        for factor in factors:
            scaled = unscaled if factor is None else nb["scale_rope_frequencies"](unscaled, factor)
            nb["rope_frequencies"] = scaled
            result[str(factor)] = nb["prefill"](tokens, nb["KVCache"](len(tokens))).float().cpu()
    finally:
        nb["rope_frequencies"] = chosen
    torch.save(result, path)
