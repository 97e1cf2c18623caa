"""The notebook's plumbing: files, settings and figures — no model math (that is the notebook's).

Imports run one way, each module using only those above it:

    friendly_errors   one sentence that names the fix; the packages requirements.txt names
    settings          the LLAMA3_* settings: one table, and the one reader of the environment
    tables            the notebook's printed tables, and long text, legible (imports none)
    release_facts     what params.json does not say (context lengths, the RoPE factor rule)
    model_ids         a model's name as where its files lie: a Hugging Face id, an Ollama name
    checkpoint_files  finding the checkpoint (LLAMA3_CKPT): which folder or file
    tensor_names      every tensor's name in each layout, one table; how Meta's shards split it
    model_sizes       the sizes with their defaults filled in once, and the shapes they imply
    checkpoint_checks what is wrong with a checkpoint's sizes or tensors, in one sentence
    meta_llama4       Meta's released Llama 4 files: their fused, split tensors joined
    meta_checkpoint   Meta's layout: params.json and consolidated.*.pth, memory-mapped
    hf_llama4         Hugging Face's Llama 4: its config's keys, its tensors' names and layouts
    hf_checkpoint     Hugging Face's layout: config.json and safetensors, under Meta's names
    gguf_files        a GGUF file (llama.cpp, Ollama, LM Studio) read under Meta's names
    checkpoints       open_checkpoint(path): the layout decided once, its params and weights
    matrices          a weight held otherwise than as a plain tensor: `x @ W.T` its own way
    one_row           one-row products from the file's bf16, and timing and compiling them
    quantization      int8/int4 matrices for PyTorch's fused kernels (LLAMA3_QUANTIZE)
    weight_loading    each tensor handed to the notebook as chosen; the readers built
    run_settings      every decision about the run, from the settings, once
    plots             the notebook's figures, from the tensors its cells computed
    run_notebook      the one headless runner (make run, tests, benchmarks)

`tokenizer_setup.py`, beside the notebook, builds the tokenizer on top of these.
"""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
