"""The notebook's learning section: its loss and gradients are transformers', and training
leaves the file alone.

The shared executed run of the notebook (tests/conftest.py) computes, in its kernel, the loss
of the prompt and the gradients of every weight with its `trainable_copy`, `weights_from` and
`token_losses` (the cells themselves); transformers' LlamaForCausalLM, loaded from the same
checkpoint, computes its loss (labels = the tokens) and gradients. Float32, within 1e-4
relative.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from plumbing import checkpoint_files, checkpoints
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import reference_models
from tests.support.notebook_values import cell_text, read_in_shared_run
from tests.test_perplexity import perplexities

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out

TOLERANCE = reference_models.FP32_TOLERANCE


@pytest.fixture(scope="module")
def learning_run(embedded_run):
    """The shared embedded run, with what `gradients` below saved as "learning"."""
    learning = torch.load(embedded_run["files"]["gradients"], weights_only=True)
    return {**embedded_run, "learning": learning}


@pytest.fixture(scope="module")
def transformers_gradients(learning_run):
    params = checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_CHECKPOINT).params
    model = reference_models.hf_model(checkpoint_files.EMBEDDED_CHECKPOINT, params, torch.float32)
    tokens = torch.tensor([learning_run["learning"]["tokens"]])
    with torch.enable_grad():
        loss = model(tokens, labels=tokens, use_cache=False).loss
        loss.backward()
    return params, model, loss.detach()


def test_loss_equals_transformers(learning_run, transformers_gradients):
    _, _, theirs = transformers_gradients
    ours = learning_run["learning"]["loss"]
    assert abs(float(ours) - float(theirs)) <= TOLERANCE * abs(float(theirs))


def test_gradients_of_layer0_and_the_output_matrix_equal_transformers(
    learning_run, transformers_gradients
):
    params, model, _ = transformers_gradients
    ours = learning_run["learning"]["grads"]
    n_heads, n_kv_heads = params["n_heads"], params["n_kv_heads"]
    layer = model.model.layers[0]
    compared = {}
    for short, hf in reference_models.HF_LAYER_KEYS.items():
        theirs = layer.get_parameter(hf).grad
        mine = ours[f"layers.0.{short}"]
        if short == "attention.wq.weight":
            mine = reference_models.meta_rows_to_hf(mine, n_heads)
        elif short == "attention.wk.weight":
            mine = reference_models.meta_rows_to_hf(mine, n_kv_heads)
        compared[short] = reference_models.relative_difference(mine, theirs)
    compared["output.weight"] = reference_models.relative_difference(
        ours["output.weight"], model.lm_head.weight.grad
    )
    assert len(ours) == len(reference_models.HF_LAYER_KEYS) + 1
    worst = max(compared, key=compared.get)
    assert compared[worst] <= TOLERANCE, (
        f"{worst}: {compared[worst]:.2e} relative (all: {compared})"
    )
    assert all(float(grad.abs().max()) > 0 for grad in ours.values())


def test_fine_tuning_changes_the_prediction_as_claimed(learning_run):
    cell = next(
        cell for cell in learning_run["notebook"].cells if cell.get("id") == "learn-teach-code"
    )
    text = "".join(output.get("text", "") for output in cell.outputs)
    mars = re.search(r"'the capital of mars is' -> before '(.*)', after '(.*)'", text)
    hitchhiker = re.search(r"everything is ' -> before '(.*)', after '(.*)'", text)
    assert mars and mars.group(2) == " olympus" and mars.group(1) != " olympus", text
    assert hitchhiker and hitchhiker.groups() == ("42", "42"), text
    assert any(output.output_type == "display_data" for output in cell.outputs)  # the loss curve


def test_the_checkpoint_folder_is_untouched(learning_run):
    assert learning_run["folder_after"] == learning_run["folder_before"]


def test_what_teaching_cost_is_the_held_out_perplexity_before_and_after(learning_run):
    # before: the unchanged model's held-out perplexity, as the learning section printed it
    text = cell_text(learning_run["notebook"], "learn-teach-cost")
    before, after = map(float, re.findall(r"teaching: ([\d.e+]+)", text))
    unchanged = json.loads(learning_run["files"]["perplexities"].read_text())["heldout_score"]
    assert before == pytest.approx(unchanged, rel=1e-3)
    assert after != pytest.approx(before, rel=1e-2)  # teaching one sentence moved it


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def gradients(nb: KernelGlobals, path: str) -> None:
    """The learning section's loss and the gradients of layer 0 and the output matrix."""
    copy = nb["trainable_copy"]()
    with nb["weights_from"](copy), torch.enable_grad():
        loss = nb["token_losses"](nb["hitchhiker_tokens"]).mean()
        loss.backward()
    keep = [name for name in copy if name.startswith("layers.0.") or name == nb["output_name"]]
    torch.save(
        {
            "loss": loss.detach(),
            "tokens": nb["hitchhiker_tokens"],
            "grads": {name: copy[name].grad for name in keep},
        },
        path,
    )


read_in_shared_run("embedded", gradients)
read_in_shared_run("embedded", perplexities)  # the held-out perplexity the section printed
