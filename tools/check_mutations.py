"""Break one step of the notebook at a time and check that the parity tests notice.

    python -m tools.check_mutations [NAME ...]

Each mutation edits a scratch copy of llama3-from-scratch.ipynb (the committed notebook
is never touched), also disables the notebook's own `assert` lines in that copy so that
only the parity tests against HF transformers and Meta's reference can catch the bug,
then runs tests/test_parity.py on the copy. A mutation is "caught" when pytest fails.
Prints one line per mutation; exits non-zero if any mutation survives.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from plumbing import REPO_DIR

NOTEBOOK = REPO_DIR / "llama3-from-scratch.ipynb"

# name: (description, [(old, new), ...]) — every `old` must occur in the notebook.
MUTATIONS = {
    "rope-half-split-pairs": (
        "RoPE rotates features (i, i + head_dim/2), HF's layout, instead of Meta's adjacent pairs",
        [
            (
                "pairs = x.float().unflatten(-1, (-1, 2))",
                "pairs = x.float().unflatten(-1, (2, -1)).transpose(-2, -1)",
            )
        ],
    ),
    "wrong-kv-head": (
        "query head h reads kv head h % n_kv_heads instead of h // (n_heads / n_kv_heads)",
        [
            (
                "k = k.repeat_interleave(q_heads_per_kv_head, dim=-3)",
                "k = k.repeat(q_heads_per_kv_head, 1, 1)",
            ),
            (
                "v = v.repeat_interleave(q_heads_per_kv_head, dim=-3)",
                "v = v.repeat(q_heads_per_kv_head, 1, 1)",
            ),
        ],
    ),
    "rmsnorm-not-fp32": (
        "RMSNorm's statistics in the compute dtype instead of float32",
        [("x32 = x.float()", "x32 = x")],
    ),
    "skip-ffn-residual": (
        "the feed-forward output replaces the residual stream instead of adding to it",
        [("stream = stream + feed_forward(", "stream = feed_forward(")],
    ),
    "skip-attention-residual": (
        "the attention output replaces the residual stream instead of adding to it",
        [("stream = stream + attention(", "stream = attention(")],
    ),
    "no-norm-weight": (
        "RMSNorm without its learned weight",
        [("return normalized.to(x.dtype) * norm_weight", "return normalized.to(x.dtype)")],
    ),
    "no-score-scaling": (
        "scores not divided by sqrt(head_dim)",
        [
            (
                "scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)",
                "scores = q @ k.transpose(-2, -1)",
            )
        ],
    ),
    "mask-off-by-one": (
        "the causal mask lets each token see the next one",
        [
            (
                "return mask.triu(diagonal=seen - new + 1)",
                "return mask.triu(diagonal=seen - new + 2)",
            )
        ],
    ),
    # Not listed: "softmax in bf16 instead of float32". PyTorch's softmax already accumulates
    # bf16 input in float32 and rounds once, so that change gives identical bits (checked
    # here on CPU): an equivalent mutation, which no test can or should catch.
}


def mutated_copy(replacements: list[tuple[str, str]], folder: Path) -> Path:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The section "When it goes quietly wrong" puts some of these very bugs in on purpose,
    # through the lines as written: in a copy that already has one, it would fail for that
    # reason alone. It teaches, it proves nothing, so the copy leaves it out.
    notebook.cells = [cell for cell in notebook.cells if not cell.get("id", "").startswith("bugs")]
    sources = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for old, _ in replacements:
        if old not in sources:
            raise SystemExit(f"mutation target not found in the notebook: {old!r}")
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for old, new in replacements:
            cell.source = cell.source.replace(old, new)
        cell.source = re.sub(
            r"^(\s*)assert ", r"\1assert True or ", cell.source, flags=re.MULTILINE
        )
    path = folder / "mutated.ipynb"
    nbformat.write(notebook, path)
    return path


def main() -> int:
    names = sys.argv[1:] or list(MUTATIONS)
    survivors = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            description, replacements = MUTATIONS[name]
            folder = Path(scratch) / name
            folder.mkdir()
            env = {**os.environ, "NOTEBOOK_UNDER_TEST": str(mutated_copy(replacements, folder))}
            started = time.time()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/test_parity.py",
                    "-x",
                    "-q",
                    "-o",
                    "addopts=-p no:cacheprovider",
                ],
                cwd=REPO_DIR,
                env=env,
                capture_output=True,
                text=True,
            )
            caught = result.returncode != 0
            failed = next(
                (line for line in result.stdout.splitlines() if line.startswith("FAILED")), ""
            )
            print(
                f"{'caught  ' if caught else 'SURVIVED'} {name:26} {time.time() - started:5.0f} s "
                f" {description}"
            )
            if failed:
                print(f"         first failure: {failed[7:].split(' - ')[0]}")
            if not caught:
                survivors.append(name)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
