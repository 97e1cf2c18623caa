"""The notebook, run on the embedded checkpoint, predicts "42" — and other corpus lines."""

import pytest
import torch

import tokenizer_setup
from tests.support.notebook_values import CANONICAL_TOKENS

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out

FORTY_TWO = 2983


def cell_text(notebook, needle):
    for cell in notebook.cells:
        if cell.cell_type == "code" and needle in cell.source:
            return "".join(
                o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream"
            )
    raise AssertionError(f"no cell contains {needle!r}")


def test_prompt_is_tokenized_as_meta_does(embedded_run):
    assert embedded_run["prompt_tokens"] == CANONICAL_TOKENS


def test_notebook_predicts_42(embedded_run):
    assert embedded_run["next_token_id"] == FORTY_TWO
    assert tokenizer_setup.load_tokenizer(None).decode([embedded_run["next_token_id"]]) == "42"


def test_42_wins_by_a_clear_margin(embedded_run):
    top2 = embedded_run["logits"].topk(2)
    assert top2.indices[0] == FORTY_TWO
    assert top2.values[0] - top2.values[1] > 2.0, (
        "the runner-up is too close: retrain the checkpoint"
    )
    assert torch.softmax(embedded_run["logits"], -1)[FORTY_TWO] > 0.5


def test_other_corpus_prompts_complete_as_trained(embedded_run):
    text = cell_text(embedded_run["notebook"], "def next_token_after")  # the lesson's own output
    assert "'the capital of france is' -> ' paris'" in text
    assert "'two plus three is' -> ' five'" in text
    assert "'the sky is blue on a clear' -> ' day'" in text


def test_notebook_ran_in_float32(embedded_run):
    assert embedded_run["compute_dtype"] == "torch.float32"


def test_every_layer_left_a_residual_stream(embedded_run):
    n_layers = len(embedded_run["residual_after_ffn"])
    assert n_layers == len(embedded_run["residual_after_attention"]) >= 2
    for stream in embedded_run["residual_after_ffn"]:
        assert stream.shape == embedded_run["token_embeddings"].shape
        assert torch.isfinite(stream).all()
