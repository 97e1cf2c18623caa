"""Run llama3-from-scratch.ipynb unchanged and read back what its own cells computed.

Tests never re-implement the model. They execute the notebook in a fresh kernel
(testbeds/notebook_kernel.py, which benchmarks use too), then, in the same kernel, call
functions on the notebook's globals: `read_back` below saves the lesson's tensors, which most
tests read, and each test file sends its own functions (marked `in_kernel`) that run the
notebook's own `generate`, `bpe_encode`, `token_losses` … and save what it compares. A kernel
is the costly part of a test, so one run serves every test of its configuration (see
tests/conftest.py and tests/support/shared_runs.py).

`read_back` also reads what the lesson does not keep — the residual stream after each
layer's *attention* — the way a forward hook reads a torch model: the notebook's own
`rms_norm` and `feed_forward` are wrapped from outside, and its own `transformer_layer` runs
again over the same input; the stream the layer normalizes just before its feed-forward
network is the one after attention. `other_prompts` and `in_dtype` read the same tensors
through the notebook's `forward` for other prompts and another dtype, in the same kernel.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from nbclient.exceptions import CellExecutionError

from plumbing import REPO_DIR, run_notebook
from plumbing.run_notebook import NOTEBOOK
from testbeds import notebook_kernel

# The notebook runs' settings and facts, named where the tests read them (testbeds'):
from testbeds.notebook_kernel import CANONICAL_TOKENS as CANONICAL_TOKENS
from testbeds.notebook_kernel import FLOAT32_CPU as FLOAT32_CPU
from testbeds.notebook_kernel import NOTEBOOK_UNDER_TEST as NOTEBOOK_UNDER_TEST
from testbeds.notebook_kernel import TENSORS_ONLY as TENSORS_ONLY
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.multilingual_sentences import SENTENCES

# Meta's tokenizer against ours on these strings (made by generators/make_tokenizer_strings.py).
TOKENIZER_PARITY_STRINGS = REPO_DIR / "tests" / "tokenizer_parity_strings.json"

# The notebook's from-scratch BPE scans every pair at every merge, so its time grows with
# the square of a piece's length: the twenty runs of 1,000-3,500 characters in the strings
# file cost 25 of its 30 s. The kernel encodes each string cut to this many characters (the
# same kinds of text, runs included); tests/test_tokenizer_parity.py checks the whole
# strings with the tokenizer the notebook encodes with.
BPE_STRING_LIMIT = 400


def bpe_parity_strings() -> list[str]:
    """The parity strings as the notebook's own BPE encodes them in the shared kernel, then the
    sentences of tests/multilingual_sentences.py."""
    strings = json.loads(TOKENIZER_PARITY_STRINGS.read_text(encoding="utf-8"))
    sentences = [sentence for group in SENTENCES.values() for sentence in group]
    return [text[:BPE_STRING_LIMIT] for text in strings] + sentences


# What the test files ask the shared runs' kernels to do besides `read_back`: a run's name
# ("embedded", or a random checkpoint's, tests/support/parity_runs.py) → [(function,
# *arguments)]. Filled as pytest imports the test files (each calls `read_in_shared_run` at
# its top), read when a run starts, after collection: a run does what the session's tests read.
SHARED_RUN_READERS: dict[str, list[tuple]] = {}


def read_in_shared_run(run: str, function, *arguments) -> None:
    """Ask the shared run `run` to call `function(nb, *arguments, path)` in its kernel; the
    tests find its file under run["files"][function's name]."""
    calls = SHARED_RUN_READERS.setdefault(run, [])
    if (function, *arguments) not in calls:
        calls.append((function, *arguments))


def run_and_read(
    workdir: Path, settings: dict[str, str], timeout: int = 1200, also: tuple = ()
) -> dict:
    """Execute the notebook with these LLAMA3_* settings; return its tensors and the executed
    notebook.

    `also`: more functions to call in the kernel after `read_back`, each as (function,
    *arguments), the function marked `in_kernel`; each writes to workdir / its name, returned
    under values["files"][name].
    """
    workdir = Path(workdir)
    notebook = notebook_kernel.run_and_call(settings, [(read_back,), *also], workdir, timeout)
    values = torch.load(workdir / "read_back", weights_only=True)
    values["notebook"] = notebook
    values["files"] = {function.__name__: workdir / function.__name__ for function, *_ in also}
    return values


def cell_text(notebook, cell_id: str) -> str:
    """What a cell of an executed notebook printed."""
    cell = next(cell for cell in notebook.cells if cell.get("id") == cell_id)
    return "".join(
        output.get("text", "") for output in cell.outputs if output.get("output_type") == "stream"
    )


def setup_cell_failure(settings: dict[str, str]):
    """Run All with these settings; the first cell with output, where it stopped."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(CellExecutionError):
        run_notebook.execute(notebook, settings, timeout=300)  # Run All stops at the failing cell
    return next(cell for cell in notebook.cells if cell.cell_type == "code" and cell.outputs)


def setup_source() -> str:
    """The notebook's first code cells, up to the setup cell (`prelims-code`), as one source:
    the package check, the imports and the setup, what a reader runs before any lesson."""
    sources = []
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":
            sources.append(cell.source)
            if cell.get("id") == "prelims-code":
                return "\n".join(sources)
    raise AssertionError("the notebook has no setup cell, `prelims-code`")


def setup_cell_in_process(settings: dict[str, str]) -> str:
    """Run the notebook's setup cell in an IPython shell in this process with these LLAMA3_*
    settings, as Jupyter would; it must fail. Returns everything it printed.

    No kernel to start, so a bad input costs a fraction of a second; `setup_cell_failure`
    checks once, in a real kernel, that Run All stops there with that line as the only output.
    """
    setup = setup_source()
    shell = InteractiveShell.instance()
    printed = io.StringIO()
    saved = {name: value for name, value in os.environ.items() if name.startswith("LLAMA3_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(settings)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            result = shell.run_cell(setup)
    finally:
        for name in [name for name in os.environ if name.startswith("LLAMA3_")]:
            del os.environ[name]
        os.environ.update(saved)
    assert not result.success, "the setup cell did not fail"
    return printed.getvalue()


@in_kernel
@contextmanager
def recording_layers(nb: KernelGlobals):
    """While open, `nb`'s rms_norm and feed_forward record the stream after each layer's
    attention."""
    after_attention, latest_norm_input = [], [None]
    lesson_rms_norm, lesson_feed_forward = nb["rms_norm"], nb["feed_forward"]

    def rms_norm(x, norm_weight):
        latest_norm_input[0] = x
        return lesson_rms_norm(x, norm_weight)

    def feed_forward(x, layer):
        after_attention.append(latest_norm_input[0])  # what the layer normalized for its FFN
        return lesson_feed_forward(x, layer)

    nb["rms_norm"], nb["feed_forward"] = rms_norm, feed_forward
    try:
        yield after_attention
    finally:
        nb["rms_norm"], nb["feed_forward"] = lesson_rms_norm, lesson_feed_forward


@in_kernel
def cpu32(tensors):
    return [tensor.float().cpu() for tensor in tensors]


@in_kernel(uses=(recording_layers, cpu32))
def read_back(nb: KernelGlobals, path: str) -> None:
    """The lesson's tensors, and the stream after every layer's attention, saved to `path`."""
    with recording_layers(nb) as after_attention:
        stream = nb["token_embeddings"]
        for layer in range(nb["n_layers"]):
            stream = nb["transformer_layer"](stream, layer, nb["rope_cos"], nb["rope_sin"])
    assert torch.equal(stream, nb["residual_stream"][-1]), (
        "the hooked rerun differs from the lesson's run"
    )
    torch.save(
        {
            "prompt_tokens": nb["prompt_tokens"],
            "next_token_id": nb["next_token_id"],
            "token_embeddings": nb["token_embeddings"].float().cpu(),
            "residual_after_attention": cpu32(after_attention),
            "residual_after_ffn": cpu32(nb["residual_stream"][1:]),
            "final_normed": nb["final_normed"].float().cpu(),
            "logits": nb["logits"].float().cpu(),
            "compute_dtype": str(nb["compute_dtype"]),
            "rope_frequencies": nb["rope_frequencies"].float().cpu(),
            "rope_scale_factor": nb["rope_scale_factor"],
            "chat_tokens": nb["chat_tokens"],
        },
        path,
    )


@in_kernel(uses=(recording_layers, cpu32))
def other_prompts(nb: KernelGlobals, prompts: dict[str, str], path: str) -> None:
    """For each prompt, the tensors read_back saves, through the notebook's own `forward`.

    `forward` normalizes and projects only the last position, so `final_normed` and `logits`
    are that position's. Its layers, the final norm's output and the embeddings are read by
    wrapping the notebook's `transformer_layer` and `output_projection` from outside.
    """
    lesson_layer, lesson_projection = nb["transformer_layer"], nb["output_projection"]
    results = {}
    for name, text in prompts.items():
        layer_inputs, layer_outputs, projected = [], [], []

        def transformer_layer(
            stream, layer, cos, sin, cache=None, inputs=layer_inputs, outputs=layer_outputs
        ):
            inputs.append(stream)
            outputs.append(lesson_layer(stream, layer, cos, sin, cache))
            return outputs[-1]

        def output_projection(x, seen=projected):
            seen.append(x)
            return lesson_projection(x)

        tokens = nb["begin"] + nb["tokenizer"].encode(text, disallowed_special=())
        nb["transformer_layer"], nb["output_projection"] = transformer_layer, output_projection
        try:
            with recording_layers(nb) as after_attention:
                logits = nb["forward"](tokens)
        finally:
            nb["transformer_layer"], nb["output_projection"] = lesson_layer, lesson_projection
        results[name] = {
            "prompt_tokens": tokens,
            "next_token_id": int(logits.argmax()),
            "token_embeddings": layer_inputs[0].float().cpu(),
            "residual_after_attention": cpu32(after_attention),
            "residual_after_ffn": cpu32(layer_outputs),
            "final_normed_last": projected[0].float().cpu(),
            "logits": logits.float().cpu(),
            "compute_dtype": str(nb["compute_dtype"]),
        }
    torch.save(results, path)


@in_kernel(uses=(other_prompts,))
def in_dtype(nb: KernelGlobals, dtype: str, prompts: dict[str, str], path: str) -> None:
    """other_prompts with the notebook computing in another dtype: its `compute_dtype` and its
    `weight` reader (the two things the setup cell's dtype decides) swapped for the run."""
    from plumbing import weight_loading

    saved = nb["compute_dtype"]
    nb["compute_dtype"] = getattr(torch, dtype)
    reader = weight_loading.WeightReader(
        nb["model"], nb["device"], nb["compute_dtype"], nb["settings"].streaming
    )
    try:
        with nb["weight"].reading(reader):
            other_prompts(nb, prompts, path)
    finally:
        nb["compute_dtype"] = saved
