"""The notebook's plumbing: files, settings and figures — no model math (that is the notebook's).

Imports run one way, each module using only those above it:

    friendly_errors   one sentence that names the fix; the packages requirements.txt names
    release_facts     what params.json does not say (context lengths, the RoPE factor rule)
    model_ids         a Hugging Face model id as its folder in the local cache
    gguf_files        a GGUF file (llama.cpp, Ollama, LM Studio) read under Meta's names
    checkpoint_files  which folder, which layout, which sizes (params.json or config.json)
    hf_checkpoint     a Hugging Face folder's tensors under Meta's names
    matrices          a weight held otherwise than as a plain tensor: `x @ W.T` its own way
    one_row           one-row products straight from the file's bf16 (LLAMA3_ONE_ROW)
    weight_loading    every tensor memory-mapped, checked, on the device and dtype chosen
    quantization      int8/int4 matrices for PyTorch's fused kernels (LLAMA3_QUANTIZE)
    run_settings      every decision about the run, from the environment, once
    plots             the notebook's figures, from the tensors its cells computed
    run_notebook      the one headless runner (make run, tests, benchmarks)

`tokenizer_setup.py`, beside the notebook, builds the tokenizer on top of these.
"""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
