"""Run llama3-from-scratch.ipynb unchanged and read back the tensors its own cells computed.

Tests never re-implement the model. They execute the notebook in a fresh kernel
(scripts/run_notebook.py, the project's one runner), then, in the same kernel, read the
variables the lesson created. One thing the lesson does not keep — the residual stream
after each layer's *attention* — is read the way a forward hook reads a torch model:
the notebook's own `rms_norm` and `feed_forward` are wrapped from outside, and the
notebook's own `transformer_layer` is run again over the same input; the stream that
the layer normalizes just before its feed-forward network is the one after attention.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import torch

from scripts.run_notebook import NOTEBOOK, execute

# scripts/check_mutations.py points this at deliberately broken copies to prove the tests can fail.
NOTEBOOK_UNDER_TEST = Path(os.environ.get("NOTEBOOK_UNDER_TEST", NOTEBOOK))

# The settings most tests run the notebook with: float32 on the CPU, as the references compute.
FLOAT32_CPU = {"LLAMA3_DTYPE": "float32", "LLAMA3_DEVICE": "cpu"}
# For runs that only read the lesson's tensors: the demos (more prompts, generation, the logit
# lens, learning) are skipped. On a ~100M-parameter random test checkpoint they cost about 40 s
# of a 50 s run; each test checkpoint shape still runs them once, in test_parity.
TENSORS_ONLY = {**FLOAT32_CPU, "LLAMA3_EXTRAS": "0"}

READ_BACK = """
_after_attention, _latest_norm_input = [], [None]
_lesson_rms_norm, _lesson_feed_forward = rms_norm, feed_forward


def rms_norm(x, norm_weight):
    _latest_norm_input[0] = x
    return _lesson_rms_norm(x, norm_weight)


def feed_forward(x, layer):
    _after_attention.append(_latest_norm_input[0])  # what the layer normalized for its FFN
    return _lesson_feed_forward(x, layer)


try:
    _stream = token_embeddings
    for _layer in range(n_layers):
        _stream = transformer_layer(_stream, _layer, rope_cos, rope_sin)
finally:
    rms_norm, feed_forward = _lesson_rms_norm, _lesson_feed_forward
assert torch.equal(_stream, residual_stream[-1]), "the hooked rerun differs from the lesson's run"

torch.save({
    "prompt_tokens": prompt_tokens,
    "next_token_id": next_token_id,
    "token_embeddings": token_embeddings.float().cpu(),
    "residual_after_attention": [t.float().cpu() for t in _after_attention],
    "residual_after_ffn": [t.float().cpu() for t in residual_stream[1:]],
    "final_normed": final_normed.float().cpu(),
    "logits": logits.float().cpu(),
    "compute_dtype": str(compute_dtype),
    "rope_frequencies": rope_frequencies.float().cpu(),
    "rope_scale_factor": rope_scale_factor,
    "chat_tokens": chat_tokens,
}, PATH)
"""


def run_and_read(workdir: Path, settings: dict[str, str], timeout: int = 1200, extra_code: str = "") -> dict:
    """Execute the notebook with these LLAMA3_* settings; return its tensors and the executed notebook.

    extra_code runs in the same kernel after the notebook, before the read-back (tests call
    the notebook's own functions there, e.g. `generate`).
    """
    notebook = nbformat.read(NOTEBOOK_UNDER_TEST, as_version=4)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    values_file = Path(workdir) / "values.pt"
    if extra_code:
        notebook.cells.append(nbformat.v4.new_code_cell(extra_code))
    notebook.cells.append(nbformat.v4.new_code_cell(READ_BACK.replace("PATH", repr(str(values_file)))))
    execute(notebook, settings, timeout=timeout)
    values = torch.load(values_file, weights_only=True)
    values["notebook"] = notebook
    return values
