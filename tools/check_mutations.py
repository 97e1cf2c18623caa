"""Break one step of the notebook at a time and check that the parity tests notice.

    python -m tools.check_mutations [NAME ...]

The mutations are the bugs the notebook's section "When it goes quietly wrong" shows, read
from its `silent_bugs` cell, and a few more listed here. Each mutation edits a scratch copy
of llama3-from-scratch.ipynb (the committed notebook is never touched), also disables the
notebook's own `assert` lines in that copy so that only the parity tests against HF
transformers and Meta's reference can catch the bug, then runs tests/test_parity.py on the
copy (tests/test_qwen3.py for Qwen3's norm). A mutation is "caught" when pytest fails.
Prints one line per mutation; exits non-zero if any mutation survives.
"""

from __future__ import annotations

import ast
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

# The silent-bugs section's own bugs come from the notebook (notebook_bugs); these are the
# others. name: (description, [(old, new), ...][, test files]) — every `old` must occur in the
# notebook; the test files are tests/test_parity.py unless named.
OTHER_MUTATIONS = {
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
    "no-qk-norm": (
        "Qwen3's RMSNorm on each query and key head skipped",
        [('return rms_norm(x, weight(gains)) if config["qk_norm"] else x', "return x")],
        ["tests/test_qwen3.py"],
    ),
    "key-norm-of-queries": (
        "Qwen3's keys normalized with the queries' gains",
        [('.T, n_kv_heads), layer, "k")', '.T, n_kv_heads), layer, "q")')],
        ["tests/test_qwen3.py"],
    ),
    # Not listed: "softmax in bf16 instead of float32". PyTorch's softmax already accumulates
    # bf16 input in float32 and rounds once, so that change gives identical bits (checked
    # here on CPU): an equivalent mutation, which no test can or should catch.
}

# Llama 4's section, each change broken: (name, description, old, new), tests/test_llama4.py.
LLAMA4_MUTATIONS = [
    (
        "llama4-rope-everywhere",
        "Llama 4's NoPE layers rotated too",
        "return interval is None or (layer + 1) % interval != 0",
        "return True",
    ),
    (
        "llama4-no-l2-norm",
        "Llama 4's norm on queries and keys skipped",
        "q, k = rms_norm(q, 1.0), rms_norm(k, 1.0)",
        "q, k = q, k",
    ),
    (
        "llama4-no-chunks",
        "Llama 4's RoPE layers attend across chunks",
        "heads = attend_in_chunks(q, k, v, padding) if chunked else",
        "heads = attend(q, k, v, padding) if chunked else",
    ),
    (
        "llama4-no-temperature",
        "Llama 4's NoPE layers without the temperature",
        "q = (q * attention_temperature(query_positions)[:, None]).to(q.dtype)",
        "q = q",
    ),
    (
        "llama4-no-shared-expert",
        "Llama 4's shared expert left out",
        "return swiglu(x, *shared) + routed",
        "return routed",
    ),
    (
        "llama4-softmax-router",
        "Llama 4's router scores through a softmax over the chosen instead of a sigmoid",
        "torch.sigmoid(top.values.float())",
        "torch.softmax(top.values.float(), dim=-1)",
    ),
    (
        "llama4-unscaled-rope",
        "Llama 4's scaled RoPE (Scout's) left unscaled",
        'rope_frequencies = scale_rope_frequencies(rope_frequencies, band["factor"])',
        "rope_frequencies = rope_frequencies",
    ),
]
OTHER_MUTATIONS |= {
    name: (description, [(old, new)], ["tests/test_llama4.py"])
    for name, description, old, new in LLAMA4_MUTATIONS
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def notebook_bugs() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """The silent-bugs section's `silent_bugs = {bug: {function: (right, wrong)}}`, as it is."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code" or "silent_bugs = {" not in cell.source:
            continue
        for node in ast.parse(cell.source).body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if targets == ["silent_bugs"]:
                bugs = ast.literal_eval(node.value)
                return {
                    slug(bug): (f"the notebook's silent bug: {bug}", list(lines.values()))
                    for bug, lines in bugs.items()
                }
    raise SystemExit("no `silent_bugs = {...}` cell in the notebook: see its section on bugs")


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
    mutations = {**notebook_bugs(), **OTHER_MUTATIONS}
    names = sys.argv[1:] or list(mutations)
    unknown = [name for name in names if name not in mutations]
    if unknown:
        raise SystemExit(f"no mutation {unknown[0]!r}: choose from {', '.join(mutations)}")
    survivors = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            description, replacements, *named = mutations[name]
            tests = named[0] if named else ["tests/test_parity.py"]
            folder = Path(scratch) / name
            folder.mkdir()
            env = {**os.environ, "NOTEBOOK_UNDER_TEST": str(mutated_copy(replacements, folder))}
            started = time.time()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    *tests,
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
