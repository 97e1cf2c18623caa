"""Execute llama3-from-scratch.ipynb in a fresh kernel and fetch the notebook's own tensors.

Tests never re-implement the model: they run the notebook's cells unchanged and then,
in the same kernel, save the variables the cells created.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

REPO_DIR = Path(__file__).resolve().parent.parent
# scripts/check_mutations.py points this at deliberately broken copies to prove the tests can fail.
NOTEBOOK = Path(os.environ.get("NOTEBOOK_UNDER_TEST", REPO_DIR / "llama3-from-scratch.ipynb"))

# Variables the notebook defines that tests compare.
FETCH = """
import torch as _torch
_torch.save({
    "prompt_tokens": prompt_tokens,
    "next_token_id": next_token_id,
    "token_embeddings": token_embeddings.float().cpu(),
    "residual_after_attention": [t.float().cpu() for t in residual_after_attention],
    "residual_after_ffn": [t.float().cpu() for t in residual_after_ffn],
    "final_normed": final_normed.float().cpu(),
    "logits": logits.float().cpu(),
    "compute_dtype": str(compute_dtype),
    "rope_frequencies": rope_frequencies.float().cpu(),
    "rope_scale_factor": rope_scale_factor,
    "chat_tokens": chat,
    "generations": generations,
    "generations_without_cache": generations_without_cache,
}, PATH)
"""


def run_notebook(workdir: Path, env: dict[str, str], timeout: int = 1200, extra_code: str = "") -> dict:
    """Run every cell with `env` set for the kernel; return the fetched values and the executed notebook.

    extra_code runs in the same kernel after the notebook (benchmarks time the notebook's own functions).
    """
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    fetched = Path(workdir) / "fetched.pt"
    if extra_code:
        notebook.cells.append(nbformat.v4.new_code_cell(extra_code))
    notebook.cells.append(nbformat.v4.new_code_cell(FETCH.replace("PATH", repr(str(fetched)))))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO_DIR)}})
        client.execute(stderr=subprocess.DEVNULL)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    values = torch.load(fetched, weights_only=True)
    values["notebook"] = notebook
    return values
