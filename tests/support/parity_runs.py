"""The notebook runs and reference models that the parity tests compare, made once per session.

tests/conftest.py turns these into the session fixtures `checkpoints` and `runs`, shared by
tests/test_parity.py and tests/test_generation.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from plumbing import REPO_DIR, checkpoint_files
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds import presets
from testbeds.random_checkpoint import write_checkpoint
from tests.support import reference_models
from tests.support.notebook_values import (
    SHARED_RUN_READERS,
    in_dtype,
    other_prompts,
    run_and_read,
)

# Random checkpoints in Meta's layout covering the axes that matter (testbeds/presets.py's
# PARITY). Every one has the real 128,256-row embedding and output matrices, so its width sets
# its cost: the widths are as small as each shape allows.
RANDOM_CHECKPOINTS = presets.PARITY
# This one has no output.weight: its output matrix is the embedding table, as in Llama 3.2
# 1B and 3B. Its run is the one random checkpoint with the demos (more prompts, generation,
# the logit lens, learning), which must then train one matrix that is both embedding and
# output; the embedded checkpoint runs them with a separate output matrix. Elsewhere they
# would meet nothing new and cost 20-30 s a shape.
TIED = "q_per_kv_8-hd8-2layers"
WITH_DEMOS = {TIED}
# This one also generates in its kernel, for tests/test_generation.py, and measures LoRA with
# grouped queries and an untied output matrix for tests/test_lora.py (TIED: with a tied one).
GENERATING = "q_per_kv_3-hd32-3layers"
# This one, the narrowest, also runs the learning section's `perplexity` in its kernel, for
# tests/test_perplexity.py.
SCORING = "q_per_kv_1-hd64-1layer"

CORPUS = (REPO_DIR / "generators" / "corpus.txt").read_text().splitlines()
PROMPTS = {
    "1-token": "",  # only <|begin_of_text|>
    "canonical-17": DEFAULT_PROMPT,
    "long": ". ".join(CORPUS[1:40]) + ". ",  # 200+ tokens
}
# What the embedded checkpoint's shared kernel (tests/conftest.py) also runs through `forward`.
THROUGH_FORWARD = [
    (other_prompts, {"1-token": PROMPTS["1-token"], "long": PROMPTS["long"]}),
    (in_dtype, "bfloat16", {"canonical-17": PROMPTS["canonical-17"]}),
]


def make_checkpoints(root: Path) -> dict[str, Path]:
    """The embedded checkpoint and the random ones, written under `root`."""
    made = {"embedded": checkpoint_files.EMBEDDED_CHECKPOINT}
    for seed, (name, params) in enumerate(RANDOM_CHECKPOINTS.items()):
        tied = name == TIED
        made[name] = write_checkpoint(root / name, dict(params), seed=seed, tied_output=tied)
    return made


class Runs:
    """Each notebook configuration and each reference model, made once per session.

    A kernel is the costly part, so one serves several prompts and both dtypes: a checkpoint
    runs the whole notebook on the canonical prompt in float32, and in the same kernel its
    own `forward` on the other prompts and in bfloat16 (tests/support/notebook_values.py:
    other_prompts, in_dtype), and what the test files ask of that checkpoint's kernel
    (`notebook_values.read_in_shared_run`). The embedded checkpoint's kernel is the one most
    tests share (`SharedRuns.embedded_run`). The whole lesson meets a 1-token prompt in the
    empty prompt's run (tests/test_any_prompt.py), in bfloat16.
    """

    def __init__(self, checkpoints, workdir, shared):
        self.checkpoints, self.workdir, self.shared = checkpoints, workdir, shared
        self.notebook_runs, self.models = {}, {}
        self.lock = threading.Lock()

    def start(self) -> None:
        """Every run the parity tests read, started in the shared pool (tests/conftest.py)."""
        self.shared.embedded_run()
        for checkpoint in RANDOM_CHECKPOINTS:
            self.kernel(checkpoint)

    def kernel(self, checkpoint: str):
        """The shared execution of `checkpoint`, which answers each of its prompts and dtypes:
        a Future."""
        if checkpoint == "embedded":
            return self.shared.embedded_run()
        key = (checkpoint, "canonical-17", "float32")  # the others: read through `forward`
        return self.shared.start("parity " + "-".join(key), self._execute, key)

    def _execute(self, key) -> dict:
        checkpoint = key[0]
        folder = self.workdir / "-".join(key)
        folder.mkdir(parents=True)
        env = {"LLAMA3_CKPT": str(self.checkpoints[checkpoint]), "LLAMA3_DEVICE": "cpu"}
        env |= {"OMP_NUM_THREADS": "1"}
        # the canonical prompt with the demos; the rest through `forward`, one kernel
        others = {name: text for name, text in PROMPTS.items() if name != "canonical-17"}
        canonical = {"canonical-17": PROMPTS["canonical-17"]}
        also = [(other_prompts, others), (in_dtype, "bfloat16", canonical)]
        also += SHARED_RUN_READERS.get(checkpoint, [])
        demos = "1" if checkpoint in WITH_DEMOS else "0"
        env |= {"LLAMA3_PROMPT": PROMPTS["canonical-17"], "LLAMA3_DTYPE": "float32"}
        return run_and_read(folder, {**env, "LLAMA3_EXTRAS": demos}, also=also)

    def read_through_forward(self, checkpoint: str, run: dict) -> None:
        """The prompts and dtypes a kernel ran through the notebook's `forward`, by key."""
        for file, dtype in (("other_prompts", "float32"), ("in_dtype", "bfloat16")):
            if file in run["files"]:
                for name, values in torch.load(run["files"][file], weights_only=True).items():
                    self.notebook_runs.setdefault((checkpoint, name, dtype), values)

    def notebook(self, checkpoint: str, prompt: str, dtype: str = "float32") -> dict:
        """The tensors of `checkpoint` on `prompt` in `dtype`: the kernel's own run of the whole
        notebook, or what the kernel read through its `forward`."""
        run = self.kernel(checkpoint).result()
        if (prompt, dtype) == ("canonical-17", "float32"):  # the run of the whole notebook
            return run
        with self.lock:
            self.read_through_forward(checkpoint, run)
            return self.notebook_runs[(checkpoint, prompt, dtype)]

    def model(self, kind: str, checkpoint: str, dtype: torch.dtype = torch.float32):
        """The reference model ("hf": transformers', "meta": Meta's) on this checkpoint."""
        key = (kind, checkpoint, dtype)
        if key not in self.models:
            folder = self.checkpoints[checkpoint]
            params = json.loads((folder / "params.json").read_text())
            build = reference_models.hf_model if kind == "hf" else reference_models.meta_model
            self.models[key] = build(folder, params, dtype)
        return self.models[key]

    def reference(
        self, kind: str, checkpoint: str, tokens: list[int], dtype: torch.dtype = torch.float32
    ) -> dict:
        run = reference_models.hf_tensors if kind == "hf" else reference_models.meta_tensors
        return run(self.model(kind, checkpoint, dtype), tokens)
